"""Calibrated probabilities: temperature scaling fitted on held-out speakers.

The expected calibration error (ECE) says whether probabilities mean what they say; the
confidence threshold says when the model should rather answer "uncertain".
"""

from __future__ import annotations

import numpy as np

from ser_stream.stages.model import apply_temperature

__all__ = [
    "TEMPERATURE_RANGE",
    "abstention_metrics",
    "expected_calibration_error",
    "fit_confidence_threshold",
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


_SLACK = 1e-12  # ratios such as 7/10 must count as reaching 0.7 despite rounding


def fit_confidence_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    target_precision: float = 0.7,
    min_coverage: float = 0.2,
) -> float:
    """The calibrated top probability below which a prediction is reported "uncertain".

    The threshold is the smallest top probability ``t`` observed in ``probabilities`` such
    that the predictions with top probability ``>= t`` are right at least
    ``target_precision`` of the time while keeping at least ``min_coverage`` of them. When no
    ``t`` reaches the precision with that coverage, it is the ``t`` of best precision among
    those keeping the coverage (the smallest such ``t`` on a tie).

    The defaults: a label shown is right at least 7 times in 10 on speakers the model never
    heard (chance is 1 in 8; the shipped model is right about half the time there), and
    the model still names an emotion for at least one window in five; below that the display
    would say "uncertain" nearly always, which tells the user nothing, so the bar is lowered
    to the best precision the model can reach instead.

    Args:
        probabilities: ``(n, classes)`` calibrated probabilities on held-out speakers.
        labels: ``(n,)`` true class indices.
        target_precision: share of confident predictions that must be right, in (0, 1].
        min_coverage: least share of predictions that must stay confident, in [0, 1].

    Returns:
        The threshold; 0.0 (every prediction confident) when there is nothing to fit on.

    Raises:
        ValueError: ``target_precision`` or ``min_coverage`` out of range.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision {target_precision} is not in (0, 1]")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage {min_coverage} is not in [0, 1]")
    n = len(labels)
    if n == 0:
        return 0.0
    confidence, correct = _top(probabilities, labels)
    order = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    candidates, first = np.unique(confidence, return_index=True)
    right_from = np.cumsum(correct[::-1])[::-1]  # right predictions from each position on
    kept = n - first
    precision = right_from[first] / kept
    allowed = kept / n >= min_coverage - _SLACK  # the lowest candidate keeps them all
    reaching = allowed & (precision >= target_precision - _SLACK)
    if reaching.any():
        return float(candidates[np.argmax(reaching)])
    best = np.flatnonzero(allowed)[np.argmax(precision[allowed])]
    return float(candidates[best])


def abstention_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """How predictions fare when those below ``threshold`` are reported "uncertain".

    Returns:
        ``threshold``; ``coverage``, the share of predictions that are confident (0.0 with
        none); ``accuracy_confident`` and ``unweighted_accuracy_confident`` (mean recall of
        the labels present among the confident predictions), None when none is confident;
        ``accuracy_all``, over every prediction (None with none); ``n``; ``n_confident``.
    """
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    n = len(labels)
    confidence, correct = _top(probabilities, labels)
    confident = confidence >= threshold
    n_confident = int(confident.sum())
    unweighted = None
    if n_confident:
        y_true = np.asarray(labels)[confident]
        y_pred = np.asarray(probabilities)[confident].argmax(axis=1)
        with warnings.catch_warnings():  # predictions outside the true labels are simply wrong
            warnings.simplefilter("ignore", UserWarning)
            unweighted = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "threshold": float(threshold),
        "coverage": n_confident / n if n else 0.0,
        "accuracy_confident": float(correct[confident].mean()) if n_confident else None,
        "unweighted_accuracy_confident": unweighted,
        "accuracy_all": float(correct.mean()) if n else None,
        "n": n,
        "n_confident": n_confident,
    }


def _top(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's top probability, and whether its top label is the true one."""
    if len(labels) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    probabilities = np.asarray(probabilities)
    return probabilities.max(axis=1), probabilities.argmax(axis=1) == np.asarray(labels)


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
