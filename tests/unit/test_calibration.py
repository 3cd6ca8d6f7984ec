"""Unit tests of temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.stages.model import apply_temperature
from ser_stream.train.calibration import (
    TEMPERATURE_RANGE,
    expected_calibration_error,
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
