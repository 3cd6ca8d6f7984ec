"""The VAD in a live room: noise floor gate, early windows, timeouts, and both engines."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.audio import load_audio
from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream, Event, Window
from ser_stream.stages.vad import VADConfig, VADCore, vad_stream
from ser_stream.stages.voicing import NoiseFloor, SileroVoicing, frame_db
from ser_stream.testing import room_tone, run_core, silence, voiced
from tests.fixtures import spoken

RATE = 16_000


def events(outputs: list, name: str) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and o.name == name]


def windows(outputs: list) -> list[Window]:
    return [o for o in outputs if isinstance(o, Window)]


@pytest.fixture(scope="module")
def sentence(tmp_path_factory) -> np.ndarray:
    """Real synthesized speech, about 2 s, starting and ending in digital silence."""
    path = spoken(tmp_path_factory.mktemp("speech") / "s.wav", "I really did not expect that.")
    if path is None:
        pytest.skip("espeak-ng is not installed (make test installs it)")
    return load_audio(str(path))


def speech_source(engine: str, sentence: np.ndarray):
    """Speech each engine takes for speech: synthetic voice for WebRTC, a real voice for
    Silero (a neural VAD rightly refuses a buzz of harmonics)."""
    if engine == "webrtc":
        return lambda seconds, seed: voiced(seconds, seed=seed)
    return lambda seconds, seed: sentence[: round(seconds * RATE)]


ENGINES = ["webrtc", "silero"]


class TestNoiseFloor:
    def test_constant_level_is_the_floor(self):
        floor = NoiseFloor(0.03, memory_s=1.0)
        for _ in range(50):
            level = floor.update(-50.0)
        assert level == pytest.approx(-50.0)

    def test_quieter_room_is_followed_at_once_louder_after_the_memory(self):
        floor = NoiseFloor(0.03, memory_s=1.0)
        for _ in range(50):
            floor.update(-40.0)
        for _ in range(3):
            floor.update(-60.0)
        assert floor.level_db == pytest.approx(-60.0)
        levels = [floor.update(-30.0) for _ in range(40)]
        assert levels[20] < -50.0  # within the memory, the quiet room still counts
        assert levels[-1] == pytest.approx(-30.0)  # after it, the louder room is the floor

    def test_one_glitch_does_not_pull_the_floor_down(self):
        floor = NoiseFloor(0.03, memory_s=1.0)
        for level in [-40.0] * 10 + [-120.0] + [-40.0] * 10:
            floor.update(level)
        assert floor.level_db > -70.0

    def test_frame_db_of_full_scale_square_and_zero(self):
        assert frame_db(np.ones(480, dtype=np.float32)) == pytest.approx(0.0)
        assert frame_db(np.zeros(480, dtype=np.float32)) == -120.0


@pytest.mark.parametrize("engine", ENGINES)
class TestSilenceInARealRoom:
    @pytest.mark.parametrize(
        ("dbfs", "kind"), [(-60, "hiss"), (-50, "hiss"), (-40, "hiss"), (-45, "hum"), (-45, "fan")]
    )
    def test_silence_fires_two_seconds_after_the_last_voice(self, engine, sentence, dbfs, kind):
        """Room noise after speech counts as silence: the event comes 2 s after the voice."""
        speak = speech_source(engine, sentence)
        speech = speak(2.0, 1)
        audio = np.concatenate(
            [room_tone(1.0, dbfs, kind=kind, seed=1), speech + room_tone(2.0, dbfs, kind=kind,
             seed=2)[: speech.size], room_tone(3.0, dbfs, kind=kind, seed=3)]
        )  # fmt: skip
        last_voice = 1.0 + last_loud_sample(speech) / RATE
        outputs = run_core(VADCore(VADConfig(engine=engine, silence_event_s=2.0)), [audio])
        silences = events(outputs, "silence")
        assert len(silences) == 1
        assert silences[0].t - (last_voice + 2.0) == pytest.approx(0.0, abs=0.12)

    def test_many_utterances_then_a_pause_end_the_stream(self, engine, sentence):
        """24 utterances 0.8 s apart, 3 s of -60 dBFS room, more speech: the stream ends
        2 s into the pause and nothing after it becomes a window."""
        speak = speech_source(engine, sentence)
        parts = [room_tone(0.5, -60, seed=0)]
        for i in range(24):
            parts += [speak(1.6, i), room_tone(0.8, -60, seed=100 + i)]
        pause_start = sum(p.size for p in parts[:-1]) / RATE  # the last 0.8 s joins the pause
        parts += [room_tone(2.2, -60, seed=7), speak(1.6, 99), room_tone(1.0, -60, seed=8)]
        audio = np.concatenate(parts)
        stream = vad_stream(VADConfig(engine=engine, silence_event_s=2.0), stop_on_silence=True)
        outputs = []
        for start in range(0, audio.size, 480):
            chunk = np.round(audio[start : start + 480] * 32767).astype(np.int16)
            outputs += stream.push(Audio(chunk, RATE, start / RATE))
            if outputs and isinstance(outputs[-1], EndOfStream):
                break
        assert isinstance(outputs[-1], EndOfStream) and outputs[-1].reason == "silence"
        silence_event = events(outputs, "silence")[0]
        assert silence_event.t == pytest.approx(pause_start + 2.0, abs=0.15)
        assert len(events(outputs, "speech_start")) == 24
        late = [(w.t_start, w.t_end) for w in windows(outputs) if w.t_end > pause_start + 0.2]
        assert late == [], pause_start


class TestEarlyWindows:
    def test_windows_double_from_the_first_second(self):
        """first_window_s=1: windows of 1 s, 2 s, then full windows sliding by the hop."""
        audio = np.concatenate([room_tone(1.0, -55), voiced(6.0, seed=3), room_tone(1.0, -55)])
        outputs = run_core(VADCore(VADConfig(first_window_s=1.0)), [audio])
        found = windows(outputs)
        lengths = [round(w.t_end - w.t_start, 2) for w in found]
        assert lengths[:5] == [1.0, 2.0, 3.0, 3.0, 3.0]
        assert len({round(w.t_start, 2) for w in found[:3]}) == 1  # all start at the utterance
        onset = events(outputs, "speech_start")[0].t
        assert found[0].t_end - onset <= 1.0 + 1e-9
        end = events(outputs, "speech_end")[0].t
        assert found[-1].final and found[-1].t_end == pytest.approx(end)
        assert all(w.samples.size <= 3 * RATE and w.t_end <= end + 1e-9 for w in found)

    def test_a_short_utterance_gets_its_early_window_and_its_tail(self):
        audio = np.concatenate([room_tone(1.0, -55), voiced(1.5, seed=4), room_tone(1.0, -55)])
        found = windows(run_core(VADCore(VADConfig(first_window_s=1.0)), [audio]))
        assert [w.final for w in found] == [False, True]
        assert found[0].t_end - found[0].t_start == pytest.approx(1.0)
        assert found[1].t_start == found[0].t_start and found[1].t_end > found[0].t_end

    def test_windows_double_until_the_full_length(self):
        audio = np.concatenate([room_tone(1.0, -55), voiced(5.0, seed=3), room_tone(1.0, -55)])
        found = windows(run_core(VADCore(VADConfig(first_window_s=0.7)), [audio]))
        lengths = [round(w.t_end - w.t_start, 2) for w in found]
        assert lengths[:4] == [0.7, 1.4, 2.8, 3.0]

    def test_off_by_default_so_files_are_judged_as_trained(self):
        audio = np.concatenate([room_tone(1.0, -55), voiced(4.0, seed=3), room_tone(1.0, -55)])
        found = windows(run_core(VADCore(), [audio]))
        assert round(found[0].t_end - found[0].t_start, 2) == 3.0


class TestNoSpeechTimeout:
    def test_silence_before_speech_never_ends_a_session_by_default(self):
        stream = vad_stream(VADConfig(silence_event_s=2.0), stop_on_silence=True)
        pcm = np.round(room_tone(8.0, -50) * 32767).astype(np.int16)
        outputs = stream.push(Audio(pcm, RATE, 0.0))
        assert not [o for o in outputs if isinstance(o, (Event, EndOfStream))]

    def test_timeout_fires_once_and_ends_the_stream(self):
        config = VADConfig(silence_event_s=2.0, no_speech_timeout_s=3.0)
        stream = vad_stream(config, stop_on_silence=True)
        pcm = np.round(room_tone(8.0, -50) * 32767).astype(np.int16)
        outputs = stream.push(Audio(pcm, RATE, 0.0))
        found = events(outputs, "no_speech")
        assert [e.t for e in found] == [3.0]
        assert isinstance(outputs[-1], EndOfStream) and outputs[-1].reason == "no_speech"

    def test_speech_before_the_timeout_disarms_it(self):
        audio = np.concatenate([room_tone(1.0, -55), voiced(1.0), room_tone(6.0, -55)])
        config = VADConfig(silence_event_s=10.0, no_speech_timeout_s=3.0)
        assert events(run_core(VADCore(config), [audio]), "no_speech") == []


class TestEngines:
    def test_silero_takes_real_speech_and_not_the_room(self, sentence):
        voicing = SileroVoicing(RATE, 0.5)
        frames = voicing.frame_samples
        loud = [
            voicing.is_speech(sentence[i : i + frames])
            for i in range(0, sentence.size - frames, frames)
        ]
        assert np.mean(loud) > 0.5
        room = room_tone(2.0, -45, kind="fan")
        quiet = [voicing.is_speech(room[i : i + frames]) for i in range(0, room.size - frames,
                                                                          frames)]  # fmt: skip
        assert not any(quiet)

    def test_unknown_engine_and_bad_threshold_are_input_errors(self):
        with pytest.raises(InputError, match="engine"):
            VADConfig(engine="nope")
        with pytest.raises(InputError, match="threshold"):
            SileroVoicing(RATE, 1.5)
        with pytest.raises(InputError, match="16 kHz"):
            VADCore(VADConfig(engine="silero"), 8_000)

    @pytest.mark.parametrize(
        "changes",
        [
            {"energy_margin_db": -1.0},
            {"floor_memory_s": 0.0},
            {"first_window_s": 0.0},
            {"no_speech_timeout_s": -1.0},
        ],
    )
    def test_invalid_live_settings_are_input_errors(self, changes):
        with pytest.raises(InputError):
            VADConfig(**changes)

    def test_digital_silence_keeps_the_engine_in_charge(self):
        """With no noise at all the gate is open: speech is found as before the gate."""
        audio = np.concatenate([silence(1.0), voiced(1.5), silence(1.0)])
        assert len(events(run_core(VADCore(), [audio]), "speech_start")) == 1

    @pytest.mark.parametrize("engine", ENGINES)
    def test_a_stream_is_heard_alike_frame_by_frame_in_hops_or_whole(self, engine, sentence):
        """The frames of one push are decided in one engine call: the chunking changes nothing."""
        talk = speech_source(engine, sentence)
        audio = np.concatenate(
            [room_tone(1.0, -50, seed=4), talk(2.0, 5), room_tone(1.5, -50, seed=6)]
        )
        config = VADConfig(engine=engine, first_window_s=0.8)

        def heard(size: int) -> list:
            chunks = [audio[i : i + size] for i in range(0, audio.size, size)]
            outputs = run_core(VADCore(config), chunks)
            return [(type(o).__name__, o.t_start if hasattr(o, "t_start") else o.t)
                    for o in outputs]  # fmt: skip

        one_frame = heard(480)
        assert [name for name, _ in one_frame].count("Window") >= 2
        assert heard(480 * 4) == one_frame  # a capture hop of 120 ms
        assert heard(audio.size) == one_frame


def last_loud_sample(speech: np.ndarray) -> int:
    """Index after the last sample of ``speech`` within 40 dB of its peak (10 ms frames)."""
    frame = 160
    levels = [frame_db(speech[i : i + frame]) for i in range(0, speech.size, frame)]
    peak = max(levels)
    last = max(i for i, level in enumerate(levels) if level > peak - 40)
    return min(speech.size, (last + 1) * frame)
