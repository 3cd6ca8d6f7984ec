"""Protocol ``room``: the speaker folds' test speakers heard as sessions in a room.

Each fold's model hears its test speakers the way ``up`` hears a stream
(:mod:`ser_stream.train.room_sessions`), beside the same clips judged alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ser_stream.labels import LABELS
from ser_stream.train.cache import WindowSet
from ser_stream.train.cross_fit import FoldRun
from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import TrainedSplit, clip_labels, score_clips
from ser_stream.train.scores import classification_metrics

__all__ = ["room_report", "room_run"]


def room_run(split: TrainedSplit, clips: list[Clip], windows: WindowSet, test: np.ndarray) -> dict:
    """A fold's test speakers heard as sessions in a room, beside the same clips alone.

    Both sides are uncalibrated mean window probabilities, so they compare like for like.
    """
    from ser_stream.train.room_sessions import predicted_labels, room_sessions

    analysis = split.recipe.analysis

    def scorer(matrices: np.ndarray) -> np.ndarray:
        x = split.normalizer.apply(matrices)
        return np.asarray(split.model.predict(x, batch_size=256, verbose=0), dtype=np.float64)

    labels = clip_labels(clips)
    ids, probabilities, stats = room_sessions(
        clips, test, analysis, scorer, seed=split.recipe.train.seed, n_labels=len(LABELS)
    )
    alone = score_clips(split, clips, windows, ids)
    position = {int(c): k for k, c in enumerate(alone.clip_ids)}
    alone_pred = np.array(
        [int(np.argmax(alone.raw[position[int(c)]])) if int(c) in position else -1 for c in ids]
    )
    first_look = stats.pop("first_look")
    return {
        "y_true": labels[ids],
        "room_pred": predicted_labels(probabilities),
        "first_pred": predicted_labels(first_look),
        "alone_pred": alone_pred,
        "stats": stats,
    }


def room_report(runs: Sequence[FoldRun]) -> dict:
    """The room report of the fold runs that heard their speakers in a room."""
    from ser_stream.train.room_sessions import LIVE_FIRST_WINDOW_S

    folds, levels = [], []
    for run in runs:
        heard = run.room
        room = classification_metrics(heard["y_true"], heard["room_pred"])
        alone = classification_metrics(heard["y_true"], heard["alone_pred"])
        folds.append(
            {
                "fold": run.fold,
                "room": room,
                "alone": {k: alone[k] for k in ("n", "accuracy", "unweighted_accuracy")},
                "missed": heard["stats"]["missed"],
            }
        )
        levels += heard["stats"]["levels_dbfs"]
    room_ua = float(np.mean([f["room"]["unweighted_accuracy"] for f in folds]))
    alone_ua = float(np.mean([f["alone"]["unweighted_accuracy"] for f in folds]))
    y_true = np.concatenate([r.room["y_true"] for r in runs])
    first = classification_metrics(y_true, np.concatenate([r.room["first_pred"] for r in runs]))
    return {
        "protocol": "sessions in a room",
        "description": "each test speaker's clips (at most 30) in one stream with 1-2 s of room "
        "noise between them and the same room under them (fan, hum, reversed babble of other "
        "test speakers; -60..-40 dBFS RMS), heard the way up hears it (the model's VAD with "
        "the live first window, denoise, features with stream normalization carried across "
        "the session); each clip judged by the windows that overlap it most, a clip no window "
        "heard counted wrong; beside the same clips judged alone (uncalibrated means on both "
        "sides)",
        "mean_unweighted_accuracy": room_ua,
        "alone_mean_unweighted_accuracy": alone_ua,
        "loss_vs_alone": alone_ua - room_ua,
        "clips": int(len(y_true)),
        "missed": int(sum(f["missed"] for f in folds)),
        "levels_dbfs": [min(levels), max(levels)] if levels else None,
        "pooled": classification_metrics(
            y_true, np.concatenate([r.room["room_pred"] for r in runs])
        ),
        "first_look": {k: first[k] for k in ("n", "accuracy", "unweighted_accuracy")},
        "first_look_description": "each clip judged by its first window alone: the live first "
        f"look, {LIVE_FIRST_WINDOW_S} s into the utterance (pooled over folds)",
        "folds": folds,
    }
