"""Calibrated probabilities: temperature scaling fitted on held-out speakers.

The expected calibration error (ECE) says whether probabilities mean what they say.
"""

from __future__ import annotations

import numpy as np

from ser_stream.stages.model import apply_temperature

__all__ = [
    "TEMPERATURE_RANGE",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
]

TEMPERATURE_RANGE = (0.5, 10.0)
"""Temperatures the fit may choose. Held-out data the model gets all right (TESS words held
out of TESS training, say) has its likelihood rise without end as the temperature falls;
the floor keeps such a fit from turning probabilities into certainties."""


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true labels."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the negative log-likelihood of ``labels``.

    Args:
        probabilities: ``(n, classes)`` model outputs on held-out data.
        labels: ``(n,)`` true class indices.

    Returns:
        The temperature, searched within :data:`TEMPERATURE_RANGE` (1.0 when there is
        nothing to fit on).
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    low, high = TEMPERATURE_RANGE
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(
            apply_temperature(probabilities, float(np.exp(log_t))), labels
        ),
        bounds=(np.log(low), np.log(high)),
        method="bounded",
    )
    return float(np.exp(result.x))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, *, bins: int = 15
) -> float:
    """Top-label ECE: the gap between confidence and accuracy.

    Averaged over equal-width bins of confidence, weighted by how many predictions fall in
    each.
    """
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(labels))
