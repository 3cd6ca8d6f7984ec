"""Unit tests of the features stage: config, matrix shape, length fitting, normalization."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.messages import Features, Window
from ser_stream.stages.features import (
    FEATURE_KINDS,
    FeatureConfig,
    FeaturesCore,
    extract_features,
    fit_length,
)
from ser_stream.testing import noise, tone, voiced


class TestFeatureConfig:
    def test_default_frames_and_features(self):
        """3 s at 16 kHz, hop 512 gives 94 frames; rms+zcr+13 MFCC gives 15 columns."""
        config = FeatureConfig()
        assert (config.window_samples, config.n_frames, config.n_features) == (48_000, 94, 15)

    @pytest.mark.parametrize(
        ("kinds", "expected"),
        [
            (("rms",), 1),
            (("zcr",), 1),
            (("mfcc",), 13),
            (("mfcc_delta",), 13),
            (("mfcc_delta2",), 13),
            (("logmel",), 40),
            (("rms", "zcr", "mfcc"), 15),
            (("mfcc", "mfcc_delta", "mfcc_delta2"), 39),
            (("pitch", "voicing", "tilt"), 3),
            (FEATURE_KINDS, 1 + 1 + 13 * 3 + 40 + 3),
        ],
    )
    def test_n_features_sums_kind_widths(self, kinds, expected):
        """Each kind adds its width: 1 for rms/zcr, n_mfcc for MFCCs, n_mels for logmel."""
        assert FeatureConfig(kinds=kinds).n_features == expected

    def test_widths_follow_n_mfcc_and_n_mels(self):
        """MFCC widths follow n_mfcc and logmel follows n_mels."""
        config = FeatureConfig(kinds=("mfcc", "mfcc_delta", "logmel"), n_mfcc=20, n_mels=64)
        assert config.n_features == 20 + 20 + 64

    @pytest.mark.parametrize(
        ("window_s", "sample_rate", "hop_length", "frames"),
        [
            (3.0, 16_000, 512, 94),
            (1.0, 16_000, 160, 101),
            (0.5, 8_000, 256, 16),
            (2.0, 22_050, 512, 87),
        ],
    )
    def test_n_frames_is_one_plus_samples_over_hop(self, window_s, sample_rate, hop_length, frames):
        """n_frames is 1 + window_samples // hop_length (centred frames)."""
        config = FeatureConfig(window_s=window_s, sample_rate=sample_rate, hop_length=hop_length)
        assert config.n_frames == frames

    def test_column_kinds_name_every_column_in_order(self):
        """column_kinds lists each column's kind, as wide as the kind is."""
        config = FeatureConfig(kinds=("rms", "mfcc", "pitch"), n_mfcc=3)
        assert config.column_kinds == ("rms", "mfcc", "mfcc", "mfcc", "pitch")

    @pytest.mark.parametrize(
        "kinds",
        [("jitter",), ("rms", "chroma"), (), ("MFCC",)],
        ids=["jitter", "chroma", "none", "case"],
    )
    def test_unknown_or_no_kinds_raise_input_error(self, kinds):
        """Kinds must be a non-empty subset of FEATURE_KINDS."""
        with pytest.raises(InputError, match="unknown feature kinds"):
            FeatureConfig(kinds=kinds)

    @pytest.mark.parametrize(
        "changes", [{"hop_length": 0}, {"n_fft": -1}, {"window_s": 0.0}, {"window_s": -1.0}]
    )
    def test_non_positive_sizes_raise_input_error(self, changes):
        """n_fft, hop_length and window_s must be positive."""
        with pytest.raises(InputError, match="positive"):
            FeatureConfig(**changes)

    @pytest.mark.parametrize(
        "config",
        [
            FeatureConfig(),
            FeatureConfig(kinds=FEATURE_KINDS, instance_norm=True, n_mfcc=20, window_s=2.5),
            FeatureConfig(sample_rate=8_000, fmax=4_000.0, kinds=("logmel",)),
        ],
    )
    def test_dict_round_trip(self, config):
        """from_dict(to_dict(c)) == c, also through JSON."""
        assert FeatureConfig.from_dict(config.to_dict()) == config
        assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config

    def test_to_dict_kinds_is_a_list(self):
        """The stored form uses a JSON list for kinds."""
        assert FeatureConfig().to_dict()["kinds"] == ["rms", "zcr", "mfcc"]

    def test_from_dict_fills_missing_keys_with_defaults(self):
        """Keys left out take their default values."""
        assert FeatureConfig.from_dict({"n_mfcc": 20}) == FeatureConfig(n_mfcc=20)

    def test_from_dict_unknown_key_raises_input_error(self):
        """A key the config does not know is an error naming it."""
        data = FeatureConfig().to_dict() | {"pre_emphasis": 0.97}
        with pytest.raises(InputError, match="pre_emphasis"):
            FeatureConfig.from_dict(data)

    def test_from_dict_unknown_kind_raises_input_error(self):
        """A stored config with an unknown kind is rejected."""
        with pytest.raises(InputError):
            FeatureConfig.from_dict({"kinds": ["rms", "jitter"]})

    def test_too_short_window_for_deltas_is_an_input_error(self):
        """A config that cannot yield delta features fails with InputError, not a librosa error."""
        with pytest.raises(InputError):
            config = FeatureConfig(window_s=0.25, kinds=("mfcc_delta",))
            extract_features(np.ones(4_000, dtype=np.float32), config)


class TestFitLength:
    def test_short_audio_is_repeated(self):
        """Audio shorter than the target is tiled from its start."""
        assert fit_length(np.array([1.0, 2.0, 3.0]), 7).tolist() == [1, 2, 3, 1, 2, 3, 1]

    def test_long_audio_is_cut(self):
        """Audio longer than the target keeps its first samples."""
        assert fit_length(np.arange(10.0), 4).tolist() == [0, 1, 2, 3]

    def test_exact_length_is_kept(self):
        """Audio of the target length is unchanged."""
        assert fit_length(np.arange(5.0), 5).tolist() == [0, 1, 2, 3, 4]

    def test_single_sample_fills_the_window(self):
        """One sample is repeated to the full length."""
        assert fit_length(np.array([0.5], dtype=np.float32), 48_000).tolist() == [0.5] * 48_000

    def test_empty_audio_raises_input_error(self):
        """There is nothing to repeat in empty audio."""
        with pytest.raises(InputError, match="empty"):
            fit_length(np.zeros(0, dtype=np.float32), 10)


class TestExtractFeatures:
    @pytest.mark.parametrize(
        "kinds", [("rms", "zcr", "mfcc"), FEATURE_KINDS, ("logmel",), ("zcr",)]
    )
    @pytest.mark.parametrize("instance_norm", [False, True])
    def test_shape_dtype_and_finiteness(self, kinds, instance_norm):
        """The matrix is (n_frames, n_features) float32 and finite."""
        config = FeatureConfig(kinds=kinds, instance_norm=instance_norm)
        matrix = extract_features(voiced(2.0), config)
        assert matrix.shape == (config.n_frames, config.n_features)
        assert matrix.dtype == np.float32 and matrix.flags["C_CONTIGUOUS"]
        assert np.all(np.isfinite(matrix))

    def test_columns_follow_kind_order(self):
        """Columns come in the order the kinds are listed (rms first, then zcr)."""
        config = FeatureConfig(kinds=("rms", "zcr"))
        rms_first = extract_features(voiced(3.0), config)
        zcr_first = extract_features(voiced(3.0), FeatureConfig(kinds=("zcr", "rms")))
        np.testing.assert_array_equal(rms_first[:, ::-1], zcr_first)

    def test_short_audio_equals_its_repetition(self):
        """Short audio gives the features of itself repeated to the window length."""
        config = FeatureConfig()
        short = voiced(1.1)
        repeated = np.tile(short, 3)[: config.window_samples]
        np.testing.assert_array_equal(
            extract_features(short, config), extract_features(repeated, config)
        )

    def test_long_audio_uses_the_first_window(self):
        """Audio longer than the window is cut to its first window_s."""
        config = FeatureConfig()
        long = voiced(5.0)
        np.testing.assert_array_equal(
            extract_features(long, config), extract_features(long[: config.window_samples], config)
        )

    def test_louder_tone_has_higher_rms_column(self):
        """The rms column is the log RMS: louder audio, larger values."""
        config = FeatureConfig(kinds=("rms",))
        quiet = extract_features(tone(3.0, amplitude=0.01), config)
        loud = extract_features(tone(3.0, amplitude=0.5), config)
        assert float(np.median(loud)) - float(np.median(quiet)) == pytest.approx(
            np.log(50), abs=0.05
        )

    def test_empty_audio_raises_input_error(self):
        """Empty audio has no features."""
        with pytest.raises(InputError):
            extract_features(np.zeros(0, dtype=np.float32), FeatureConfig())


class TestInstanceNorm:
    def test_columns_have_zero_mean_and_unit_std(self):
        """With instance_norm each varying column has mean ~0 and std ~1."""
        matrix = extract_features(
            voiced(3.0), FeatureConfig(kinds=FEATURE_KINDS, instance_norm=True)
        )
        raw = extract_features(voiced(3.0), FeatureConfig(kinds=FEATURE_KINDS))
        varying = raw.std(axis=0) > 1e-3
        assert varying.sum() > 40
        np.testing.assert_allclose(matrix.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(matrix.std(axis=0)[varying], 1.0, atol=1e-2)

    def test_constant_columns_stay_finite_and_constant(self):
        """A constant column (std 0) normalizes to a finite constant, never NaN."""
        matrix = extract_features(
            np.zeros(100, dtype=np.float32), FeatureConfig(instance_norm=True)
        )
        assert np.all(np.isfinite(matrix))
        assert np.all(matrix == matrix[0])

    def test_constant_columns_become_zero(self):
        """A constant column (std 0) normalizes to zeros, not NaN."""
        matrix = extract_features(
            np.zeros(100, dtype=np.float32), FeatureConfig(instance_norm=True)
        )
        assert np.all(matrix == 0.0)


class TestFeaturesCore:
    def test_push_wraps_the_matrix_with_window_times(self):
        """push returns Features carrying the window's times and index."""
        config = FeatureConfig()
        window = Window(voiced(3.0), 1.25, 4.25, utterance=2, index=9, final=True)
        features = FeaturesCore(config).push(window)
        assert isinstance(features, Features)
        assert (features.t_start, features.t_end, features.index) == (1.25, 4.25, 9)
        np.testing.assert_array_equal(features.matrix, extract_features(window.samples, config))

    def test_default_config(self):
        """A core without config uses FeatureConfig()."""
        assert FeaturesCore().config == FeatureConfig()


class TestProsody:
    CONFIG = FeatureConfig(kinds=("pitch", "voicing", "tilt"))

    def harmonic(self, f0: float, seconds: float = 3.0) -> np.ndarray:
        t = np.arange(round(seconds * 16_000)) / 16_000
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10))
        return (0.3 * wave / np.max(np.abs(wave))).astype(np.float32)

    @pytest.mark.parametrize("f0", [110.0, 220.0, 330.0])
    def test_pitch_is_semitones_above_100_hz(self, f0):
        """A steady harmonic tone gives pitch 12*log2(f0/100) in its voiced frames."""
        matrix = extract_features(self.harmonic(f0), self.CONFIG)
        inner = matrix[3:-3]
        assert np.median(inner[:, 0]) == pytest.approx(12 * np.log2(f0 / 100), abs=0.3)

    def test_voicing_separates_a_tone_from_noise(self):
        """Periodic sound is voiced (near 1), white noise is not (near 0)."""
        tone = extract_features(self.harmonic(150.0), self.CONFIG)[3:-3, 1]
        hiss = extract_features(noise(3.0, level=0.1), self.CONFIG)[3:-3, 1]
        assert np.median(tone) > 0.9 and np.median(hiss) < 0.3

    def test_pitch_is_bridged_across_unvoiced_frames(self):
        """Between two voiced stretches, unvoiced frames carry an interpolated pitch."""
        gap = noise(1.0, level=0.05, seed=3)
        audio = np.concatenate([self.harmonic(120.0, 1.0), gap, self.harmonic(240.0, 1.0)])
        pitch = extract_features(audio, self.CONFIG)[:, 0]
        low, high = 12 * np.log2(1.2), 12 * np.log2(2.4)
        assert np.all(np.isfinite(pitch))
        assert np.all((pitch[36:58] > low - 0.5) & (pitch[36:58] < high + 0.5))

    def test_no_voiced_frame_gives_zero_pitch(self):
        """Noise alone has no pitch to interpolate: the column is 0."""
        pitch = extract_features(noise(3.0, level=0.1, seed=5), self.CONFIG)[:, 0]
        assert np.all(pitch == 0.0)

    def test_tilt_is_steeper_for_darker_sound(self):
        """Low-passed (dark) sound has a more negative spectral tilt than bright sound."""
        bright = noise(3.0, level=0.1, seed=6)
        dark = np.convolve(bright, np.ones(16) / 16, mode="same").astype(np.float32)
        tilt = lambda audio: np.median(extract_features(audio, self.CONFIG)[:, 2])  # noqa: E731
        assert tilt(dark) < tilt(bright) - 0.3
