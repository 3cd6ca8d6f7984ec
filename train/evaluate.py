"""Evaluation protocols: the seed protocol (random split) and speaker-independent folds.

Every figure is clip-level: a clip's label is the mean of its windows' probabilities, as
``predict`` gives for a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_stream.labels import LABELS, label_index
from ser_stream.logs import get_logger
from ser_stream.models.lstm import ModelConfig
from ser_stream.train.cache import WindowSet
from ser_stream.train.datasets import Clip
from ser_stream.train.training import (
    Normalizer,
    TrainConfig,
    clip_probabilities,
    fit_normalizer,
    train_model,
)

__all__ = [
    "EMOBOX_FOLDS",
    "SplitResult",
    "classification_metrics",
    "plot_confusion",
    "run_split",
    "seed_protocol",
    "speaker_protocol",
    "speaker_splits",
]

EMOBOX_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20),
    (4, 10, 12, 14),
    (8, 9, 19),
    (3, 5, 7),
    (2, 15, 16, 18),
    (6, 13, 17),
)
"""EmoBox's actor-disjoint RAVDESS test folds, restricted to actors 01-20."""

log = get_logger(component="evaluate")


@dataclass(frozen=True)
class SplitResult:
    """The outcome of one train/test split."""

    model: object
    normalizer: Normalizer
    test_true: np.ndarray
    test_pred: np.ndarray
    val_true: np.ndarray | None = None
    val_pred: np.ndarray | None = None


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, unweighted (balanced) accuracy, macro-F1 and the confusion matrix."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    labels = list(range(len(LABELS)))
    present = sorted(set(y_true.tolist()))
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "unweighted_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro")),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(LABELS),
    }


def run_split(
    clips: list[Clip],
    windows: WindowSet,
    train_clips: np.ndarray,
    test_clips: np.ndarray,
    val_clips: np.ndarray | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
) -> SplitResult:
    """Train on (all variants of) ``train_clips``, score clean ``test_clips`` and ``val_clips``."""
    labels = np.array([label_index(c.label) for c in clips])
    in_train = np.isin(windows.clip_index, train_clips)
    train_set = windows.select(in_train)
    normalizer = fit_normalizer(train_set.features)
    x_train = normalizer.apply(train_set.features)
    y_train = labels[train_set.clip_index]
    val = None
    if val_clips is not None and len(val_clips):
        val_set = windows.select(np.isin(windows.clip_index, val_clips) & (windows.variant == 0))
        val = (normalizer.apply(val_set.features), labels[val_set.clip_index])
    model = train_model((x_train, y_train), val, model_config, train_config, progress=progress)

    def score(clip_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = windows.select(np.isin(windows.clip_index, clip_ids) & (windows.variant == 0))
        if not len(chosen.clip_index):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        probs = model.predict(normalizer.apply(chosen.features), batch_size=256, verbose=0)
        per_clip, has = clip_probabilities(probs, chosen, len(clips))
        ids = np.asarray([i for i in clip_ids if has[i]], dtype=np.int64)
        return labels[ids], per_clip[ids].argmax(axis=1)

    test_true, test_pred = score(test_clips)
    val_true = val_pred = None
    if val_clips is not None and len(val_clips):
        val_true, val_pred = score(val_clips)
    return SplitResult(model, normalizer, test_true, test_pred, val_true, val_pred)


def seed_protocol(
    clips: list[Clip],
    windows: WindowSet,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> dict:
    """Random, label-stratified split of all clips (speakers leak across it, as in the seed)."""
    from sklearn.model_selection import train_test_split

    ids = np.arange(len(clips))
    labels = [c.label for c in clips]
    rest, test = train_test_split(
        ids, test_size=test_fraction, stratify=labels, random_state=train_config.seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=[labels[i] for i in rest],
        random_state=train_config.seed,
    )
    result = run_split(
        clips, windows, train, test, val, model_config, train_config, progress=progress
    )
    return {
        "protocol": "seed",
        "description": "random split of clips (RAVDESS actors 01-20 + TESS), stratified by "
        f"label: {len(train)} train / {len(val)} validation / {len(test)} test clips; "
        "speakers appear on both sides",
        "test": classification_metrics(result.test_true, result.test_pred),
        "validation": classification_metrics(result.val_true, result.val_pred),
    }


def speaker_protocol(
    clips: list[Clip],
    windows: WindowSet,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS,
    with_tess: bool = True,
    progress: bool = True,
) -> dict:
    """EmoBox actor folds: test on a fold's RAVDESS actors, train on the other actors (+ TESS).

    TESS speakers are only ever on the training side. Early stopping watches two training
    actors (from the next fold), which are then left out of training.
    """
    per_fold = []
    all_true, all_pred = [], []
    for k, test_actors, train, val, test in speaker_splits(clips, folds, with_tess=with_tess):
        log.info("fold", fold=k, test_actors=test_actors, train_clips=len(train))
        result = run_split(
            clips, windows, train, test, val, model_config, train_config, progress=progress
        )
        fold_metrics = classification_metrics(result.test_true, result.test_pred)
        fold_metrics["test_actors"] = list(test_actors)
        log.info(
            "fold done",
            fold=k,
            accuracy=round(fold_metrics["accuracy"], 4),
            unweighted_accuracy=round(fold_metrics["unweighted_accuracy"], 4),
        )
        per_fold.append(fold_metrics)
        all_true.append(result.test_true)
        all_pred.append(result.test_pred)
    pooled = classification_metrics(np.concatenate(all_true), np.concatenate(all_pred))
    return {
        "protocol": "speaker-independent",
        "description": "EmoBox actor-disjoint folds over RAVDESS actors 01-20; "
        + ("TESS (both speakers) added to every training side, never tested; " if with_tess else "")
        + "metrics on the RAVDESS test actors of each fold",
        "mean_accuracy": float(np.mean([f["accuracy"] for f in per_fold])),
        "mean_unweighted_accuracy": float(np.mean([f["unweighted_accuracy"] for f in per_fold])),
        "mean_macro_f1": float(np.mean([f["macro_f1"] for f in per_fold])),
        "pooled": pooled,
        "folds": per_fold,
    }


def speaker_splits(
    clips: list[Clip], folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS, *, with_tess: bool = True
) -> list[tuple[int, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
    """Clip indices of every fold: ``(fold, test_actors, train, validation, test)``.

    Folds none of whose actors is in ``clips`` are left out (with a warning).
    """
    actors = np.array([c.actor or 0 for c in clips])
    is_tess = np.array([c.corpus == "tess" for c in clips])
    splits = []
    for k, test_actors in enumerate(folds):
        val_actors = folds[(k + 1) % len(folds)][:2]
        test = np.flatnonzero(np.isin(actors, test_actors))
        if not len(test):
            log.warning("fold skipped: none of its actors is in the data", fold=k + 1)
            continue
        val = np.flatnonzero(np.isin(actors, val_actors))
        train_mask = ~is_tess & (actors > 0) & ~np.isin(actors, test_actors + val_actors)
        if with_tess:
            train_mask |= is_tess
        splits.append((k + 1, test_actors, np.flatnonzero(train_mask), val, test))
    return splits


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
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
