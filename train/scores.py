"""Clip scores and the metrics every evaluation protocol reports on them.

Every figure is clip-level unless it says otherwise: a clip is judged alone, as ``predict``
judges a file (its windows normalized by its own statistics, its label the mean of its
windows' calibrated probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from ser_stream.labels import LABELS, label_index
from ser_stream.stages.model import apply_temperature
from ser_stream.train.calibration import expected_calibration_error

__all__ = [
    "ClipScores",
    "calibration_report",
    "classification_metrics",
    "cross_corpus_metrics",
    "plot_confusion",
]

CALM = label_index("calm")
NEUTRAL = label_index("neutral")


@dataclass(frozen=True)
class ClipScores:
    """Scores of a set of clips.

    Attributes:
        clip_ids: the clips scored (those with at least one window).
        y_true: their labels.
        raw: ``(clips, labels)`` mean window probabilities before calibration.
        calibrated: the same after calibration (what ``predict`` reports).
        window_true: label of every window.
        window_raw: ``(windows, labels)`` window probabilities before calibration.
        window_calibrated: the same after calibration (what the live display shows).
        window_clip: the clip of every window.
    """

    clip_ids: np.ndarray
    y_true: np.ndarray
    raw: np.ndarray
    calibrated: np.ndarray
    window_true: np.ndarray
    window_raw: np.ndarray
    window_calibrated: np.ndarray
    window_clip: np.ndarray

    @classmethod
    def empty(cls) -> ClipScores:
        """No clip scored."""
        probabilities = np.zeros((0, len(LABELS)))
        ids = np.zeros(0, np.int64)
        return cls(ids, ids, probabilities, probabilities, ids, probabilities, probabilities, ids)

    @classmethod
    def concatenate(cls, parts: Sequence[ClipScores]) -> ClipScores:
        """The scores of several sets of clips, in order, as one."""
        return cls(
            *(np.concatenate([getattr(p, field.name) for p in parts]) for field in fields(cls))
        )

    @property
    def y_pred(self) -> np.ndarray:
        """Predicted label of each clip."""
        return self.calibrated.argmax(axis=1)

    def subset(self, keep: np.ndarray) -> ClipScores:
        """The scores of the clips where ``keep`` (one flag per scored clip) is set."""
        kept = set(self.clip_ids[keep].tolist())
        windows = np.array([c in kept for c in self.window_clip.tolist()], dtype=bool)
        return ClipScores(
            self.clip_ids[keep],
            self.y_true[keep],
            self.raw[keep],
            self.calibrated[keep],
            self.window_true[windows],
            self.window_raw[windows],
            self.window_calibrated[windows],
            self.window_clip[windows],
        )

    def recalibrated(self, temperature: float) -> ClipScores:
        """The same scores calibrated with another temperature."""
        window_calibrated = apply_temperature(self.window_raw, temperature)
        return replace(
            self,
            window_calibrated=window_calibrated,
            calibrated=clip_means(window_calibrated, self.window_clip, self.clip_ids),
        )


def clip_means(
    window_probs: np.ndarray, window_clip: np.ndarray, clip_ids: np.ndarray
) -> np.ndarray:
    """Mean window probabilities of each clip of ``clip_ids``, in that order."""
    position = {int(c): i for i, c in enumerate(clip_ids)}
    sums = np.zeros((len(clip_ids), window_probs.shape[1]))
    counts = np.zeros(len(clip_ids))
    rows = np.array([position[int(c)] for c in window_clip], dtype=np.int64)
    np.add.at(sums, rows, window_probs)
    np.add.at(counts, rows, 1)
    return sums / np.maximum(counts, 1)[:, None]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, unweighted (balanced) accuracy, macro-F1 and the confusion matrix."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    labels = list(range(len(LABELS)))
    present = sorted(set(y_true.tolist()))
    with warnings.catch_warnings():  # predictions outside the true labels are simply wrong
        warnings.simplefilter("ignore", UserWarning)
        unweighted = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "unweighted_accuracy": unweighted,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro"))
        if len(y_true)
        else 0.0,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(LABELS),
    }


def cross_corpus_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Strict metrics on the shared labels, and metrics with calm merged into neutral."""
    keep = y_true != CALM
    merged_true = np.where(y_true == CALM, NEUTRAL, y_true)
    merged_pred = np.where(y_pred == CALM, NEUTRAL, y_pred)
    return {
        "strict": classification_metrics(y_true[keep], y_pred[keep]),
        "calm_as_neutral": classification_metrics(merged_true, merged_pred),
    }


def calibration_report(scores: Sequence[ClipScores], temperatures: Sequence[float]) -> dict:
    """ECE before and after temperature scaling, over windows and over clips."""
    window_true = np.concatenate([s.window_true for s in scores])
    clip_true = np.concatenate([s.y_true for s in scores])

    def ece(probs: list[np.ndarray], truth: np.ndarray) -> float:
        return round(expected_calibration_error(np.concatenate(probs), truth), 4)

    return {
        "temperatures": [round(t, 3) for t in temperatures],
        "window_ece_before": ece([s.window_raw for s in scores], window_true),
        "window_ece_after": ece([s.window_calibrated for s in scores], window_true),
        "clip_ece_before": ece([s.raw for s in scores], clip_true),
        "clip_ece_after": ece([s.calibrated for s in scores], clip_true),
    }


def plot_confusion(confusion: list[list[int]], path, title: str) -> None:
    """Write a labelled confusion-matrix PNG (rows: true label, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            if matrix[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
