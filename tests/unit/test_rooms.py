"""Unit tests of the evaluation-only room noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ser_stream.testing import voiced
from ser_stream.train import rooms

RATE = 16_000


def rms_db(samples: np.ndarray) -> float:
    return 10 * np.log10(np.mean(samples.astype(np.float64) ** 2))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


SOURCES = [voiced(1.2, f0=110.0, seed=1), voiced(0.9, f0=200.0, seed=2), voiced(1.5, seed=3)]


class TestGenerators:
    @pytest.mark.parametrize("make", [rooms.fan_noise, rooms.mains_hum])
    def test_generators_are_unit_rms_float32_and_of_the_asked_length(self, make):
        """Each generator returns float32 of the asked length at RMS 1."""
        out = make(12_345, RATE, rng())
        assert out.dtype == np.float32 and out.shape == (12_345,)
        assert rms_db(out) == pytest.approx(0.0, abs=0.01)

    def test_fan_noise_is_broadband_and_swells(self):
        """The fan covers the spectrum from rumble to hiss, and its loudness moves slowly."""
        out = rooms.fan_noise(4 * RATE, RATE, rng(1)).astype(np.float64)
        power = np.abs(np.fft.rfft(out)) ** 2
        freqs = np.fft.rfftfreq(out.size, 1 / RATE)
        for low, high in ((50, 200), (500, 2_000), (4_000, 7_000)):
            share = power[(freqs >= low) & (freqs < high)].sum() / power.sum()
            assert share > 1e-4
        seconds = np.sqrt(np.mean(out.reshape(4, RATE) ** 2, axis=1))
        assert np.ptp(seconds) > 0.01

    @pytest.mark.parametrize("mains_hz", [50.0, 60.0])
    def test_mains_hum_sits_at_the_mains_frequency(self, mains_hz):
        """Most of the hum's power lies within 1 Hz of the mains frequency and its harmonics."""
        out = rooms.mains_hum(4 * RATE, RATE, rng(2), mains_hz=mains_hz).astype(np.float64)
        power = np.abs(np.fft.rfft(out)) ** 2
        freqs = np.fft.rfftfreq(out.size, 1 / RATE)
        near = np.zeros(freqs.size, dtype=bool)
        for k in range(1, 6):
            near |= np.abs(freqs - k * mains_hz) < 1.0
        assert power[near].sum() / power.sum() > 0.95

    def test_reversed_babble_is_unit_rms_and_plays_sources_backwards(self):
        """Babble comes out at RMS 1, and one talker from one source is that source reversed."""
        out = rooms.reversed_babble(SOURCES, 3 * RATE, rng(3))
        assert out.shape == (3 * RATE,) and rms_db(out) == pytest.approx(0.0, abs=0.01)
        single = rooms.reversed_babble(SOURCES[:1], 500, rng(4), talkers=1)
        backwards = SOURCES[0][::-1].astype(np.float64)
        # The talker enters at a random point of the reversed recording: find it.
        windows = np.lib.stride_tricks.sliding_window_view(backwards, 100)
        head = single[:100].astype(np.float64)
        cosine = windows @ head / (np.linalg.norm(windows, axis=1) * np.linalg.norm(head) + 1e-12)
        assert cosine.max() > 0.9999

    def test_babble_without_sources_is_silence(self):
        """No recordings, no talkers."""
        assert not np.any(rooms.reversed_babble([], 100, rng()))


class TestRoomNoise:
    @pytest.mark.parametrize("level_dbfs", [-60.0, -50.0, -40.0])
    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_room_noise_hits_the_asked_level(self, level_dbfs, seed):
        """Whatever the room draws, its RMS is the asked level within 0.5 dB."""
        out = rooms.room_noise(
            2 * RATE, RATE, rng(seed), level_dbfs=level_dbfs, babble_sources=SOURCES
        )
        assert out.dtype == np.float32 and out.shape == (2 * RATE,)
        assert rms_db(out) == pytest.approx(level_dbfs, abs=0.5)

    def test_room_noise_is_deterministic_per_generator_seed(self):
        """The same seed gives the same room; another seed another one."""
        first = rooms.room_noise(RATE, RATE, rng(5), level_dbfs=-45.0, babble_sources=SOURCES)
        again = rooms.room_noise(RATE, RATE, rng(5), level_dbfs=-45.0, babble_sources=SOURCES)
        other = rooms.room_noise(RATE, RATE, rng(6), level_dbfs=-45.0, babble_sources=SOURCES)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)

    def test_minutes_of_room_noise_are_cheap(self):
        """Three minutes of a room with talkers take well under two seconds of CPU."""
        began = time.process_time()
        out = rooms.room_noise(180 * RATE, RATE, rng(7), level_dbfs=-50.0, babble_sources=SOURCES)
        assert out.size == 180 * RATE
        assert time.process_time() - began < 2.0

    def test_empty_room_noise_is_empty(self):
        """Zero samples asked, zero given."""
        assert rooms.room_noise(0, RATE, rng(), level_dbfs=-50.0).size == 0
