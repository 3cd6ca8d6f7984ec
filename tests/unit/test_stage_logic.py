"""The stage logic chained in-process gives exactly the batch path's predictions."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.artifact import load_artifact
from ser_stream.messages import Audio, EndOfStream, ErrorMsg, Event, Prediction, Window
from ser_stream.predict import Predictor, with_vad_engine
from ser_stream.stage import StageContext
from ser_stream.stage_logic import StageLogic, run_stage
from ser_stream.stages import STAGES
from ser_stream.testing import noise, voiced
from ser_stream.wire import Envelope, Kind

FRAME = 480


@pytest.fixture(scope="module")
def artifact():
    # The engine the stages are told (SYNTHETIC_SPEECH): voiced() buzz is speech to WebRTC
    # only, and predict must cut the same audio the same way to be compared with them.
    return with_vad_engine(load_artifact(), "webrtc")


def audio_envelopes(stream: str, audio: np.ndarray) -> list[Envelope]:
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    envelopes = [
        Envelope(stream, i, Audio(pcm[s : s + FRAME], 16_000, s / 16_000), {"capture": i})
        for i, s in enumerate(range(0, pcm.size, FRAME))
    ]
    return [*envelopes, Envelope(stream, len(envelopes), EndOfStream("eof"))]


SYNTHETIC_SPEECH = {"engine": "webrtc"}
"""VAD settings for ``voiced()`` speech, a buzz WebRTC takes for speech and Silero does not."""


def run_chain(artifact, envelopes, *, vad_options=None) -> list[Envelope]:
    for name in ("vad", "denoise", "features", "model"):
        options = {**SYNTHETIC_SPEECH, **(vad_options or {})} if name == "vad" else {}
        envelopes = run_stage(STAGES[name], StageContext(name, options, artifact), envelopes)
    return envelopes


def utterances() -> np.ndarray:
    return np.concatenate(
        [
            noise(0.6),
            voiced(2.0, seed=1),
            noise(0.8, seed=2),
            voiced(5.0, f0=220, seed=3),
            noise(0.8, seed=4),
        ]
    )


class TestChain:
    def test_stages_give_the_batch_path_predictions_window_for_window(self, artifact):
        """vad -> denoise -> features -> model per 30 ms frame equals predict on the whole audio.

        Live early windows are off here: ``predict`` judges whole files and has none.
        """
        audio = utterances()
        options = {"stop_on_silence_s": None, "first_window_s": None}
        outputs = run_chain(artifact, audio_envelopes("a", audio), vad_options=options)
        predictions = [e.body for e in outputs if isinstance(e.body, Prediction)]
        quantized = (
            np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768
        )
        expected = Predictor(artifact).predict_samples(quantized).windows
        assert len(predictions) == len(expected) >= 3
        for got, want in zip(predictions, expected, strict=True):
            assert got.label == want["label"]
            assert (round(got.t_start, 3), round(got.t_end, 3)) == (want["t_start"], want["t_end"])
            assert np.allclose(got.probabilities, list(want["probabilities"].values()), atol=1e-5)
        assert isinstance(outputs[-1].body, EndOfStream)

    def test_live_windows_start_short_and_grow(self, artifact):
        """By default a live utterance is first judged on 0.8 s, then 1.6 s, then full windows."""
        audio = utterances()
        outputs = run_chain(
            artifact, audio_envelopes("a", audio), vad_options={"stop_on_silence_s": None}
        )
        predictions = [e.body for e in outputs if isinstance(e.body, Prediction)]
        lengths = [round(p.t_end - p.t_start, 2) for p in predictions]
        # Utterance 1 lasts 2 s (0.8 s, 1.6 s, then its 2 s tail); utterance 2 lasts 5 s.
        assert lengths[:3] == [0.8, 1.6, pytest.approx(2.0, abs=0.2)]
        second = [p for p in predictions if p.t_start > 2.5]
        assert [round(p.t_end - p.t_start, 2) for p in second[:3]] == [0.8, 1.6, 3.0]
        batch = Predictor(artifact).predict_samples(audio).windows
        live_full = {(round(p.t_start, 2), round(p.t_end, 2)) for p in predictions}
        assert {(round(w["t_start"], 2), round(w["t_end"], 2)) for w in batch} <= live_full

    def test_streams_are_kept_apart(self, artifact):
        """Two interleaved streams give each the predictions it gives alone."""
        a = audio_envelopes("a", utterances())
        b = audio_envelopes(
            "b", np.concatenate([noise(0.5, seed=9), voiced(3.5, f0=180, seed=8), noise(0.6)])
        )
        interleaved = (
            [e for pair in zip(a, b[: len(a)], strict=False) for e in pair]
            + a[len(b) :]
            + b[len(a) :]
        )
        options = {"stop_on_silence_s": None}
        mixed = run_chain(artifact, interleaved, vad_options=options)
        for stream, alone in (("a", a), ("b", b)):
            solo = [
                e.body
                for e in run_chain(artifact, alone, vad_options=options)
                if isinstance(e.body, Prediction)
            ]
            got = [e.body for e in mixed if e.stream == stream and isinstance(e.body, Prediction)]
            assert [p.label for p in got] == [p.label for p in solo]
            assert all(
                np.array_equal(g.probabilities, s.probabilities)
                for g, s in zip(got, solo, strict=True)
            )


class TestStopOnSilence:
    def test_silence_after_speech_ends_the_stream_and_nothing_after_is_predicted(self, artifact):
        """Speech, 2.5 s of silence, more speech: the stream ends in the silence."""
        audio = np.concatenate(
            [noise(0.5), voiced(2.0, seed=1), noise(2.5, seed=2), voiced(2.0, seed=3), noise(0.5)]
        )
        outputs = run_chain(
            artifact, audio_envelopes("s", audio), vad_options={"stop_on_silence_s": 2.0}
        )
        ends = [e for e in outputs if isinstance(e.body, EndOfStream)]
        assert [e.body.reason for e in ends] == ["silence"]
        predictions = [e.body for e in outputs if isinstance(e.body, Prediction)]
        assert predictions and all(p.t_end <= 3.0 for p in predictions)
        silence = [
            e.body for e in outputs if isinstance(e.body, Event) and e.body.name == "silence"
        ]
        assert len(silence) == 1 and 4.0 < silence[0].t < 5.0

    def test_without_stop_everything_is_predicted(self, artifact):
        """--no-stop-on-silence: speech after the long silence is predicted too."""
        audio = np.concatenate(
            [noise(0.5), voiced(2.0, seed=1), noise(2.5, seed=2), voiced(2.0, seed=3), noise(0.5)]
        )
        outputs = run_chain(
            artifact, audio_envelopes("s", audio), vad_options={"stop_on_silence_s": None}
        )
        predictions = [e.body for e in outputs if isinstance(e.body, Prediction)]
        assert any(p.t_start > 4.5 for p in predictions)
        assert [e.body.reason for e in outputs if isinstance(e.body, EndOfStream)] == ["eof"]


class TestStageLogic:
    def test_bad_input_becomes_an_error_message_and_is_counted(self, artifact):
        """A core's InputError is reported downstream and counted; the stage goes on."""
        logic = StageLogic(STAGES["vad"], StageContext("vad", SYNTHETIC_SPEECH, artifact))
        bad = Envelope("s", 0, Audio(np.zeros(480, np.int16), 8_000, 0.0))
        [out] = logic.handle(bad)
        assert isinstance(out.body, ErrorMsg) and "8000 Hz" in out.body.reason
        assert logic.counters["dropped_input_error"] == 1
        assert logic.handle(Envelope("s", 1, Audio(np.zeros(480, np.int16), 16_000, 0.0))) == []

    def test_kinds_a_stage_does_not_handle_pass_through_in_order(self, artifact):
        """Events reach the next stage unchanged, with the stage's timestamp added."""
        logic = StageLogic(
            STAGES["features"], StageContext("features", {}, artifact), clock=lambda: 7
        )
        event = Envelope("s", 5, Event("speech_start", 1.0), {"vad": 3})
        [out] = logic.handle(event)
        assert out.body == event.body and out.timestamps == {"vad": 3, "features": 7}
        assert out.kind is Kind.EVENT

    def test_end_of_stream_flushes_and_later_messages_are_ignored(self, artifact):
        """After the end of a stream nothing more of it goes out; it is counted instead."""
        logic = StageLogic(STAGES["vad"], StageContext("vad", SYNTHETIC_SPEECH, artifact))
        pcm = np.round(voiced(1.0) * 32767).astype(np.int16)
        logic.handle(Envelope("s", 0, Audio(pcm, 16_000, 0.0)))
        flushed = logic.handle(Envelope("s", 1, EndOfStream("eof")))
        assert isinstance(flushed[-1].body, EndOfStream)
        assert any(isinstance(e.body, Window) for e in flushed)
        assert logic.handle(Envelope("s", 2, Audio(pcm, 16_000, 1.0))) == []
        assert logic.counters["ignored_after_end_audio"] == 1
        assert logic.open_streams == []


class TestBatching:
    def test_a_batch_of_windows_gives_what_one_by_one_gives(self, artifact):
        """handle_many on queued features equals handle on each, with the same accounting."""
        audio = utterances()
        features = run_chain_until(artifact, audio_envelopes("a", audio), "features")
        one = StageLogic(STAGES["model"], StageContext("model", {}, artifact), clock=lambda: 1)
        many = StageLogic(STAGES["model"], StageContext("model", {}, artifact), clock=lambda: 1)
        single = [out for e in features for out in one.handle(e)]
        batched = many.handle_many(features)
        assert [e.seq for e in batched] == [e.seq for e in single]
        for a, b in zip(batched, single, strict=True):
            assert type(a.body) is type(b.body)
            if isinstance(a.body, Prediction):
                assert np.allclose(a.body.probabilities, b.body.probabilities, atol=1e-6)
        assert one.counters == many.counters


def run_chain_until(artifact, envelopes, last: str) -> list[Envelope]:
    for name in ("vad", "denoise", "features"):
        envelopes = run_stage(
            STAGES[name],
            StageContext(
                name,
                {**SYNTHETIC_SPEECH, "stop_on_silence_s": None} if name == "vad" else {},
                artifact,
            ),
            envelopes,
        )
        if name == last:
            break
    return envelopes
