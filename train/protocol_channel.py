"""Protocol ``channel``: the speaker folds' models on their test clips through channels.

The channel conditions (:mod:`ser_stream.train.channels`) are scored by the speaker
protocol's fold models, each against the same clips clean.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ser_stream.train.scores import ClipScores, classification_metrics

__all__ = ["channel_report"]


def channel_report(
    channel_scores: Mapping[str, list[ClipScores]],
    clean_scores: list[ClipScores],
    clean_folds: list[dict],
    descriptions: Mapping[str, str] | None = None,
    shared: Mapping[str, str] | None = None,
) -> dict:
    """Each condition against the same clips clean, judged by the same fold models."""
    conditions = {}
    clean_uas = []
    for clean in clean_scores:
        tried = next(iter(channel_scores.values()), [])
        ids = tried[len(clean_uas)].clip_ids if tried else clean.clip_ids
        same = clean.subset(np.isin(clean.clip_ids, ids))
        clean_uas.append(classification_metrics(same.y_true, same.y_pred)["unweighted_accuracy"])
    clean_ua = float(np.mean(clean_uas)) if clean_uas else 0.0
    for name, fold_scores in channel_scores.items():
        folds = []
        for fold, clean_fold_ua, shifted in zip(clean_folds, clean_uas, fold_scores, strict=True):
            result = classification_metrics(shifted.y_true, shifted.y_pred)
            result.update(fold=fold["fold"], clean_unweighted_accuracy=clean_fold_ua)
            folds.append(result)
        ua = float(np.mean([f["unweighted_accuracy"] for f in folds]))
        conditions[name] = {
            "description": (descriptions or {}).get(name, name),
            "shared_with_training": (shared or {}).get(name),
            "mean_unweighted_accuracy": ua,
            "loss_vs_clean": clean_ua - ua,
            "pooled": classification_metrics(
                np.concatenate([s.y_true for s in fold_scores]),
                np.concatenate([s.y_pred for s in fold_scores]),
            ),
            "folds": folds,
        }
    return {
        "protocol": "channel-shift",
        "description": "the channel clips of the speaker-independent folds' test speakers "
        "(RAVDESS statement 01 repetition 01, odd-numbered SAVEE sentences) through real "
        "codecs (ffmpeg), line filters of families training never uses, image-source rooms, "
        "room noise and a gain; scored by the same fold models against the same clips clean",
        "clean_mean_unweighted_accuracy": clean_ua,
        "conditions": conditions,
    }
