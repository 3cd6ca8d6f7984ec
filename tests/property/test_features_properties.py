"""Properties of feature extraction: fixed shape, float32 and finite for any audio."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.stages.features import FEATURE_KINDS, FeatureConfig, extract_features, fit_length

kinds = st.lists(st.sampled_from(FEATURE_KINDS), min_size=1, max_size=6, unique=True).map(tuple)
lengths = st.integers(1, 60_000)
amplitudes = st.floats(0.0, 1.0)


def check(matrix: np.ndarray, config: FeatureConfig) -> None:
    assert matrix.shape == (config.n_frames, config.n_features)
    assert matrix.dtype == np.float32
    assert np.all(np.isfinite(matrix))


class TestExtractFeaturesProperties:
    @settings(max_examples=40, deadline=None)
    @given(
        n=lengths, amplitude=amplitudes, seed=st.integers(0, 2**16), kinds=kinds, norm=st.booleans()
    )
    def test_noise_of_any_length_and_level(self, n, amplitude, seed, kinds, norm):
        """Random audio of any length >= 1 and any level gives a finite matrix of fixed shape."""
        config = FeatureConfig(kinds=kinds, instance_norm=norm)
        samples = amplitude * np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
        check(extract_features(samples, config), config)

    @settings(max_examples=25, deadline=None)
    @given(n=lengths, kinds=kinds, norm=st.booleans())
    def test_all_zero_audio(self, n, kinds, norm):
        """Digital silence of any length gives a finite matrix of the right shape."""
        config = FeatureConfig(kinds=kinds, instance_norm=norm)
        check(extract_features(np.zeros(n, dtype=np.float32), config), config)

    @settings(max_examples=25, deadline=None)
    @given(
        n=lengths,
        period=st.integers(2, 400),
        kinds=kinds,
        norm=st.booleans(),
        dtype=st.sampled_from([np.float32, np.float64]),
    )
    def test_clipped_square_wave(self, n, period, kinds, norm, dtype):
        """Full-scale +-1 square waves (clipped audio) give a finite matrix of the right shape."""
        config = FeatureConfig(kinds=kinds, instance_norm=norm)
        samples = np.where((np.arange(n) // (period // 2 or 1)) % 2 == 0, 1.0, -1.0).astype(dtype)
        check(extract_features(samples, config), config)

    @settings(max_examples=20, deadline=None)
    @given(
        n=st.integers(1, 20_000),
        window_s=st.floats(0.3, 2.0),
        hop_length=st.sampled_from([128, 160, 256, 512]),
        n_fft=st.sampled_from([256, 400, 512, 1024]),
        kinds=kinds,
    )
    def test_shape_follows_config(self, n, window_s, hop_length, n_fft, kinds):
        """Window length, hop and FFT size change the shape exactly as n_frames says."""
        config = FeatureConfig(window_s=window_s, hop_length=hop_length, n_fft=n_fft, kinds=kinds)
        samples = 0.3 * np.sin(np.arange(n, dtype=np.float32) * 0.05)
        check(extract_features(samples, config), config)


class TestFitLengthProperties:
    @settings(max_examples=100, deadline=None)
    @given(n=st.integers(1, 5_000), target=st.integers(0, 20_000))
    def test_exact_length_and_periodic(self, n, target):
        """fit_length returns exactly `target` samples, the input repeated from its start."""
        samples = np.arange(n, dtype=np.float32)
        out = fit_length(samples, target)
        assert out.size == target
        np.testing.assert_array_equal(out, np.arange(target) % n)
