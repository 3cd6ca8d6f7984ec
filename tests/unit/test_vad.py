"""Unit tests of the VAD core: config validation, utterances, sliding windows, events."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.messages import Event, Noise, Window
from ser_stream.stages.vad import VADConfig, VADCore, sliding_spans
from ser_stream.testing import noise, run_core, silence, tone, voiced

RATE = 16_000


def windows(outputs: list) -> list[Window]:
    return [o for o in outputs if isinstance(o, Window)]


def events(outputs: list, name: str | None = None) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and (name is None or o.name == name)]


def speech_between_noise(*parts: tuple[str, float]) -> np.ndarray:
    """Concatenate ``("noise"|"voiced", seconds)`` parts with distinct seeds."""
    make = {"noise": noise, "voiced": voiced}
    return np.concatenate(
        [make[kind](seconds, seed=10 * i + 1) for i, (kind, seconds) in enumerate(parts)]
    )


TWO_UTTERANCES = speech_between_noise(
    ("noise", 1.0), ("voiced", 1.5), ("noise", 1.0), ("voiced", 1.2), ("noise", 1.0)
)
SPEECH_SPANS = [(1.0, 2.5), (3.5, 4.7)]


class TestVADConfig:
    def test_defaults_are_valid(self):
        """The default config constructs."""
        assert VADConfig().frame_ms == 30

    @pytest.mark.parametrize(
        "changes",
        [
            {"aggressiveness": -1},
            {"aggressiveness": 4},
            {"frame_ms": 25},
            {"frame_ms": 0},
            {"trigger_ratio": 0.0},
            {"trigger_ratio": 1.5},
            {"trigger_ratio": float("nan")},
            {"window_s": 0.0},
            {"window_s": -3.0},
            {"hop_s": 0.0},
            {"trigger_ms": 20},
            {"hangover_ms": 10, "frame_ms": 20},
        ],
    )
    def test_bad_values_raise_input_error(self, changes):
        """Out-of-range settings are rejected at construction."""
        with pytest.raises(InputError):
            VADConfig(**changes)

    @pytest.mark.parametrize(
        "changes",
        [{"aggressiveness": 0}, {"aggressiveness": 3}, {"frame_ms": 10}, {"trigger_ratio": 1.0}],
    )
    def test_boundary_values_are_accepted(self, changes):
        """The ends of each allowed range are valid."""
        assert dataclasses.replace(VADConfig(), **changes)

    def test_config_is_frozen(self):
        """A config cannot be changed after construction."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            VADConfig().window_s = 1.0  # type: ignore[misc]


class TestSlidingSpans:
    def test_empty_audio_has_no_spans(self):
        """Zero samples give no span."""
        assert sliding_spans(0, 48_000, 24_000) == []

    def test_short_audio_is_one_span(self):
        """Audio up to one window long is a single span of its own length."""
        assert sliding_spans(100, 48_000, 24_000) == [(0, 100)]
        assert sliding_spans(48_000, 48_000, 24_000) == [(0, 48_000)]

    def test_exact_fit_needs_no_extra_span(self):
        """When the hops land on the end, no final span is added."""
        assert sliding_spans(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]

    def test_final_span_ends_at_the_end(self):
        """An uncovered tail gets one last window ending at n_samples."""
        assert sliding_spans(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (7, 11)]

    @pytest.mark.parametrize("n", [1, 47_999, 48_001, 64_000, 112_000, 160_123])
    def test_spans_cover_everything_with_full_windows(self, n):
        """Every sample is covered; every span is a full window unless the audio is shorter."""
        window, hop = 48_000, 24_000
        spans = sliding_spans(n, window, hop)
        covered = np.zeros(n, dtype=bool)
        for a, b in spans:
            covered[a:b] = True
            assert b - a == min(window, n)
        assert covered.all()
        assert spans[-1][1] == n


class TestVADCoreConstruction:
    @pytest.mark.parametrize("rate", [8_000, 16_000, 32_000, 48_000])
    def test_webrtc_rates_are_accepted(self, rate):
        """WebRTC VAD rates construct a core."""
        assert VADCore(sample_rate=rate).sample_rate == rate

    @pytest.mark.parametrize("rate", [0, 11_025, 22_050, 44_100])
    def test_other_rates_raise_input_error(self, rate):
        """Other rates are refused with advice to resample."""
        with pytest.raises(InputError, match="resample"):
            VADCore(sample_rate=rate)


class TestVADCoreUtterances:
    def test_speech_gives_start_window_end_in_order(self):
        """Each utterance yields speech_start, its windows, then speech_end."""
        outputs = run_core(VADCore(), [TWO_UTTERANCES])
        kinds = [
            o.name if isinstance(o, Event) else type(o).__name__
            for o in outputs
            if not isinstance(o, Noise)
        ]
        assert kinds == [
            "speech_start", "Window", "speech_end",
            "speech_start", "Window", "speech_end",
        ]  # fmt: skip

    def test_windows_lie_within_the_speech(self):
        """Windows start no earlier than the trigger pre-roll and end within the hangover."""
        config = VADConfig()
        pre = config.trigger_ms / 1000
        post = (config.hangover_ms + config.tail_pad_ms) / 1000
        found = windows(run_core(VADCore(config), [TWO_UTTERANCES]))
        assert len(found) == 2
        for window, (start, end) in zip(found, SPEECH_SPANS, strict=True):
            assert start - pre <= window.t_start <= start + 0.1
            assert end - 0.1 <= window.t_end <= end + post

    def test_events_bracket_the_windows(self):
        """speech_start is at the first window's start; speech_end at the last one's end."""
        outputs = run_core(VADCore(), [TWO_UTTERANCES])
        starts, ends = events(outputs, "speech_start"), events(outputs, "speech_end")
        for u, window in enumerate(windows(outputs)):
            assert window.utterance == u and window.index == u and window.final
            assert (starts[u].t, ends[u].t) == (window.t_start, window.t_end)

    def test_window_samples_are_the_input_audio(self):
        """A window's samples are the input between its t_start and t_end."""
        for window in windows(run_core(VADCore(), [TWO_UTTERANCES])):
            a, b = round(window.t_start * RATE), round(window.t_end * RATE)
            np.testing.assert_array_equal(window.samples, TWO_UTTERANCES[a:b])

    def test_long_speech_slides_full_windows_with_hop(self):
        """7 s of speech gives full-length windows every hop_s plus a final window."""
        config = VADConfig()
        audio = speech_between_noise(("noise", 1.0), ("voiced", 7.0), ("noise", 1.0))
        outputs = run_core(VADCore(config), [audio])
        found = windows(outputs)
        assert len(found) == 4
        assert all(w.samples.size == round(config.window_s * RATE) for w in found)
        assert all(w.t_end - w.t_start == pytest.approx(config.window_s) for w in found)
        sliding = found[:-1]
        for a, b in zip(sliding, sliding[1:], strict=False):
            assert b.t_start - a.t_start == pytest.approx(config.hop_s)
        assert [w.final for w in found] == [False, False, False, True]
        assert [w.index for w in found] == [0, 1, 2, 3]
        assert found[-1].t_end == events(outputs, "speech_end")[0].t
        assert found[-1].t_end > found[-2].t_end

    def test_short_window_config_slides_over_short_speech(self):
        """window_s and hop_s set the sliding windows' length and step."""
        config = VADConfig(window_s=0.5, hop_s=0.25)
        found = windows(run_core(VADCore(config), [TWO_UTTERANCES]))
        assert all(w.samples.size == 8_000 for w in found)
        assert {w.utterance for w in found} == {0, 1}
        assert [w.index for w in found] == list(range(len(found)))
        for a, b in zip(found, found[1:], strict=False):
            if a.utterance == b.utterance and not b.final:
                assert b.t_start - a.t_start == pytest.approx(0.25)

    @pytest.mark.parametrize(
        "audio",
        [silence(4.0), noise(4.0), tone(4.0, amplitude=0.003)],
        ids=["digital-silence", "room-noise", "faint-tone"],
    )
    def test_no_speech_gives_only_noise(self, audio):
        """Audio without speech gives no windows or events, only Noise covering it all."""
        outputs = run_core(VADCore(), [audio])
        assert all(isinstance(o, Noise) for o in outputs)
        assert sum(o.samples.size for o in outputs) == audio.size
        np.testing.assert_array_equal(np.concatenate([o.samples for o in outputs]), audio)

    def test_noise_comes_in_chunks_of_noise_chunk_s(self):
        """Non-speech audio is handed downstream in chunks of about noise_chunk_s."""
        config = VADConfig(noise_chunk_s=0.5)
        outputs = run_core(VADCore(config), [noise(4.0)])
        sizes = [o.samples.size for o in outputs]
        assert all(8_000 <= size < 8_000 + 480 for size in sizes[:-1])
        assert [o.t_start for o in outputs[1:]] == [o.t_end for o in outputs[:-1]]

    def test_blip_shorter_than_min_speech_is_noise(self):
        """A voiced blip shorter than min_speech_ms never becomes an utterance."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 0.05), ("noise", 1.0))
        outputs = run_core(VADCore(), [audio])
        assert all(isinstance(o, Noise) for o in outputs)
        assert sum(o.samples.size for o in outputs) == audio.size

    def test_flush_closes_open_utterance(self):
        """Speech running until the end of the stream is closed by flush."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 1.5))
        core = VADCore()
        pushed = core.push(audio)
        assert events(pushed, "speech_start") and not events(pushed, "speech_end")
        flushed = core.flush()
        assert len(events(flushed, "speech_end")) == 1
        assert windows(flushed)[-1].final

    @pytest.mark.parametrize(
        ("audio", "config"),
        [
            (speech_between_noise(("noise", 1.0), ("voiced", 2.65), ("noise", 2.0)), VADConfig()),
            (TWO_UTTERANCES, VADConfig(window_s=0.5, hop_s=0.25)),
        ],
        ids=["default-config-2.65s-speech", "short-windows"],
    )
    def test_every_utterance_has_a_final_window(self, audio, config):
        """The last window of every utterance is marked final."""
        found = windows(run_core(VADCore(config), [audio]))
        last = {w.utterance: w for w in found}
        assert last and all(w.final for w in last.values())

    def test_no_window_is_longer_than_window_s(self):
        """Windows never exceed window_s, even when flush closes the utterance."""
        audio = np.concatenate([noise(1.0, seed=0), voiced(0.9375, seed=0, f0=100)])
        config = VADConfig(window_s=1.0, hop_s=0.5)
        found = windows(run_core(VADCore(config), [audio]))
        assert found and all(w.samples.size <= 16_000 for w in found)

    def test_windows_end_by_speech_end(self):
        """No window extends past the speech_end of its utterance."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 2.65), ("noise", 2.0))
        outputs = run_core(VADCore(), [audio])
        end = events(outputs, "speech_end")[0].t
        assert all(w.t_end <= end for w in windows(outputs))


class TestVADCoreSilenceEvent:
    def test_silence_event_once_after_speech(self):
        """After speech, one silence event fires silence_event_s after the last voiced frame."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 1.5), ("noise", 6.0))
        outputs = run_core(VADCore(VADConfig(silence_event_s=2.0)), [audio])
        silences = events(outputs, "silence")
        assert len(silences) == 1
        assert 2.5 + 2.0 <= silences[0].t <= 2.5 + 2.0 + 0.03  # within the 30 ms frame
        assert silences[0].data == {"duration_s": 2.0}

    def test_no_silence_event_when_disabled(self):
        """silence_event_s=None never fires a silence event."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 1.5), ("noise", 6.0))
        outputs = run_core(VADCore(VADConfig(silence_event_s=None)), [audio])
        assert events(outputs, "silence") == []
        assert len(events(outputs, "speech_end")) == 1

    def test_no_silence_event_for_a_short_pause(self):
        """A pause shorter than silence_event_s fires no silence event."""
        audio = speech_between_noise(("noise", 1.0), ("voiced", 1.5), ("noise", 1.0))
        assert events(run_core(VADCore(VADConfig(silence_event_s=2.0)), [audio]), "silence") == []

    def test_no_silence_event_before_any_speech(self):
        """Silence only counts after speech: pure noise fires nothing."""
        assert events(run_core(VADCore(), [noise(6.0)])) == []

    def test_silence_event_rearms_after_new_speech(self):
        """Each utterance followed by a long pause gets its own silence event."""
        audio = speech_between_noise(
            ("noise", 0.5), ("voiced", 1.0), ("noise", 3.0), ("voiced", 1.0), ("noise", 3.0)
        )
        outputs = run_core(VADCore(VADConfig(silence_event_s=2.0)), [audio])
        voiced_ends = [1.5 + 2.0, 5.5 + 2.0]
        assert [e.t for e in events(outputs, "silence")] == pytest.approx(voiced_ends, abs=0.03)


class TestVADCoreReset:
    def test_reset_makes_the_core_like_new(self):
        """After reset the core gives what a fresh core gives for the same stream."""
        fresh = run_core(VADCore(), [TWO_UTTERANCES])
        core = VADCore()
        core.push(TWO_UTTERANCES[: len(TWO_UTTERANCES) // 2 + 123])
        core.reset()
        again = run_core(core, [TWO_UTTERANCES])
        assert [type(o) for o in again] == [type(o) for o in fresh]
        for a, b in zip(again, fresh, strict=True):
            if isinstance(a, Event):
                assert a == b
            else:
                assert (a.t_start, a.t_end) == (b.t_start, b.t_end)
                np.testing.assert_array_equal(a.samples, b.samples)


class TestVADCoreInput:
    def test_nan_chunk_raises_input_error(self):
        """A chunk holding NaN is rejected."""
        chunk = noise(0.1)
        chunk[5] = np.nan
        with pytest.raises(InputError, match="NaN"):
            VADCore().push(chunk)

    def test_empty_chunk_gives_nothing(self):
        """An empty chunk is accepted and completes nothing."""
        assert VADCore().push(np.zeros(0, dtype=np.float32)) == []

    def test_stereo_chunk_raises_input_error(self):
        """A (samples, channels) chunk is refused, not flattened."""
        with pytest.raises(InputError):
            VADCore().push(np.zeros((4_800, 2), dtype=np.float32))

    def test_reused_caller_buffer_does_not_change_outputs(self):
        """Overwriting a chunk after push does not alter what the core emits later."""
        audio = TWO_UTTERANCES
        expected = run_core(VADCore(), [audio])
        core, outputs = VADCore(), []
        buffer = np.empty(4_800, dtype=np.float32)
        for i in range(0, audio.size, buffer.size):
            n = min(buffer.size, audio.size - i)
            buffer[:n] = audio[i : i + n]
            outputs.extend(core.push(buffer[:n]))
        outputs.extend(core.flush())
        for got, want in zip(windows(outputs), windows(expected), strict=True):
            np.testing.assert_array_equal(got.samples, want.samples)


class TestVADCoreMemory:
    def test_endless_speech_keeps_a_bounded_buffer(self):
        """During long speech the core holds at most a window and a hop of utterance audio."""
        core = VADCore()
        speech = voiced(30.0, seed=4)
        windows_seen = 0
        for start in range(0, speech.size, 4_800):
            windows_seen += len(
                [o for o in core.push(speech[start : start + 4_800]) if isinstance(o, Window)]
            )
            held = sum(part.size for part in core._utterance.frames)
            assert held <= 16_000 * (3.0 + 1.5) + 4_800 + 480
        assert windows_seen >= 17

    def test_windows_of_long_speech_are_the_audio_at_their_times(self):
        """Each sliding window's samples are exactly the input between its start and end."""
        audio = np.concatenate([noise(1.0), voiced(12.0, seed=2), noise(1.0, seed=5)])
        for window in windows(run_core(VADCore(), [audio])):
            start = round(window.t_start * 16_000)
            np.testing.assert_array_equal(
                window.samples, audio[start : start + window.samples.size]
            )
