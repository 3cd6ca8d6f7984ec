"""Protocol ``seed``: a random, label-stratified split of all clips, as the original system.

Speakers appear on both sides of the split, so its figures compare with the original
system only, not with speaker-independent results.
"""

from __future__ import annotations

import numpy as np

from ser_stream.train.cache import WindowSet
from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import score_clips, train_split
from ser_stream.train.recipe import Recipe
from ser_stream.train.scores import calibration_report, classification_metrics

__all__ = ["seed_protocol"]


def seed_protocol(
    clips: list[Clip],
    windows: WindowSet,
    recipe: Recipe,
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> dict:
    """Random, label-stratified split of all clips (speakers leak across it, as in the seed)."""
    from sklearn.model_selection import train_test_split

    ids = np.arange(len(clips))
    names = [c.label for c in clips]
    seed = recipe.train.seed
    rest, test = train_test_split(ids, test_size=test_fraction, stratify=names, random_state=seed)
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=[names[i] for i in rest],
        random_state=seed,
    )
    split = train_split(clips, windows, train, val, recipe, progress=progress)
    test_scores = score_clips(split, clips, windows, test)
    val_scores = score_clips(split, clips, windows, val)
    return {
        "protocol": "seed",
        "description": "random split of clips ("
        + ", ".join(sorted({c.corpus for c in clips}))
        + f"), stratified by label: {len(train)} train / {len(val)} validation / "
        f"{len(test)} test clips; "
        "speakers appear on both sides",
        "test": classification_metrics(test_scores.y_true, test_scores.y_pred),
        "validation": classification_metrics(val_scores.y_true, val_scores.y_pred),
        "calibration": calibration_report([test_scores], [split.temperature]),
    }
