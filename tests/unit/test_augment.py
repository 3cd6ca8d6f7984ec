"""Unit tests of training augmentation: reproducible, bounded, speed within range."""

from __future__ import annotations

import json

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

    def test_config_to_dict_round_trips_and_new_steps_default_off(self):
        """The config serializes to plain JSON, loads back, and only the original steps are on."""
        data = AugmentConfig().to_dict()
        assert {k: data[k] for k in ("copies", "speed_range", "snr_db_range", "gain_db_range")} == {
            "copies": 2,
            "speed_range": (0.9, 1.1),
            "snr_db_range": (15.0, 40.0),
            "gain_db_range": (-12.0, 6.0),
        }
        assert all(data[k] == 0.0 for k in ("pitch_prob", "reverb_prob", "eq_prob", "band_prob"))
        assert data["codec_prob"] == 0.0 and data["noise_kinds"] == ["white", "pink"]
        assert AugmentConfig.from_dict(json.loads(json.dumps(data))) == AugmentConfig()

    @pytest.mark.parametrize("seed", [0, 7, 123])
    def test_original_recipe_draws_only_its_own(self, seed):
        """The first recipe's copies come from its own draws: its speed is the seed's first
        draw, and the settings of the steps it lacks (all off) change nothing, bit for bit."""
        plain = augment(CLIP, RATE, AugmentConfig(), seed)
        speed = np.random.default_rng(seed).uniform(*AugmentConfig().speed_range)
        assert plain.size == pytest.approx(CLIP.size / speed, abs=1)
        retuned = AugmentConfig(pitch_semitones=5.0, rt60_range_s=(0.5, 0.9), eq_db=12.0)
        np.testing.assert_array_equal(plain, augment(CLIP, RATE, retuned, seed))


ALL_STEPS = AugmentConfig(
    pitch_prob=1.0,
    reverb_prob=1.0,
    noise_kinds=("white", "pink", "brown", "hum", "babble"),
    eq_prob=1.0,
    band_prob=1.0,
    codec_prob=1.0,
)


class TestChannelAndVoiceSteps:
    @pytest.mark.parametrize("seed", range(8))
    def test_every_step_keeps_audio_finite_and_within_full_scale(self, seed):
        """Pitch, reverb, noise kinds, EQ, band limits and codec give finite float32 in [-1, 1]."""
        babble = [voiced(0.7, f0=200.0, seed=9), voiced(1.3, f0=110.0, seed=10)]
        out = augment(np.clip(CLIP * 2.4, -1, 1), RATE, ALL_STEPS, seed, babble_sources=babble)
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        assert float(np.max(np.abs(out))) <= 1.0

    def test_steps_change_the_audio_and_are_reproducible(self):
        """With every step on, a copy differs from the original recipe's and repeats exactly."""
        first = augment(CLIP, RATE, ALL_STEPS, 3)
        np.testing.assert_array_equal(first, augment(CLIP, RATE, ALL_STEPS, 3))
        plain = augment(CLIP, RATE, AugmentConfig(), 3)
        assert first.size == plain.size and not np.allclose(first, plain, atol=1e-3)

    def test_babble_without_sources_falls_back_to_other_noise(self):
        """Babble needs recordings; without them another noise kind is drawn."""
        config = AugmentConfig(noise_kinds=("babble", "brown"))
        out = augment(CLIP, RATE, config, 1)
        assert np.all(np.isfinite(out))

    def test_pitch_shift_moves_the_fundamental(self):
        """A +3 semitone shift raises a 200 Hz tone by about 19%."""
        tone = (0.3 * np.sin(2 * np.pi * 200.0 * np.arange(RATE) / RATE)).astype(np.float32)
        config = AugmentConfig(
            speed_range=(1.0, 1.0),
            snr_db_range=(80.0, 80.0),
            gain_db_range=(0.0, 0.0),
            pitch_prob=1.0,
            pitch_semitones=3.0,
            noise_kinds=("white",),
        )
        # Find a seed whose draw is close to +3 semitones.
        for seed in range(200):
            extra = np.random.default_rng([seed, 1])
            extra.random()
            if extra.uniform(-1, 1) > 0.95:
                break
        out = augment(tone, RATE, config, seed)
        spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(out.size - 4000)))
        peak_hz = np.argmax(spectrum) * RATE / (out.size - 4000)
        assert 200.0 * 2 ** (2.8 / 12) < peak_hz < 200.0 * 2 ** (3.05 / 12)
