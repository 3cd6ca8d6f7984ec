"""Unit tests of training augmentation: reproducible, bounded, speed within range."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.testing import silence, voiced
from ser_stream.train.augment import AugmentConfig, augment

RATE = 16_000
CLIP = voiced(1.0)


class TestAugment:
    def test_same_seed_gives_identical_output(self):
        """The same seed reproduces the same copy bit for bit."""
        config = AugmentConfig()
        np.testing.assert_array_equal(
            augment(CLIP, RATE, config, 7), augment(CLIP, RATE, config, 7)
        )

    def test_different_seeds_differ(self):
        """Different seeds give different copies."""
        outputs = [augment(CLIP, RATE, AugmentConfig(), seed) for seed in range(4)]
        for i in range(len(outputs)):
            for j in range(i + 1, len(outputs)):
                a, b = outputs[i], outputs[j]
                assert a.size != b.size or not np.array_equal(a, b)

    def test_input_is_not_modified(self):
        """The clean clip is left untouched."""
        clip = CLIP.copy()
        augment(clip, RATE, AugmentConfig(), 3)
        np.testing.assert_array_equal(clip, CLIP)

    @pytest.mark.parametrize("seed", range(12))
    def test_output_is_finite_float32_within_full_scale(self, seed):
        """Copies are finite float32 within [-1, 1], even after +6 dB gain on loud input."""
        loud = np.clip(CLIP * 2.4, -1, 1)
        out = augment(loud, RATE, AugmentConfig(), seed)
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        assert float(np.max(np.abs(out))) <= 1.0

    @pytest.mark.parametrize("seed", range(12))
    def test_length_ratio_within_speed_range(self, seed):
        """Output length is input length / speed, for a speed in speed_range."""
        config = AugmentConfig(speed_range=(0.9, 1.1))
        ratio = augment(CLIP, RATE, config, seed).size / CLIP.size
        assert 1 / 1.1 - 1e-3 <= ratio <= 1 / 0.9 + 1e-3

    def test_fixed_speed_keeps_length_exactly_scaled(self):
        """A one-point speed range scales the length by exactly 1/speed."""
        out = augment(CLIP, RATE, AugmentConfig(speed_range=(0.8, 0.8)), 0)
        assert out.size == pytest.approx(CLIP.size / 0.8, abs=1)

    def test_snr_range_sets_the_noise_level(self):
        """With gain and speed fixed, the added noise sits at the drawn SNR."""
        config = AugmentConfig(
            speed_range=(1.0, 1.0), snr_db_range=(20.0, 20.0), gain_db_range=(0, 0)
        )
        out = augment(CLIP, RATE, config, 5)
        residual = out - CLIP
        snr = 10 * np.log10(np.mean(CLIP.astype(np.float64) ** 2) / np.mean(residual**2))
        assert snr == pytest.approx(20.0, abs=0.5)

    def test_silence_stays_finite(self):
        """Digital silence augments to finite, near-silent audio."""
        out = augment(silence(0.5), RATE, AugmentConfig(), 1)
        assert np.all(np.isfinite(out)) and float(np.max(np.abs(out))) < 1e-3

    def test_config_to_dict(self):
        """The config serializes to a plain dict of its ranges."""
        assert AugmentConfig().to_dict() == {
            "copies": 2,
            "speed_range": (0.9, 1.1),
            "snr_db_range": (15.0, 40.0),
            "gain_db_range": (-12.0, 6.0),
        }
