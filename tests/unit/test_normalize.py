"""Unit tests of stream normalization: warm-up, decay, overlap accounting, predict == stream."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.analysis import AnalysisConfig, analyze
from ser_stream.errors import InputError
from ser_stream.messages import Window
from ser_stream.stages.features import FeatureConfig, FeaturesCore
from ser_stream.stages.normalize import NormalizeConfig, StreamNormalizer
from ser_stream.testing import noise, voiced

D = 4
STREAM = NormalizeConfig(mode="stream")


def matrix(mean: float, std: float, seed: int = 0, frames: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (mean + std * rng.standard_normal((frames, D))).astype(np.float32)


class TestNormalizeConfig:
    def test_round_trips_through_json_form(self):
        """to_dict/from_dict give back the same config, prior included."""
        config = NormalizeConfig(mode="stream", prior_s=2.0, memory_s=30.0).with_prior(
            np.arange(3.0), np.ones(3)
        )
        assert NormalizeConfig.from_dict(config.to_dict()) == config

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"mode": "cepstral"},
            {"mode": "stream", "prior_s": -1.0},
            {"mode": "stream", "memory_s": 0.0},
        ],
    )
    def test_invalid_settings_are_input_errors(self, kwargs):
        """Unknown modes, negative weights and a weightless prior are rejected."""
        with pytest.raises(InputError):
            NormalizeConfig(**kwargs)

    def test_a_prior_weight_needs_prior_statistics(self):
        """A normalizer told to weigh a prior it was never given refuses to start."""
        with pytest.raises(InputError, match="training statistics"):
            StreamNormalizer(NormalizeConfig(mode="stream", prior_s=1.0), D)

    def test_unknown_keys_are_rejected(self):
        """A config from a newer artifact with unknown keys is an error, not ignored."""
        with pytest.raises(InputError, match="unknown keys"):
            NormalizeConfig.from_dict({"mode": "stream", "window": 3})


class TestStreamNormalizer:
    def test_mode_none_passes_features_unchanged(self):
        """Without normalization the matrix comes back as it went in."""
        m = matrix(5.0, 2.0)
        out = StreamNormalizer(NormalizeConfig(), D).push(m, 0.0, 3.0)
        np.testing.assert_array_equal(out, m)

    def test_first_window_without_prior_is_standardized_by_itself(self):
        """With no prior, a stream's first window gets zero mean and unit spread per column."""
        out = StreamNormalizer(STREAM, D).push(matrix(5.0, 2.0), 0.0, 3.0)
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)

    def test_a_window_not_learnt_is_normalized_as_if_learnt_and_then_forgotten(self):
        """learn=False: the same output as a learnt window, and the statistics stay as before."""
        learnt, forgetful = StreamNormalizer(STREAM, D), StreamNormalizer(STREAM, D)
        first, look = matrix(5.0, 2.0), matrix(-3.0, 1.0, seed=1)
        learnt.push(first, 0.0, 3.0)
        forgetful.push(first, 0.0, 3.0)
        np.testing.assert_array_equal(
            forgetful.push(look, 3.0, 3.8, learn=False), learnt.push(look, 3.0, 3.8)
        )
        later = matrix(1.0, 1.0, seed=2)
        after = forgetful.push(later, 3.0, 6.0)
        alone = StreamNormalizer(STREAM, D)
        alone.push(first, 0.0, 3.0)
        np.testing.assert_array_equal(after, alone.push(later, 3.0, 6.0))

    def test_mean_only_keeps_the_spread(self):
        """variance=False subtracts the stream mean and leaves the scale alone."""
        m = matrix(5.0, 2.0)
        out = StreamNormalizer(NormalizeConfig(mode="stream", variance=False), D).push(m, 0, 3)
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=0), m.std(axis=0), rtol=1e-4)

    def test_prior_weighs_as_seconds_of_speech(self):
        """A prior worth 3 s against 3 s of speech puts the mean half way between them."""
        config = NormalizeConfig(mode="stream", prior_s=3.0).with_prior(np.zeros(D), np.ones(D))
        normalizer = StreamNormalizer(config, D)
        normalizer.push(np.full((10, D), 4.0, np.float32), 0.0, 3.0)
        mean, _ = normalizer.statistics()
        np.testing.assert_allclose(mean, 2.0)

    def test_a_channel_offset_disappears_once_warmed_up(self):
        """Two streams differing by a constant offset (a microphone's colour) converge."""
        a, b = StreamNormalizer(STREAM, D), StreamNormalizer(STREAM, D)
        for k in range(6):
            m = matrix(0.0, 1.0, seed=k)
            out_a = a.push(m, 3.0 * k, 3.0 * k + 3.0)
            out_b = b.push(m + 7.5, 3.0 * k, 3.0 * k + 3.0)
        np.testing.assert_allclose(out_a, out_b, atol=1e-4)

    def test_overlapping_windows_count_only_new_speech(self):
        """A window overlapping the previous by half adds half its length to the statistics."""
        normalizer = StreamNormalizer(STREAM, D)
        normalizer.push(matrix(0.0, 1.0), 0.0, 3.0)
        normalizer.push(matrix(0.0, 1.0, seed=1), 1.5, 4.5)
        decay = np.exp(-1.5 / STREAM.memory_s)
        assert normalizer.seconds == pytest.approx(3.0 * decay + 1.5)

    def test_old_speech_fades_with_the_memory_time_constant(self):
        """After a long stretch at a new level the old level is forgotten."""
        config = NormalizeConfig(mode="stream", memory_s=5.0)
        normalizer = StreamNormalizer(config, D)
        normalizer.push(np.full((10, D), -50.0, np.float32), 0.0, 3.0)
        for k in range(1, 30):
            normalizer.push(matrix(10.0, 1.0, seed=k), 3.0 * k, 3.0 * k + 3.0)
        mean, _ = normalizer.statistics()
        np.testing.assert_allclose(mean, 10.0, atol=0.5)

    def test_reset_returns_to_a_fresh_stream(self):
        """After reset the normalizer gives what a new one gives."""
        m = matrix(3.0, 1.0)
        used = StreamNormalizer(STREAM, D)
        used.push(matrix(-9.0, 4.0), 0.0, 3.0)
        used.reset()
        np.testing.assert_array_equal(
            used.push(m, 0.0, 3.0), StreamNormalizer(STREAM, D).push(m, 0.0, 3.0)
        )

    def test_constant_columns_stay_finite(self):
        """A column that never varies normalizes to finite values."""
        out = StreamNormalizer(STREAM, D).push(np.ones((20, D), np.float32), 0.0, 1.0)
        assert np.all(np.isfinite(out))

    def test_only_the_named_kinds_are_normalized(self):
        """With kinds set, the other columns pass through untouched."""
        config = NormalizeConfig(mode="stream", kinds=("mfcc",))
        kinds = ("rms", "mfcc", "mfcc", "pitch")
        m = matrix(5.0, 2.0)
        out = StreamNormalizer(config, D, column_kinds=kinds).push(m, 0.0, 3.0)
        np.testing.assert_array_equal(out[:, [0, 3]], m[:, [0, 3]])
        np.testing.assert_allclose(out[:, 1:3].mean(axis=0), 0.0, atol=1e-5)

    def test_kinds_need_the_column_layout(self):
        """Naming kinds without saying which column is which is refused, as is a missing kind."""
        with pytest.raises(InputError, match="kind of every column"):
            StreamNormalizer(NormalizeConfig(mode="stream", kinds=("mfcc",)), D)
        with pytest.raises(InputError, match="pitch"):
            StreamNormalizer(
                NormalizeConfig(mode="stream", kinds=("pitch",)),
                D,
                column_kinds=("rms", "mfcc", "mfcc", "zcr"),
            )

    def test_wrong_width_is_an_input_error(self):
        """A matrix with the wrong number of columns is rejected with advice."""
        with pytest.raises(InputError, match="columns"):
            StreamNormalizer(STREAM, D).push(np.zeros((5, D + 1), np.float32), 0.0, 1.0)


class TestFeaturesCoreNormalizes:
    def test_predict_path_equals_a_stream_fed_window_by_window(self):
        """analyze() on a recording gives exactly what a features core fed its windows gives."""
        audio = np.concatenate(
            [noise(0.5), voiced(4.0, f0=150.0, seed=1), noise(0.8, seed=2), voiced(2.0, seed=3)]
        )
        base = FeatureConfig(kinds=("rms", "zcr", "mfcc"))
        config = AnalysisConfig(
            features=base,
            normalize=NormalizeConfig(mode="stream", prior_s=1.0).with_prior(
                np.zeros(base.n_features), np.ones(base.n_features)
            ),
        )
        batch = analyze(audio, config)
        assert len(batch) >= 3
        from ser_stream.analysis import speech_windows

        core = FeaturesCore(config.features, config.normalize)
        streamed = [core.push(w) for w in speech_windows(audio, config)]
        for a, b in zip(batch, streamed, strict=True):
            np.testing.assert_array_equal(a.matrix, b.matrix)

    def test_a_first_look_does_not_move_the_statistics_of_the_full_window(self):
        """A live first look (short, not final) leaves the full window as predict has it."""
        config = FeatureConfig(kinds=("rms", "zcr", "mfcc"))
        normalize = NormalizeConfig(mode="stream")
        audio = voiced(3.0, f0=170.0, seed=7)
        full = Window(audio, 0.0, 3.0, 0, 1, final=True)
        look = Window(audio[: len(audio) // 4], 0.0, 0.75, 0, 0, final=False)
        live = FeaturesCore(config, normalize)
        live.push(look)
        batch = FeaturesCore(config, normalize)
        np.testing.assert_array_equal(live.push(full).matrix, batch.push(full).matrix)

    def test_each_file_starts_fresh(self):
        """The same audio analysed twice gives the same features: no state leaks between files."""
        audio = np.concatenate([noise(0.3), voiced(2.0, seed=4)])
        config = AnalysisConfig(normalize=NormalizeConfig(mode="stream"))
        first = analyze(audio, config)
        second = analyze(audio, config)
        np.testing.assert_array_equal(first[0].matrix, second[0].matrix)

    def test_core_reset_forgets_the_stream(self):
        """reset() on the core forgets the statistics of the previous stream."""
        core = FeaturesCore(FeatureConfig(), NormalizeConfig(mode="stream"))
        window = Window(voiced(1.0, seed=5), 0.0, 1.0, 0, 0)
        first = core.push(window).matrix
        core.push(Window(voiced(1.0, f0=300.0, seed=6), 1.0, 2.0, 1, 1))
        core.reset()
        np.testing.assert_array_equal(core.push(window).matrix, first)
