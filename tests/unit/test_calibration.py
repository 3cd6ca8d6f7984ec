"""Unit tests of temperature scaling, the expected calibration error and the confidence
threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.stages.model import apply_temperature
from ser_stream.train.calibration import (
    TEMPERATURE_RANGE,
    abstention_metrics,
    expected_calibration_error,
    fit_confidence_threshold,
    fit_temperature,
    negative_log_likelihood,
)


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from logits twice as sharp as the truth they were sampled from."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 8))
    true_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(8, p=p) for p in true_probs])
    sharp = np.exp(2 * logits)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


class TestApplyTemperature:
    def test_one_changes_nothing(self):
        """Temperature 1 returns the probabilities as they are."""
        p = np.array([[0.7, 0.2, 0.1]])
        np.testing.assert_allclose(apply_temperature(p, 1.0), p)

    def test_rows_still_sum_to_one_and_order_is_kept(self):
        """Scaling keeps each row a distribution and never changes the top label."""
        p = np.random.default_rng(1).dirichlet(np.ones(8), size=50)
        for t in (0.3, 2.0, 7.0):
            q = apply_temperature(p, t)
            np.testing.assert_allclose(q.sum(axis=1), 1.0)
            np.testing.assert_array_equal(q.argmax(axis=1), p.argmax(axis=1))

    def test_high_temperature_flattens(self):
        """Above 1 the top probability drops; below 1 it rises."""
        p = np.array([[0.6, 0.3, 0.1]])
        assert apply_temperature(p, 3.0)[0, 0] < 0.6 < apply_temperature(p, 0.5)[0, 0]


class TestFitTemperature:
    def test_recovers_the_sharpening_factor(self):
        """Probabilities twice too sharp are fitted with a temperature near 2."""
        probs, labels = overconfident()
        assert fit_temperature(probs, labels) == pytest.approx(2.0, rel=0.1)

    def test_fitted_temperature_lowers_nll_and_ece(self):
        """Calibration lowers both the log loss and the ECE of overconfident outputs."""
        probs, labels = overconfident(seed=2)
        t = fit_temperature(probs, labels)
        scaled = apply_temperature(probs, t)
        assert negative_log_likelihood(scaled, labels) < negative_log_likelihood(probs, labels)
        assert expected_calibration_error(scaled, labels) < 0.5 * expected_calibration_error(
            probs, labels
        )

    def test_all_correct_held_out_data_cannot_drive_it_to_certainty(self):
        """When every held-out prediction is right, the fit stops at the range's floor."""
        probs = np.tile([[0.6, 0.3, 0.1]], (50, 1))
        assert fit_temperature(probs, np.zeros(50, dtype=int)) == pytest.approx(
            TEMPERATURE_RANGE[0], rel=1e-3
        )

    def test_nothing_to_fit_on_gives_one(self):
        """With no held-out data the temperature stays 1."""
        assert fit_temperature(np.zeros((0, 8)), np.zeros(0, dtype=int)) == 1.0


class TestExpectedCalibrationError:
    def test_perfectly_calibrated_is_near_zero(self):
        """Labels drawn from the predicted probabilities give an ECE near 0."""
        rng = np.random.default_rng(3)
        probs = rng.dirichlet(np.ones(4) * 0.5, size=20000)
        labels = np.array([rng.choice(4, p=p) for p in probs])
        assert expected_calibration_error(probs, labels) < 0.02

    def test_always_sure_and_half_right_is_one_half(self):
        """Confidence 1.0 with 50% accuracy is an ECE of 0.5."""
        probs = np.tile([[1.0, 0.0]], (10, 1))
        labels = np.array([0, 1] * 5)
        assert expected_calibration_error(probs, labels) == pytest.approx(0.5)


def sure_of(
    tops: list[float], right: list[bool], classes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of label 0 with the given top probabilities; the label is 0 where right."""
    probs = np.array([[t] + [(1 - t) / (classes - 1)] * (classes - 1) for t in tops])
    return probs, np.array([0 if r else 1 for r in right])


@st.composite
def held_out(draw, min_size: int = 0):
    """Calibrated-looking probabilities and labels, of any size (empty included)."""
    n = draw(st.integers(min_size, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(4, draw(st.sampled_from([0.2, 1.0, 5.0]))), size=n)
    labels = np.array([rng.choice(4, p=p) for p in probs], dtype=int)
    return probs.reshape(n, 4), labels


class TestFitConfidenceThreshold:
    def test_smallest_threshold_reaching_the_precision(self):
        """The threshold is the lowest top probability whose predictions above are right often
        enough: here 0.6, above which 3 of 4 are right."""
        probs, labels = sure_of([0.3, 0.4, 0.6, 0.7, 0.8, 0.9], [True, False, False] + [True] * 3)
        t = fit_confidence_threshold(probs, labels, target_precision=0.75, min_coverage=0.2)
        assert t == pytest.approx(0.6)

    def test_everything_right_keeps_everything(self):
        """When the model is right enough everywhere, the threshold is its lowest top."""
        probs, labels = sure_of([0.3, 0.5, 0.9], [True, True, True])
        assert fit_confidence_threshold(probs, labels) == pytest.approx(0.3)

    def test_unreachable_precision_falls_back_to_the_best_with_enough_coverage(self):
        """No threshold gives 90% with half kept: the best precision among those keeping half
        wins (the two most confident are half right; 0.5 onwards is 2 of 3)."""
        probs, labels = sure_of([0.3, 0.4, 0.5, 0.8, 0.9], [False, False, True, True, False])
        t = fit_confidence_threshold(probs, labels, target_precision=0.9, min_coverage=0.5)
        assert t == pytest.approx(0.5)

    def test_coverage_floor_rules_out_a_precise_but_rare_threshold(self):
        """Only the single most confident prediction is right: too few to be kept alone."""
        probs, labels = sure_of([0.3, 0.4, 0.5, 0.6, 0.9], [False, True, False, False, True])
        strict = fit_confidence_threshold(probs, labels, target_precision=1.0, min_coverage=0.0)
        covered = fit_confidence_threshold(probs, labels, target_precision=1.0, min_coverage=0.4)
        assert strict == pytest.approx(0.9)
        assert covered == pytest.approx(0.4)  # 2 of 4 right: the best that keeps 40%

    def test_nothing_to_fit_on_means_always_confident(self):
        """Empty held-out data gives 0.0: every prediction confident."""
        assert fit_confidence_threshold(np.zeros((0, 8)), np.zeros(0, dtype=int)) == 0.0

    @pytest.mark.parametrize("options", [{"target_precision": 0.0}, {"min_coverage": 1.5}])
    def test_out_of_range_options_are_refused(self, options):
        """A precision outside (0, 1] or a coverage outside [0, 1] is a ValueError."""
        probs, labels = sure_of([0.5], [True])
        with pytest.raises(ValueError):
            fit_confidence_threshold(probs, labels, **options)

    @settings(max_examples=60, deadline=None)
    @given(held_out(min_size=1), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0, 1))
    def test_threshold_rises_with_the_target_precision(self, data, a, b, coverage):
        """Asking for more precision never lowers the threshold."""
        probs, labels = data
        low, high = sorted((a, b))
        fit = lambda p: fit_confidence_threshold(  # noqa: E731
            probs, labels, target_precision=p, min_coverage=coverage
        )
        assert fit(low) <= fit(high)

    @settings(max_examples=60, deadline=None)
    @given(held_out(min_size=1), st.floats(0.05, 1.0), st.floats(0, 1))
    def test_the_fit_keeps_its_coverage_and_is_one_of_the_tops(self, data, precision, coverage):
        """The threshold is an observed top probability and keeps at least ``min_coverage``."""
        probs, labels = data
        t = fit_confidence_threshold(
            probs, labels, target_precision=precision, min_coverage=coverage
        )
        assert t in set(probs.max(axis=1).tolist())
        assert abstention_metrics(probs, labels, t)["coverage"] >= coverage - 1e-9


class TestAbstentionMetrics:
    def test_counts_and_accuracies_of_the_confident_predictions(self):
        """Coverage, accuracies over the confident and over all, with their counts."""
        probs, labels = sure_of([0.3, 0.4, 0.6, 0.7, 0.8, 0.9], [True, False, False] + [True] * 3)
        metrics = abstention_metrics(probs, labels, 0.6)
        assert metrics["threshold"] == 0.6
        assert metrics["n"] == 6 and metrics["n_confident"] == 4
        assert metrics["coverage"] == pytest.approx(4 / 6)
        assert metrics["accuracy_confident"] == pytest.approx(0.75)
        assert metrics["accuracy_all"] == pytest.approx(4 / 6)

    def test_unweighted_accuracy_averages_the_recall_of_labels_present(self):
        """Label 0 recalled 3 of 3, label 1 recalled 0 of 1: unweighted 0.5, plain 0.75."""
        probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.9, 0.1]])
        metrics = abstention_metrics(probs, np.array([0, 0, 0, 1]), 0.5)
        assert metrics["unweighted_accuracy_confident"] == pytest.approx(0.5)
        assert metrics["accuracy_confident"] == pytest.approx(0.75)

    def test_nothing_confident_or_nothing_at_all(self):
        """Accuracies that cannot be measured are None, never NaN."""
        probs, labels = sure_of([0.3, 0.4], [True, False])
        none_sure = abstention_metrics(probs, labels, 0.95)
        assert none_sure["coverage"] == 0.0 and none_sure["accuracy_confident"] is None
        assert none_sure["unweighted_accuracy_confident"] is None
        assert none_sure["accuracy_all"] == pytest.approx(0.5)
        empty = abstention_metrics(np.zeros((0, 8)), np.zeros(0, dtype=int), 0.5)
        assert empty == {
            "threshold": 0.5,
            "coverage": 0.0,
            "accuracy_confident": None,
            "unweighted_accuracy_confident": None,
            "accuracy_all": None,
            "n": 0,
            "n_confident": 0,
        }

    @settings(max_examples=60, deadline=None)
    @given(held_out(), st.floats(0, 1))
    def test_coverage_and_accuracies_are_shares(self, data, threshold):
        """Coverage and every accuracy lie in [0, 1]; counts agree with coverage."""
        probs, labels = data
        metrics = abstention_metrics(probs, labels, threshold)
        assert 0.0 <= metrics["coverage"] <= 1.0
        assert metrics["n_confident"] <= metrics["n"] == len(labels)
        for key in ("accuracy_confident", "unweighted_accuracy_confident", "accuracy_all"):
            assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0

    @settings(max_examples=40, deadline=None)
    @given(held_out(min_size=1), st.floats(0, 1), st.floats(0, 1))
    def test_a_higher_threshold_never_covers_more(self, data, a, b):
        """Raising the threshold can only make fewer predictions confident."""
        probs, labels = data
        low, high = sorted((a, b))
        assert (
            abstention_metrics(probs, labels, high)["coverage"]
            <= abstention_metrics(probs, labels, low)["coverage"]
        )
