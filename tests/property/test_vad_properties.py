"""Properties of the VAD core: chunking invariance, sample accounting, input rejection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ser_stream.errors import InputError
from ser_stream.messages import Event, Noise, Window
from ser_stream.stages.vad import VADConfig, VADCore
from ser_stream.testing import noise, run_core, silence, tone, voiced

RATE = 16_000

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STREAM = np.concatenate(
    [
        silence(0.3),
        noise(0.8, seed=1),
        voiced(1.4, seed=2),
        noise(0.6, seed=3),
        voiced(3.6, seed=4),
        noise(2.6, seed=5),
        voiced(0.9, seed=6),
    ]
)
"""Speech, pauses, a sliding-window utterance, a silence event and speech cut by the end."""

CONFIG = VADConfig(silence_event_s=2.0)


def chunked(audio: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Cut ``audio`` into chunks cycling through ``sizes`` (zeros give empty chunks)."""
    chunks, i, k = [], 0, 0
    while i < audio.size:
        size = sizes[k % len(sizes)]
        chunks.append(audio[i : i + size].copy())
        i += size
        k += 1
    return chunks


def assert_same_outputs(got: list, want: list) -> None:
    assert [type(o) for o in got] == [type(o) for o in want]
    for a, b in zip(got, want, strict=True):
        if isinstance(a, Event):
            assert a == b
        else:
            assert (a.t_start, a.t_end) == (b.t_start, b.t_end)
            assert a.samples.dtype == b.samples.dtype
            np.testing.assert_array_equal(a.samples, b.samples)
        if isinstance(a, Window):
            assert (a.utterance, a.index, a.final) == (b.utterance, b.index, b.final)


REFERENCE = run_core(VADCore(CONFIG), [STREAM])

segment = st.tuples(
    st.sampled_from(["noise", "voiced", "silence", "tone"]),
    st.floats(0.02, 3.5),
    st.integers(0, 1000),
)


def build(segments: list[tuple[str, float, int]]) -> np.ndarray:
    parts = []
    for kind, seconds, seed in segments:
        if kind == "noise":
            parts.append(noise(seconds, seed=seed))
        elif kind == "voiced":
            parts.append(voiced(seconds, seed=seed, f0=100 + seed % 150))
        elif kind == "silence":
            parts.append(silence(seconds))
        else:
            parts.append(tone(seconds, 200 + seed, amplitude=0.05 + (seed % 10) / 20))
    return np.concatenate(parts)


def to_samples(t: float) -> int:
    return round(t * RATE)


class TestChunkingInvariance:
    def test_reference_stream_exercises_every_output_kind(self):
        """The fixed stream gives windows (sliding and final), noise and all three events."""
        names = {o.name for o in REFERENCE if isinstance(o, Event)}
        assert names == {"speech_start", "speech_end", "silence"}
        found = [o for o in REFERENCE if isinstance(o, Window)]
        assert len({w.utterance for w in found}) == 3 and len(found) > 3
        assert any(isinstance(o, Noise) for o in REFERENCE)

    @FAST
    @given(sizes=st.lists(st.integers(0, 20_000), min_size=1, max_size=8))
    def test_any_chunking_gives_identical_outputs(self, sizes):
        """Any chunk sizes (empty chunks included) give the outputs of one big push."""
        assume(any(sizes))
        got = run_core(VADCore(CONFIG), chunked(STREAM, sizes))
        assert_same_outputs(got, REFERENCE)

    @FAST
    @given(sizes=st.lists(st.integers(1, 1_000), min_size=1, max_size=5))
    def test_small_odd_chunks_give_identical_outputs(self, sizes):
        """Chunks shorter than a frame are buffered without changing any output."""
        got = run_core(VADCore(CONFIG), chunked(STREAM, sizes))
        assert_same_outputs(got, REFERENCE)


class TestSampleAccounting:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        segments=st.lists(segment, min_size=1, max_size=6),
        split=st.integers(1, 30_000),
    )
    def test_noise_and_utterances_partition_the_stream(self, segments, split):
        """After flush, Noise spans and utterance spans tile [0, n) without overlap or gap."""
        audio = build(segments)
        outputs = run_core(VADCore(CONFIG), chunked(audio, [split]))
        spans = [
            (to_samples(o.t_start), to_samples(o.t_end), o) for o in outputs if isinstance(o, Noise)
        ]
        starts = [
            to_samples(e.t) for e in outputs if isinstance(e, Event) and e.name == "speech_start"
        ]
        ends = [to_samples(e.t) for e in outputs if isinstance(e, Event) and e.name == "speech_end"]
        assert len(starts) == len(ends)
        spans += [(a, b, None) for a, b in zip(starts, ends, strict=True)]
        spans.sort(key=lambda span: span[0])
        position = 0
        for a, b, item in spans:
            assert a == position and b > a
            if item is not None:
                assert item.samples.size == b - a
                np.testing.assert_array_equal(item.samples, audio[a:b])
            position = b
        assert position == audio.size

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        segments=st.lists(segment, min_size=1, max_size=6),
        window_s=st.sampled_from([0.5, 1.0, 3.0]),
    )
    def test_windows_cover_every_sample_of_their_utterance(self, segments, window_s):
        """Each utterance is covered by its windows, which are slices of the input inside it."""
        audio = build(segments)
        config = VADConfig(window_s=window_s, hop_s=window_s / 2)
        outputs = run_core(VADCore(config), [audio])
        starts = [
            to_samples(e.t) for e in outputs if isinstance(e, Event) and e.name == "speech_start"
        ]
        ends = [to_samples(e.t) for e in outputs if isinstance(e, Event) and e.name == "speech_end"]
        found = [o for o in outputs if isinstance(o, Window)]
        assert [w.index for w in found] == list(range(len(found)))
        assert {w.utterance for w in found} == set(range(len(starts)))
        for u, (start, end) in enumerate(zip(starts, ends, strict=True)):
            covered = np.zeros(end - start, dtype=bool)
            for w in (w for w in found if w.utterance == u):
                a, b = to_samples(w.t_start), to_samples(w.t_end)
                assert start <= a < b and b - a == w.samples.size
                np.testing.assert_array_equal(w.samples, audio[a:b])
                covered[a - start : b - start] = True
            assert covered.all()

    @FAST
    @given(segments=st.lists(segment, min_size=1, max_size=6))
    def test_speech_events_alternate_in_time_order(self, segments):
        """Speech events alternate in time order; silence comes 2 s after the last voice."""
        outputs = run_core(VADCore(CONFIG), [build(segments)])
        found = [e for e in outputs if isinstance(e, Event)]
        speech = [e for e in found if e.name != "silence"]
        assert [e.name for e in speech] == ["speech_start", "speech_end"] * (len(speech) // 2)
        assert [e.t for e in speech] == sorted(e.t for e in speech)
        last_end = None
        for event in found:
            if event.name == "speech_end":
                last_end = event.t
            elif event.name == "silence":
                assert last_end is not None
                # Silence counts from the last voiced frame, at most tail_pad before the end.
                heard_until = event.t - CONFIG.silence_event_s
                assert last_end - CONFIG.tail_pad_ms / 1000 - 1e-6 <= heard_until <= last_end
                last_end = None


class TestInputRejection:
    @FAST
    @given(
        prefix=st.integers(0, STREAM.size - 2_000),
        length=st.integers(1, 2_000),
        at=st.integers(0, 1_999),
        bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    )
    def test_non_finite_chunk_raises_and_changes_nothing(self, prefix, length, at, bad):
        """A chunk with NaN or inf raises InputError and leaves the core's state untouched."""
        core = VADCore(CONFIG)
        outputs = core.push(STREAM[:prefix])
        chunk = STREAM[prefix : prefix + length].copy()
        chunk[at % length] = bad
        with pytest.raises(InputError):
            core.push(chunk)
        outputs += core.push(STREAM[prefix:])
        outputs += core.flush()
        assert_same_outputs(outputs, REFERENCE)
