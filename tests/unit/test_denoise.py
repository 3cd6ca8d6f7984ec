"""Unit tests of the denoise stage: peak normalization, noise reduction, config."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseConfig, DenoiseCore, normalize_peak
from ser_stream.testing import noise, tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydub warns that ffmpeg is missing; not needed here
    from pydub import AudioSegment, effects

RATE = 16_000
TARGET_PEAK = 10 ** (-0.1 / 20)


def pydub_normalize(pcm: np.ndarray, headroom: float) -> np.ndarray:
    segment = AudioSegment(pcm.tobytes(), frame_rate=RATE, sample_width=2, channels=1)
    normalized = effects.normalize(segment, headroom=headroom)
    return np.array(normalized.get_array_of_samples(), dtype=np.float64)


HEAVY = ("scipy", "noisereduce", "librosa", "numba", "llvmlite", "tensorflow")
"""Libraries no serving process may load: their memory and start-up are what issue 25 cut."""

SERVE = f"""
import json, sys
import numpy as np
from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseCore, normalize_peak, reduce_noise

rng = np.random.default_rng(0)
core = DenoiseCore()
noise = (0.05 * rng.standard_normal(16_000)).astype(np.float32)
core.push_noise(Noise(noise, 0.0, 1.0))
samples = (0.1 * rng.standard_normal(48_000)).astype(np.float32)
out = core.push(Window(samples, 0.0, 3.0, 0, 0)).samples
longer_than_a_chunk = reduce_noise(np.tile(samples, 13), noise, 16_000, core.config)
print(json.dumps({{
    "gated": not np.allclose(out, normalize_peak(samples, core.config.headroom_db)),
    "long_samples": longer_than_a_chunk.size,
    "loaded": sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})),
}}))
"""
"""A fresh interpreter builds a core, hears noise, gates a window and audio over a chunk."""


def residual_ratio(samples: np.ndarray, clean: np.ndarray) -> float:
    """Power of what is not the clean tone, relative to the tone, after best scaling."""
    gain = float(np.dot(samples, clean) / np.dot(clean, clean))
    return float(np.mean((samples - gain * clean) ** 2) / np.mean((gain * clean) ** 2))


def window(samples: np.ndarray) -> Window:
    return Window(samples, 0.0, samples.size / RATE, utterance=0, index=0, final=True)


class TestNormalizePeak:
    @pytest.mark.parametrize("headroom", [0.0, 0.1, 1.0, 6.0])
    def test_peak_lands_headroom_below_full_scale(self, headroom):
        """The peak after normalization is 10**(-headroom/20)."""
        x = np.array([0.01, -0.2, 0.05], dtype=np.float32)
        out = normalize_peak(x, headroom)
        assert float(np.max(np.abs(out))) == pytest.approx(10 ** (-headroom / 20), rel=1e-6)

    def test_shape_is_kept_and_scaled_uniformly(self):
        """Normalization is one gain for every sample."""
        x = np.array([0.01, -0.2, 0.05, 0.0], dtype=np.float32)
        out = normalize_peak(x, 0.1)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, x * (TARGET_PEAK / 0.2), rtol=1e-6)

    def test_loud_audio_is_turned_down(self):
        """Audio peaking above the target is attenuated to it."""
        out = normalize_peak(np.array([1.5, -0.5], dtype=np.float32), 0.1)
        assert float(np.max(np.abs(out))) == pytest.approx(TARGET_PEAK, rel=1e-6)

    @pytest.mark.parametrize("samples", [np.zeros(100, np.float32), np.zeros(0, np.float32)])
    def test_digital_silence_is_unchanged(self, samples):
        """Silence (and empty audio) comes back unchanged, as a new float32 array."""
        out = normalize_peak(samples, 0.1)
        assert out.dtype == np.float32 and out is not samples
        np.testing.assert_array_equal(out, samples)

    def test_subnormal_audio_normalizes_to_finite_peak(self):
        """A tiny but non-zero peak is scaled to the target, not to infinity."""
        samples = np.array([1.75e-44, 0.0], dtype=np.float32)
        with np.errstate(all="ignore"):
            out = normalize_peak(samples, 0.1)
        assert float(np.max(np.abs(out))) == pytest.approx(TARGET_PEAK, rel=1e-3)

    @pytest.mark.parametrize("seed", range(5))
    def test_matches_pydub_normalize(self, seed):
        """On int16 audio the result equals pydub.effects.normalize within 1.5 LSB."""
        rng = np.random.default_rng(seed)
        amplitude = int(rng.integers(1, 32_768))
        pcm = rng.integers(-amplitude, amplitude + 1, size=2_000).astype(np.int16)
        ours = normalize_peak(pcm.astype(np.float32) / 32_768, 0.1).astype(np.float64) * 32_768
        np.testing.assert_allclose(ours, pydub_normalize(pcm, 0.1), atol=1.5, rtol=0)

    def test_matches_pydub_on_negative_full_scale(self):
        """-32768 (whose magnitude exceeds int16's max) normalizes as pydub does."""
        pcm = np.array([-32_768, 5, 100], dtype=np.int16)
        ours = normalize_peak(pcm / 32_768, 0.1) * 32_768
        np.testing.assert_allclose(ours, pydub_normalize(pcm, 0.1), atol=1.5, rtol=0)

    def test_matches_pydub_on_silence(self):
        """pydub and normalize_peak both leave digital silence at zero."""
        pcm = np.zeros(50, dtype=np.int16)
        assert (
            pydub_normalize(pcm, 0.1).tolist() == (normalize_peak(pcm / 32_768) * 32_768).tolist()
        )


class TestDenoiseConfig:
    @pytest.mark.parametrize(
        "changes", [{"prop_decrease": -0.1}, {"prop_decrease": 1.01}, {"headroom_db": -1.0}]
    )
    def test_bad_values_raise_input_error(self, changes):
        """Out-of-range settings are rejected at construction."""
        with pytest.raises(InputError):
            DenoiseConfig(**changes)

    @pytest.mark.parametrize(
        "changes", [{"prop_decrease": 0.0}, {"prop_decrease": 1.0}, {"headroom_db": 0.0}]
    )
    def test_boundary_values_are_accepted(self, changes):
        """The ends of each allowed range are valid."""
        assert DenoiseConfig(**changes)


class TestDenoiseCore:
    CLEAN = tone(1.0, 440.0, amplitude=0.3)
    NOISY = CLEAN + noise(1.0, level=0.05, seed=4)

    def test_noise_profile_reduces_noise(self):
        """With a noise profile, the residual noise around a tone drops by more than half."""
        core = DenoiseCore()
        core.push_noise(Noise(noise(1.0, level=0.05, seed=9), 0.0, 1.0))
        out = core.push(window(self.NOISY))
        assert residual_ratio(out.samples, self.CLEAN) < 0.5 * residual_ratio(
            self.NOISY, self.CLEAN
        )
        assert float(np.max(np.abs(out.samples))) == pytest.approx(TARGET_PEAK, rel=1e-6)

    def test_too_little_noise_only_normalizes(self):
        """Below min_noise_s of profile, the window is only peak-normalized."""
        core = DenoiseCore(DenoiseConfig(min_noise_s=0.25))
        core.push_noise(Noise(noise(0.1, level=0.05, seed=9), 0.0, 0.1))
        out = core.push(window(self.NOISY))
        np.testing.assert_allclose(out.samples, normalize_peak(self.NOISY, 0.1), rtol=1e-6)
        assert float(np.max(np.abs(out.samples))) == pytest.approx(TARGET_PEAK, rel=1e-6)

    def test_less_than_a_frame_of_noise_only_normalizes(self):
        """With min_noise_s at 0, noise shorter than one STFT frame leaves the window as is."""
        core = DenoiseCore(DenoiseConfig(min_noise_s=0.0))
        core.push_noise(Noise(noise(0.03, level=0.05, seed=9), 0.0, 0.03))
        assert core.noise_profile.size == 480
        out = core.push(window(self.NOISY))
        np.testing.assert_allclose(out.samples, normalize_peak(self.NOISY, 0.1), rtol=1e-6)

    def test_disabled_only_normalizes(self):
        """enabled=False skips noise reduction even with a profile."""
        core = DenoiseCore(DenoiseConfig(enabled=False))
        core.push_noise(Noise(noise(1.0, level=0.05, seed=9), 0.0, 1.0))
        out = core.push(window(self.NOISY))
        np.testing.assert_allclose(out.samples, normalize_peak(self.NOISY, 0.1), rtol=1e-6)

    def test_window_metadata_is_kept(self):
        """Only the samples change; times and indices pass through."""
        source = Window(self.NOISY, 1.5, 2.5, utterance=3, index=7, final=False)
        out = DenoiseCore().push(source)
        assert (out.t_start, out.t_end, out.utterance, out.index, out.final) == (
            1.5,
            2.5,
            3,
            7,
            False,
        )

    def test_noise_memory_keeps_the_most_recent_noise(self):
        """The profile holds at most noise_memory_s, the newest samples last."""
        core = DenoiseCore(DenoiseConfig(noise_memory_s=0.5))
        first, second = noise(0.4, seed=1), noise(0.4, seed=2)
        core.push_noise(Noise(first, 0.0, 0.4))
        core.push_noise(Noise(second, 0.4, 0.8))
        assert core.noise_profile.size == 8_000
        np.testing.assert_array_equal(core.noise_profile[-second.size :], second)
        np.testing.assert_array_equal(core.noise_profile[:1_600], first[-1_600:])

    def test_reset_forgets_the_profile(self):
        """reset() empties the noise profile."""
        core = DenoiseCore()
        core.push_noise(Noise(noise(1.0), 0.0, 1.0))
        core.reset()
        assert core.noise_profile.size == 0

    def test_silent_window_stays_silent(self):
        """A digitally silent window comes out silent and finite."""
        core = DenoiseCore()
        core.push_noise(Noise(noise(1.0), 0.0, 1.0))
        out = core.push(window(np.zeros(8_000, dtype=np.float32)))
        assert np.all(np.isfinite(out.samples)) and not np.any(out.samples)


class TestServingImports:
    def test_gating_loads_no_heavy_library(self):
        """Gating in a fresh process loads none of the heavy libraries."""
        done = subprocess.run(
            [sys.executable, "-P", "-c", SERVE], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["gated"] and report["long_samples"] == 13 * 48_000
        assert report["loaded"] == []
