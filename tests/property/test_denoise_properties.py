"""Properties of peak normalization (pydub parity) and the denoise core."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseCore, normalize_peak
from ser_stream.testing import noise

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydub warns that ffmpeg is missing; not needed here
    from pydub import AudioSegment, effects

int16_audio = arrays(np.int16, st.integers(1, 2_000), elements=st.integers(-32_768, 32_767))
headrooms = st.floats(0.0, 20.0)


class TestNormalizePeakProperties:
    @settings(max_examples=150, deadline=None)
    @given(pcm=int16_audio, headroom=headrooms)
    def test_matches_pydub_normalize(self, pcm, headroom):
        """normalize_peak(x / 32768) * 32768 equals pydub's normalize within 1.5 LSB."""
        segment = AudioSegment(pcm.tobytes(), frame_rate=16_000, sample_width=2, channels=1)
        reference = np.array(
            effects.normalize(segment, headroom=headroom).get_array_of_samples(), dtype=np.float64
        )
        ours = normalize_peak(pcm.astype(np.float32) / 32_768, headroom).astype(np.float64) * 32_768
        np.testing.assert_allclose(ours, reference, atol=1.5, rtol=0)

    @settings(max_examples=100, deadline=None)
    @given(
        samples=arrays(
            np.float32,
            st.integers(1, 500),
            elements=st.floats(-4, 4, width=32, allow_subnormal=False),
        ),
        headroom=headrooms,
    )
    def test_peak_is_target_unless_silent(self, samples, headroom):
        """Non-silent audio peaks at exactly 10**(-headroom/20); silence stays zero."""
        out = normalize_peak(samples, headroom)
        assert out.dtype == np.float32 and out.shape == samples.shape
        if np.any(samples):
            assert float(np.max(np.abs(out))) == pytest.approx(10 ** (-headroom / 20), rel=1e-5)
        else:
            assert not np.any(out)


class TestDenoiseCoreProperties:
    @settings(max_examples=15, deadline=None)
    @given(
        n=st.integers(1, 24_000),
        level=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
        noise_s=st.floats(0.0, 1.0),
        seed=st.integers(0, 1_000),
    )
    def test_output_is_finite_normalized_and_same_length(self, n, level, noise_s, seed):
        """Any window comes out finite, the same length, and peak-normalized unless silent."""
        core = DenoiseCore()
        if noise_s:
            core.push_noise(Noise(noise(noise_s, level=0.02, seed=seed + 1), 0.0, noise_s))
        rng = np.random.default_rng(seed)
        samples = np.clip(level * rng.standard_normal(n), -1, 1).astype(np.float32)
        out = core.push(Window(samples, 0.0, n / 16_000, 0, 0, True)).samples
        assert out.shape == samples.shape and np.all(np.isfinite(out))
        peak = float(np.max(np.abs(out)))
        assert peak == 0.0 or peak == pytest.approx(10 ** (-0.1 / 20), rel=1e-5)
