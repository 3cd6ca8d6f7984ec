"""Unit tests of the short-window evaluation's helpers, on generated audio (no corpora)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.short_windows import (
    VIEWS,
    first_speech_window,
    first_window_rows,
    format_table,
    live_matrix,
    single_window_scores,
    summarize,
    truncate_window,
)
from ser_stream.analysis import AnalysisConfig, analyze
from ser_stream.errors import InputError
from ser_stream.messages import Window
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.testing import noise, silence, tone, voiced
from ser_stream.train.cross_fit import cross_fitted_temperatures

RATE = 16_000
SPEECH = np.concatenate([noise(1.0, seed=1), voiced(2.5, seed=2), noise(1.0, seed=3)])
CONFIG = AnalysisConfig(normalize=NormalizeConfig(mode="stream", prior_s=0.0))


class TestTruncateWindow:
    def test_keeps_the_first_seconds_and_moves_the_end(self):
        """A 3 s window cut to 1 s keeps its first 16000 samples and ends 1 s after its start."""
        samples = np.arange(3 * RATE, dtype=np.float32)
        window = Window(samples, 2.0, 5.0, 0, 0, final=True)
        cut = truncate_window(window, 1.0, RATE)
        np.testing.assert_array_equal(cut.samples, samples[:RATE])
        assert (cut.t_start, cut.t_end, cut.final) == (2.0, 3.0, False)

    @pytest.mark.parametrize("seconds", [None, 2.0, 5.0])
    def test_short_window_or_no_length_is_unchanged(self, seconds):
        """No length, or a window no longer than it, comes back as it is."""
        window = Window(np.ones(2 * RATE, np.float32), 0.5, 2.5, 0, 0)
        assert truncate_window(window, seconds, RATE) is window


class TestFirstSpeechWindow:
    def test_speech_gives_the_vads_first_window_and_the_noise_before_it(self):
        """The first window starts near the speech, after all noise handed over before it."""
        first = first_speech_window(SPEECH, CONFIG)
        assert first.vad
        assert 0.7 <= first.window.t_start <= 1.2
        assert first.noise and all(n.t_end <= first.window.t_start + 1e-9 for n in first.noise)

    def test_full_first_window_matches_the_in_process_chain(self):
        """Uncut, the live path gives the matrix analyze() gives the recording's first window."""
        first = first_speech_window(SPEECH, CONFIG)
        expected = analyze(SPEECH, CONFIG)[0].matrix
        np.testing.assert_allclose(live_matrix(first, CONFIG, None), expected, atol=1e-5)

    def test_short_window_is_a_full_size_matrix_of_other_numbers(self):
        """A 1 s cut still gives the model's matrix shape (the audio is repeated to fill it)."""
        first = first_speech_window(SPEECH, CONFIG)
        short = live_matrix(first, CONFIG, 1.0)
        full = live_matrix(first, CONFIG, None)
        assert short.shape == full.shape == (CONFIG.features.n_frames, CONFIG.features.n_features)
        assert np.all(np.isfinite(short)) and not np.allclose(short, full)

    def test_no_trusted_speech_falls_back_to_the_first_span(self):
        """Sound the VAD does not take for speech is judged from its first span, undenoised."""
        first = first_speech_window(tone(4.0, 440.0, amplitude=0.01), CONFIG)
        assert not first.vad and first.noise == ()
        assert first.window.samples.size == CONFIG.features.window_samples

    def test_digital_silence_is_an_input_error(self):
        """Digital silence has no window at all."""
        with pytest.raises(InputError):
            first_speech_window(silence(2.0), CONFIG)


class TestScoring:
    def test_first_window_rows(self):
        """The row of each clip's first window, in row order."""
        rows = first_window_rows(np.array([3, 3, 5, 5, 5, 7]))
        np.testing.assert_array_equal(rows, [0, 2, 5])

    def test_single_window_scores_keep_the_argmax_under_any_temperature(self):
        """One window per clip: calibration changes the probabilities, never the label."""
        probs = np.array([[0.1, 0.6, 0.3] + [0.0] * 5, [0.5, 0.2, 0.3] + [0.0] * 5])
        probs = (probs + 1e-3) / (probs + 1e-3).sum(axis=1, keepdims=True)
        for temperature in (0.5, 1.0, 3.0):
            scores = single_window_scores(probs, np.array([4, 9]), np.array([1, 2]), temperature)
            np.testing.assert_array_equal(scores.y_pred, [1, 0])
            np.testing.assert_array_equal(scores.clip_ids, [4, 9])
            np.testing.assert_allclose(scores.calibrated.sum(axis=1), 1.0)

    def test_lone_fold_keeps_its_validation_temperature(self):
        """With one fold there is no other fold to fit on."""
        probs = np.full((3, 8), 1 / 8)
        assert cross_fitted_temperatures([probs], [np.zeros(3, int)], [1.7]) == [1.7]

    def test_folds_are_calibrated_on_the_other_folds(self):
        """Overconfident wrong windows in fold 2 raise fold 1's temperature, not fold 2's."""
        sure_right = np.tile(np.eye(8)[0] * 0.9 + 0.1 / 8, (20, 1))
        sure_wrong = np.tile(np.eye(8)[1] * 0.9 + 0.1 / 8, (20, 1))
        truth = np.zeros(20, int)
        first, second = cross_fitted_temperatures(
            [sure_right, sure_wrong], [truth, truth], [1.0, 1.0]
        )
        assert first > second

    def test_summary_and_table(self):
        """The mean averages the folds; the table has a mean row and a row per fold per view."""
        figures = [
            {"n": 10, "accuracy": a, "unweighted_accuracy": a, "macro_f1": a} for a in (0.4, 0.6)
        ]
        folds = [{"fold": k, "views": {v: figures[k - 1] for v in VIEWS}} for k in (1, 2)]
        mean = summarize(folds)
        assert mean["first_1.0s"]["accuracy"] == pytest.approx(0.5)
        table = format_table({"mean": mean, "folds": folds})
        assert table.count("mean") == len(VIEWS) and "50.0%" in table

    def test_cut_only_keeps_the_clips_each_cut_shortened(self):
        """Only clips whose first window reaches the cut length count for that cut."""
        from benchmarks.short_windows import _cut_only

        ids = np.array([10, 11, 12])
        truth = np.array([0, 1, 2])
        right, wrong = truth.copy(), np.array([0, 1, 0])
        predictions = {view: (ids, truth, right) for view in VIEWS}
        predictions["first_2.0s"] = (ids, truth, wrong)
        report = _cut_only(predictions, {10: 0.8, 11: 1.5, 12: 3.0})
        assert report["first_1.0s"]["first_1.0s"]["n"] == 2
        assert report["first_2.0s"]["first_2.0s"]["n"] == 1
        assert report["first_2.0s"]["first_2.0s"]["accuracy"] == 0.0
        assert report["first_2.0s"]["first_window"]["accuracy"] == 1.0
        table = format_table(
            {"mean": {}, "folds": [], "pooled_cut_only": {"first_2.0s": report["first_2.0s"]}}
        )
        assert "at least 2.0s" in table
