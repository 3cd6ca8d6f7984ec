"""Protocol ``speaker``: speaker-disjoint folds, no speaker on both sides of a model.

The fold models are also the ones the ``channel`` and ``room`` protocols score
(:mod:`ser_stream.train.protocol_channel`, :mod:`ser_stream.train.protocol_room`), and they
are calibrated across folds (:mod:`ser_stream.train.cross_fit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ser_stream.logs import get_logger
from ser_stream.train.cache import WindowSet
from ser_stream.train.cross_fit import (
    FoldRun,
    cross_fitted_abstention,
    cross_fitted_temperatures,
    pooled_temperature,
)
from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import LIVE_SESSION_CLIPS, TrainedSplit, score_clips, train_split
from ser_stream.train.folds import EMOBOX_FOLDS, speaker_splits
from ser_stream.train.protocol_channel import channel_report
from ser_stream.train.protocol_room import room_report, room_run
from ser_stream.train.recipe import Recipe
from ser_stream.train.scores import ClipScores, calibration_report, classification_metrics

__all__ = ["speaker_protocol"]

log = get_logger(component="evaluate")


def speaker_protocol(
    clips: list[Clip],
    windows: WindowSet,
    recipe: Recipe,
    *,
    folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS,
    only: Sequence[int] | None = None,
    channel_windows: Mapping[str, WindowSet] | None = None,
    with_tess: bool = True,
    all_speakers: bool = False,
    room: bool = False,
    progress: bool = True,
) -> tuple[dict, dict | None, dict | None]:
    """EmoBox actor folds: test on a fold's RAVDESS actors, train on the other actors (+ TESS).

    With ``all_speakers`` each fold also tests the speakers of the other corpora that
    :data:`~ser_stream.train.folds.OTHER_SPEAKER_FOLDS` assigns to it (and the RAVDESS-only
    figures are reported beside, comparable with EmoBox's folds); otherwise the other
    corpora are only ever on the training side (TESS with ``with_tess``). Early stopping uses
    two training actors (from the next fold), which are then left out of training. Each
    fold's calibration temperature is fitted on the other folds' test speakers (its
    validation actors' temperature is reported beside it). The same fold models are scored
    on every channel condition of ``channel_windows``.

    With ``room`` the fold models also hear their test speakers as sessions in a room
    (:mod:`ser_stream.train.room_sessions`).

    Returns:
        ``(speaker, channel, room)``: the speaker-independent report, the channel-shift
        report (``None`` without ``channel_windows``) and the room-session report (``None``
        without ``room``).
    """
    runs = []
    splits = speaker_splits(clips, folds, with_tess=with_tess, all_speakers=all_speakers)
    for k, test_actors, train, val, test in splits:
        if only and k not in only:
            continue
        log.info("fold", fold=k, test_actors=test_actors, train_clips=len(train))
        split = train_split(clips, windows, train, val, recipe, progress=progress)
        runs.append(
            _scored_fold(split, k, test_actors, clips, windows, test, channel_windows, room)
        )
    temperatures = cross_fitted_temperatures(
        [run.clean.window_raw for run in runs],
        [run.clean.window_true for run in runs],
        [run.validation_temperature for run in runs],
    )
    per_fold, scores = [], []
    channel_scores: dict[str, list[ClipScores]] = {name: [] for name in channel_windows or {}}
    for run, temperature in zip(runs, temperatures, strict=True):
        clean = run.clean.recalibrated(temperature)
        per_fold.append(_fold_metrics(clips, run, clean, temperature))
        scores.append(clean)
        for name, shifted in run.channel.items():
            channel_scores[name].append(shifted.recalibrated(temperature))
    speaker = _speaker_report(clips, runs, temperatures, per_fold, scores, all_speakers, with_tess)
    channel = None
    if channel_windows is not None:
        from ser_stream.train.channels import DESCRIPTIONS, SHARED_WITH_TRAINING

        channel = channel_report(
            channel_scores, scores, per_fold, DESCRIPTIONS, SHARED_WITH_TRAINING
        )
    return speaker, channel, room_report(runs) if room and runs else None


def _scored_fold(
    split: TrainedSplit,
    fold: int,
    test_actors: tuple[int, ...],
    clips: list[Clip],
    windows: WindowSet,
    test: np.ndarray,
    channel_windows: Mapping[str, WindowSet] | None,
    room: bool,
) -> FoldRun:
    """One fold's model on its test clips: alone, live, through each channel, in a room."""
    heard = room_run(split, clips, windows, test) if room else None
    return FoldRun(
        fold,
        test_actors,
        split.temperature,
        score_clips(split, clips, windows, test),
        score_clips(split, clips, windows, test, session_length=LIVE_SESSION_CLIPS),
        {
            name: score_clips(split, clips, degraded, test)
            for name, degraded in (channel_windows or {}).items()
        },
        heard,
    )


def _fold_metrics(clips: list[Clip], run: FoldRun, clean: ClipScores, temperature: float) -> dict:
    """A fold's metrics, its RAVDESS actors' alone and its clips heard live."""
    fold_metrics = classification_metrics(clean.y_true, clean.y_pred)
    fold_metrics.update(
        test_actors=list(run.test_actors),
        test_speakers=sorted({clips[i].speaker for i in clean.clip_ids}),
        fold=run.fold,
    )
    ravdess = _of_corpus(clips, clean, "ravdess")
    fold_metrics["ravdess"] = classification_metrics(ravdess.y_true, ravdess.y_pred)
    live = run.live.recalibrated(temperature)
    fold_metrics["session"] = classification_metrics(live.y_true, live.y_pred)
    log.info(
        "fold done",
        fold=run.fold,
        accuracy=round(fold_metrics["accuracy"], 4),
        unweighted_accuracy=round(fold_metrics["unweighted_accuracy"], 4),
    )
    return fold_metrics


def _speaker_report(
    clips: list[Clip],
    runs: list[FoldRun],
    temperatures: list[float],
    per_fold: list[dict],
    scores: list[ClipScores],
    all_speakers: bool,
    with_tess: bool,
) -> dict:
    """The speaker-independent report: per fold, speaker and corpus, pooled, calibration."""
    by_speaker = _per_speaker(clips, scores)
    by_corpus = {
        name: classification_metrics(part.y_true, part.y_pred)
        for name in sorted({clips[i].corpus for s in scores for i in s.clip_ids})
        for part in [ClipScores.concatenate([_of_corpus(clips, s, name) for s in scores])]
    }
    return {
        "protocol": "speaker-independent",
        "description": _description(all_speakers, with_tess),
        "all_speakers": all_speakers,
        "speaker_mean_unweighted_accuracy": float(
            np.mean([m["unweighted_accuracy"] for m in by_speaker.values()])
        ),
        "emobox_ravdess_mean_unweighted_accuracy": float(
            np.mean([f["ravdess"]["unweighted_accuracy"] for f in per_fold if f["ravdess"]["n"]])
        )
        if any(f["ravdess"]["n"] for f in per_fold)
        else None,
        "corpora": by_corpus,
        "speakers": {
            name: {k: m[k] for k in ("n", "accuracy", "unweighted_accuracy")}
            for name, m in by_speaker.items()
        },
        "mean_accuracy": float(np.mean([f["accuracy"] for f in per_fold])),
        "mean_unweighted_accuracy": float(np.mean([f["unweighted_accuracy"] for f in per_fold])),
        "mean_macro_f1": float(np.mean([f["macro_f1"] for f in per_fold])),
        "session_mean_unweighted_accuracy": float(
            np.mean([f["session"]["unweighted_accuracy"] for f in per_fold])
        ),
        "session_description": f"each test clip heard within a live session of "
        f"{LIVE_SESSION_CLIPS} clips of its speaker (stream statistics carried across them)",
        "pooled": classification_metrics(
            np.concatenate([s.y_true for s in scores]), np.concatenate([s.y_pred for s in scores])
        ),
        "folds": per_fold,
        "calibration": _calibration(runs, temperatures, scores),
    }


def _calibration(runs: list[FoldRun], temperatures: list[float], scores: list[ClipScores]) -> dict:
    """ECE of the cross-fitted temperatures, abstention, and the fits they are weighed with."""
    validation = [run.clean.recalibrated(run.validation_temperature) for run in runs]
    calibration = calibration_report(scores, temperatures)
    calibration["abstention"] = cross_fitted_abstention(runs, temperatures, scores)
    calibration.update(
        method="cross-fitted: each fold's temperature is fitted on the other folds' test "
        "speakers (window level); no fold is calibrated on its own test speakers",
        pooled_temperature=round(pooled_temperature(runs), 4),
        validation_temperatures=[round(run.validation_temperature, 3) for run in runs],
        validation_clip_ece_after=calibration_report(
            validation, [r.validation_temperature for r in runs]
        )["clip_ece_after"],
    )
    return calibration


def _description(all_speakers: bool, with_tess: bool) -> str:
    if all_speakers:
        return (
            "six speaker-disjoint folds over every speaker of every corpus: EmoBox's RAVDESS "
            "actor folds (actors 01-20), each SAVEE speaker in one of folds 1-4 and each TESS "
            "speaker in fold 5 or 6; a fold's model never heard its test speakers"
        )
    return (
        "EmoBox actor-disjoint folds over RAVDESS actors 01-20; "
        + ("TESS (both speakers) added to every training side, never tested; " if with_tess else "")
        + "metrics on the RAVDESS test actors of each fold"
    )


def _per_speaker(clips: list[Clip], scores: Sequence[ClipScores]) -> dict[str, dict]:
    """Clip metrics of every tested speaker."""
    joined = ClipScores.concatenate(scores)
    speakers = np.array([clips[i].speaker for i in joined.clip_ids])
    return {
        name: classification_metrics(
            joined.y_true[speakers == name], joined.y_pred[speakers == name]
        )
        for name in sorted(set(speakers.tolist()))
    }


def _of_corpus(clips: list[Clip], scores: ClipScores, corpus: str) -> ClipScores:
    return scores.subset(np.array([clips[i].corpus == corpus for i in scores.clip_ids], bool))
