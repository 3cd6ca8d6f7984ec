"""Calibration of the speaker folds across folds: no fold is calibrated on its own speakers.

A fold's temperature and confidence threshold are fitted on the other folds' test windows,
so every figure stays speaker-independent; the pooled fits (on every fold) are the shipped
model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ser_stream.train.calibration import (
    abstention_metrics,
    fit_confidence_threshold,
    fit_temperature,
)
from ser_stream.train.scores import ClipScores

__all__ = [
    "FoldRun",
    "cross_fitted_abstention",
    "cross_fitted_temperatures",
    "pooled_temperature",
]


@dataclass(frozen=True)
class FoldRun:
    """One fold's model scored, before calibration across folds."""

    fold: int
    test_actors: tuple[int, ...]
    validation_temperature: float
    clean: ClipScores
    live: ClipScores
    channel: dict[str, ClipScores]
    room: dict | None = None


def pooled_temperature(runs: Sequence[FoldRun]) -> float:
    """The temperature fitted on every fold's test windows (1.0 without a fold)."""
    if not runs:
        return 1.0
    return fit_temperature(
        np.concatenate([r.clean.window_raw for r in runs]),
        np.concatenate([r.clean.window_true for r in runs]),
    )


def cross_fitted_temperatures(
    window_raw: Sequence[np.ndarray],
    window_true: Sequence[np.ndarray],
    validation_temperatures: Sequence[float],
) -> list[float]:
    """Each fold's temperature, fitted on the other folds' test windows.

    ``window_raw`` and ``window_true`` hold each fold's uncalibrated test window
    probabilities and labels. A lone fold keeps its validation temperature.
    """
    if len(window_raw) == 1:
        return [float(validation_temperatures[0])]
    temperatures = []
    for i in range(len(window_raw)):
        others = [k for k in range(len(window_raw)) if k != i]
        temperatures.append(
            fit_temperature(
                np.concatenate([window_raw[k] for k in others]),
                np.concatenate([window_true[k] for k in others]),
            )
        )
    return temperatures


def cross_fitted_abstention(
    runs: Sequence[FoldRun], temperatures: Sequence[float], scores: Sequence[ClipScores]
) -> dict:
    """How often the fold models say "uncertain".

    Each fold's threshold is fitted on the other folds' test windows; the pooled threshold
    on all of them, calibrated with the pooled temperature (the shipped model's).
    """
    windows = [run.clean.recalibrated(t) for run, t in zip(runs, temperatures, strict=True)]
    thresholds = []
    for k in range(len(runs)):
        others = [w for j, w in enumerate(windows) if j != k] or [windows[k]]
        thresholds.append(
            fit_confidence_threshold(
                np.concatenate([w.window_calibrated for w in others]),
                np.concatenate([w.window_true for w in others]),
            )
        )
    pooled = [run.clean.recalibrated(pooled_temperature(runs)) for run in runs]
    return {
        "method": "each fold's threshold on the calibrated top probability is fitted on the "
        "other folds' test windows (a shown label right 70% of the time, at least 20% shown)",
        "thresholds": [round(t, 4) for t in thresholds],
        "clips": _pooled_abstention([(s.calibrated, s.y_true) for s in scores], thresholds),
        "windows": _pooled_abstention(
            [(s.window_calibrated, s.window_true) for s in scores], thresholds
        ),
        "pooled_threshold": round(
            fit_confidence_threshold(
                np.concatenate([p.window_calibrated for p in pooled]),
                np.concatenate([p.window_true for p in pooled]),
            ),
            4,
        ),
    }


def _pooled_abstention(parts: Sequence[tuple[np.ndarray, np.ndarray]], thresholds) -> dict:
    """Abstention over several parts, each judged with its own threshold."""
    confident_rows, confident_true, total, right_all = [], [], 0, 0
    for (probabilities, truth), threshold in zip(parts, thresholds, strict=True):
        keep = probabilities.max(axis=1) >= threshold if len(truth) else np.zeros(0, bool)
        confident_rows.append(probabilities[keep])
        confident_true.append(truth[keep])
        total += len(truth)
        right_all += int((probabilities.argmax(axis=1) == truth).sum()) if len(truth) else 0
    rows, truth = np.concatenate(confident_rows), np.concatenate(confident_true)
    metrics = abstention_metrics(rows, truth, 0.0)
    return {
        "coverage": len(truth) / total if total else 0.0,
        "accuracy_confident": metrics["accuracy_confident"],
        "unweighted_accuracy_confident": metrics["unweighted_accuracy_confident"],
        "accuracy_all": right_all / total if total else None,
        "n": total,
        "n_confident": int(len(truth)),
    }
