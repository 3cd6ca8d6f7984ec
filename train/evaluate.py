"""Evaluation protocols: seed, speaker-independent, cross-corpus and channel shift.

Every model is calibrated on held-out speakers.

Every figure is clip-level unless it says otherwise: a clip is judged alone, as ``predict``
judges a file (its windows normalized by its own statistics, its label the mean of its
windows' calibrated probabilities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ser_stream.labels import LABELS, label_index
from ser_stream.logs import get_logger
from ser_stream.stages.model import apply_temperature
from ser_stream.train.cache import WindowSet
from ser_stream.train.calibration import (
    abstention_metrics,
    expected_calibration_error,
    fit_confidence_threshold,
    fit_temperature,
)
from ser_stream.train.datasets import CORPORA, Clip
from ser_stream.train.recipe import Recipe
from ser_stream.train.streams import (
    normalize_per_clip,
    normalize_sessions,
    prior_statistics,
    speaker_sessions,
)
from ser_stream.train.training import (
    Normalizer,
    fit_normalizer,
    train_model,
)

__all__ = [
    "CORPUS_VAL_SPEAKERS",
    "CROSS_VAL_ACTORS",
    "EMOBOX_FOLDS",
    "OTHER_SPEAKER_FOLDS",
    "LIVE_SESSION_CLIPS",
    "ClipScores",
    "TrainedSplit",
    "calibration_report",
    "classification_metrics",
    "corpus_protocol",
    "cross_corpus_metrics",
    "plot_confusion",
    "score_clips",
    "seed_protocol",
    "speaker_fold",
    "speaker_protocol",
    "speaker_splits",
    "train_split",
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

OTHER_SPEAKER_FOLDS: dict[str, int] = {
    "savee-DC": 1,
    "savee-JE": 2,
    "savee-JK": 3,
    "savee-KL": 4,
    "tess-OAF": 5,
    "tess-YAF": 6,
}
"""The fold in which each speaker of the other corpora is tested (speaker protocol)."""

CORPUS_VAL_SPEAKERS: dict[str, tuple[str, ...]] = {
    "ravdess": ("ravdess-19", "ravdess-20"),
    "savee": ("savee-KL",),
}
"""Speakers held out of leave-one-corpus-out training, for early stopping and calibration,
when their corpus is on the training side (TESS, two speakers, keeps 10% of its words)."""

CROSS_VAL_ACTORS = (19, 20)
"""RAVDESS actors held out of cross-corpus (and final) training for early stopping and
calibration: one male, one female."""

LIVE_SESSION_CLIPS = 8
"""Clips per simulated live session when scoring how a warmed-up stream does."""

CALM = label_index("calm")
NEUTRAL = label_index("neutral")

log = get_logger(component="evaluate")


@dataclass(frozen=True)
class TrainedSplit:
    """A model trained on one split, with everything needed to score clips like ``predict``.

    Attributes:
        model: the Keras model.
        recipe: the recipe, its stream normalization carrying the training prior.
        normalizer: global standardization of the (stream-normalized) model input.
        temperature: calibration fitted on the validation speakers.
        val_ece: window-level ECE on the validation speakers, before and after calibration.
        val_probabilities: the model's window probabilities on the validation speakers.
        val_labels: their labels.
    """

    model: object
    recipe: Recipe
    normalizer: Normalizer
    temperature: float
    val_ece: tuple[float, float]
    val_probabilities: np.ndarray | None = None
    val_labels: np.ndarray | None = None


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

    @property
    def y_pred(self) -> np.ndarray:
        """Predicted label of each clip."""
        return self.calibrated.argmax(axis=1)

    def recalibrated(self, temperature: float) -> ClipScores:
        """The same scores calibrated with another temperature."""
        window_calibrated = apply_temperature(self.window_raw, temperature)
        return replace(
            self,
            window_calibrated=window_calibrated,
            calibrated=_clip_means(window_calibrated, self.window_clip, self.clip_ids),
        )


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


def train_split(
    clips: list[Clip],
    windows: WindowSet,
    train_clips: np.ndarray,
    val_clips: np.ndarray | None,
    recipe: Recipe,
    *,
    progress: bool = True,
) -> TrainedSplit:
    """Train on (all variants of) ``train_clips``; calibrate on clean ``val_clips``."""
    labels = _labels(clips)
    train_set = windows.select(np.isin(windows.clip_index, train_clips))
    normalize = recipe.analysis.normalize
    if normalize.enabled:
        normalize = normalize.with_prior(*prior_statistics(train_set.features))
    recipe = replace(recipe, analysis=replace(recipe.analysis, normalize=normalize))
    kinds = recipe.analysis.features.column_kinds
    x_train = normalize_per_clip(train_set, normalize, kinds)
    y_train = labels[train_set.clip_index]
    window_clips = train_set.clip_index
    if normalize.enabled and recipe.sessions:
        rng = np.random.default_rng(recipe.train.seed)
        variants = sorted(set(train_set.variant.tolist()))
        sessions = speaker_sessions(clips, train_clips, variants, rng, length=recipe.session_length)
        x_sessions, rows = normalize_sessions(train_set, sessions, normalize, kinds)
        x_train = np.concatenate([x_train, x_sessions])
        y_train = np.concatenate([y_train, labels[train_set.clip_index[rows]]])
        window_clips = np.concatenate([window_clips, train_set.clip_index[rows]])
    normalizer = fit_normalizer(x_train)
    val = val_set = None
    if val_clips is not None and len(val_clips):
        val_set = _clean(windows, val_clips)
        val = (
            normalizer.apply(normalize_per_clip(val_set, normalize, kinds)),
            labels[val_set.clip_index],
        )
    features = recipe.analysis.features
    model = train_model(
        (normalizer.apply(x_train), y_train),
        val,
        recipe.model,
        recipe.train,
        progress=progress,
        frame_s=features.hop_length / features.sample_rate,
        groups=_corpora(clips)[window_clips] if recipe.balance == "corpus" else None,
    )
    temperature, val_ece = 1.0, (float("nan"), float("nan"))
    window_probs = None
    if val is not None:
        window_probs = np.asarray(model.predict(val[0], batch_size=256, verbose=0))
        temperature = fit_temperature(window_probs, val[1])
        val_ece = (
            expected_calibration_error(window_probs, val[1]),
            expected_calibration_error(apply_temperature(window_probs, temperature), val[1]),
        )
        log.info("calibrated", temperature=round(temperature, 3), val_ece=val_ece)
    return TrainedSplit(
        model,
        recipe,
        normalizer,
        temperature,
        val_ece,
        window_probs,
        val[1] if val is not None else None,
    )


def score_clips(
    split: TrainedSplit,
    clips: list[Clip],
    windows: WindowSet,
    clip_ids: np.ndarray,
    *,
    session_length: int | None = None,
) -> ClipScores:
    """Score the clean windows of ``clip_ids`` in ``windows``.

    Each clip is judged alone, as ``predict`` judges a file; with ``session_length``, clips
    are instead heard as live sessions of that many clips of one speaker (random order), as
    ``up`` hears a speaker whose stream statistics have warmed up.
    """
    labels = _labels(clips)
    chosen = _clean(windows, clip_ids)
    if not len(chosen.clip_index):
        empty = np.zeros((0, len(LABELS)))
        none = np.zeros(0, np.int64)
        return ClipScores(none, none, empty, empty, none, empty, empty, none)
    normalize = split.recipe.analysis.normalize
    kinds = split.recipe.analysis.features.column_kinds
    if session_length:
        rng = np.random.default_rng(split.recipe.train.seed)
        sessions = speaker_sessions(clips, clip_ids, [0], rng, length=session_length)
        matrices, rows = normalize_sessions(chosen, sessions, normalize, kinds)
        chosen = chosen.select(rows)
    else:
        matrices = normalize_per_clip(chosen, normalize, kinds)
    x = split.normalizer.apply(matrices)
    window_raw = np.asarray(split.model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    present = set(chosen.clip_index.tolist())
    ids = np.asarray([i for i in clip_ids if i in present], dtype=np.int64)
    uncalibrated = ClipScores(
        ids,
        labels[ids],
        _clip_means(window_raw, chosen.clip_index, ids),
        np.zeros((len(ids), window_raw.shape[1])),
        labels[chosen.clip_index],
        window_raw,
        window_raw,
        chosen.clip_index,
    )
    return uncalibrated.recalibrated(split.temperature)


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
    :data:`OTHER_SPEAKER_FOLDS` assigns to it (and the RAVDESS-only figures are reported
    beside, comparable with EmoBox's folds); otherwise the other corpora are only ever on
    the training side (TESS with ``with_tess``). Early stopping uses two training
    actors (from the next fold), which are then left out of training. Each fold's
    calibration temperature is fitted on the other folds' test speakers (its validation
    actors' temperature is reported beside it). The same fold models are scored on every
    channel condition of ``channel_windows``.

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
        heard = _room_run(split, clips, windows, test) if room else None
        runs.append(
            _FoldRun(
                k,
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
        )
    temperatures = _cross_fitted_temperatures(runs)
    per_fold, scores = [], []
    channel_scores: dict[str, list[ClipScores]] = {name: [] for name in channel_windows or {}}
    for run, temperature in zip(runs, temperatures, strict=True):
        clean = run.clean.recalibrated(temperature)
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
        per_fold.append(fold_metrics)
        scores.append(clean)
        for name, shifted in run.channel.items():
            channel_scores[name].append(shifted.recalibrated(temperature))
    pooled = classification_metrics(
        np.concatenate([s.y_true for s in scores]), np.concatenate([s.y_pred for s in scores])
    )
    mean_ua = float(np.mean([f["unweighted_accuracy"] for f in per_fold]))
    validation = [run.clean.recalibrated(run.validation_temperature) for run in runs]
    calibration = calibration_report(scores, temperatures)
    calibration["abstention"] = _cross_fitted_abstention(runs, temperatures, scores)
    calibration.update(
        method="cross-fitted: each fold's temperature is fitted on the other folds' test "
        "speakers (window level); no fold is calibrated on its own test speakers",
        pooled_temperature=round(_fit_on(runs), 4),
        validation_temperatures=[round(run.validation_temperature, 3) for run in runs],
        validation_clip_ece_after=calibration_report(
            validation, [r.validation_temperature for r in runs]
        )["clip_ece_after"],
    )
    if all_speakers:
        description = (
            "six speaker-disjoint folds over every speaker of every corpus: EmoBox's RAVDESS "
            "actor folds (actors 01-20), each SAVEE speaker in one of folds 1-4 and each TESS "
            "speaker in fold 5 or 6; a fold's model never heard its test speakers"
        )
    else:
        description = (
            "EmoBox actor-disjoint folds over RAVDESS actors 01-20; "
            + (
                "TESS (both speakers) added to every training side, never tested; "
                if with_tess
                else ""
            )
            + "metrics on the RAVDESS test actors of each fold"
        )
    by_speaker = _per_speaker(clips, scores)
    by_corpus = {
        name: classification_metrics(part.y_true, part.y_pred)
        for name in sorted({clips[i].corpus for s in scores for i in s.clip_ids})
        for part in [_concatenated([_of_corpus(clips, s, name) for s in scores])]
    }
    speaker = {
        "protocol": "speaker-independent",
        "description": description,
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
        "mean_unweighted_accuracy": mean_ua,
        "mean_macro_f1": float(np.mean([f["macro_f1"] for f in per_fold])),
        "session_mean_unweighted_accuracy": float(
            np.mean([f["session"]["unweighted_accuracy"] for f in per_fold])
        ),
        "session_description": f"each test clip heard within a live session of "
        f"{LIVE_SESSION_CLIPS} clips of its speaker (stream statistics carried across them)",
        "pooled": pooled,
        "folds": per_fold,
        "calibration": calibration,
    }
    channel = None
    if channel_windows is not None:
        from ser_stream.train.channels import DESCRIPTIONS, SHARED_WITH_TRAINING

        channel = _channel_report(
            channel_scores, scores, per_fold, DESCRIPTIONS, SHARED_WITH_TRAINING
        )
    return speaker, channel, _room_report(runs) if room and runs else None


@dataclass(frozen=True)
class _FoldRun:
    """One fold's model scored, before calibration across folds."""

    fold: int
    test_actors: tuple[int, ...]
    validation_temperature: float
    clean: ClipScores
    live: ClipScores
    channel: dict[str, ClipScores]
    room: dict | None = None


def _cross_fitted_abstention(
    runs: Sequence[_FoldRun], temperatures: Sequence[float], scores: Sequence[ClipScores]
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
    pooled = [run.clean.recalibrated(_fit_on(runs)) for run in runs]
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


def _room_run(split: TrainedSplit, clips: list[Clip], windows: WindowSet, test: np.ndarray) -> dict:
    """A fold's test speakers heard as sessions in a room, beside the same clips alone.

    Both sides are uncalibrated mean window probabilities, so they compare like for like.
    """
    from ser_stream.train.room_sessions import predicted_labels, room_sessions

    analysis = split.recipe.analysis

    def scorer(matrices: np.ndarray) -> np.ndarray:
        x = split.normalizer.apply(matrices)
        return np.asarray(split.model.predict(x, batch_size=256, verbose=0), dtype=np.float64)

    labels = _labels(clips)
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


def _room_report(runs: Sequence[_FoldRun]) -> dict:
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


def _fit_on(runs: Sequence[_FoldRun]) -> float:
    if not runs:
        return 1.0
    return fit_temperature(
        np.concatenate([r.clean.window_raw for r in runs]),
        np.concatenate([r.clean.window_true for r in runs]),
    )


def _cross_fitted_temperatures(runs: list[_FoldRun]) -> list[float]:
    """Each fold's temperature, fitted on the other folds' test windows.

    A lone fold keeps its validation temperature.
    """
    if len(runs) == 1:
        return [runs[0].validation_temperature]
    return [_fit_on(runs[:i] + runs[i + 1 :]) for i in range(len(runs))]


def _channel_report(
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
        same = _select(clean, np.isin(clean.clip_ids, ids))
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


def corpus_protocol(
    clips: list[Clip], windows: WindowSet, recipe: Recipe, *, progress: bool = True
) -> dict:
    """Leave one corpus out: train on the others, test on every clip of the one left out.

    Early stopping and calibration use speakers of the training corpora held out of
    training (:data:`CORPUS_VAL_SPEAKERS`; TESS alone keeps 10% of its words).
    """
    corpus = np.array([c.corpus for c in clips])
    speaker = np.array([c.speaker for c in clips])
    names = [name for name in CORPORA if name in set(corpus.tolist())]
    report: dict = {
        "protocol": "leave-one-corpus-out",
        "description": "train on the other corpora, test on every clip of the one left out "
        "(other speakers, studio, language variety and sentences), on the 7 labels all "
        "corpora share: strict (calm predictions are errors, calm clips left out) and with "
        "calm counted as neutral; each clip judged alone, and (session) heard within a live "
        f"session of {LIVE_SESSION_CLIPS} clips of its speaker",
        "held_out": {},
    }
    for held_out in names:
        trains_on = [name for name in names if name != held_out]
        if not trains_on:
            continue
        side = np.flatnonzero(np.isin(corpus, trains_on))
        held = [s for name in trains_on for s in CORPUS_VAL_SPEAKERS.get(name, ())]
        val = side[np.isin(speaker[side], held)]
        train = side[~np.isin(speaker[side], held)]
        validation = sorted(set(speaker[val].tolist()))
        if not len(val):
            validation = ["10% of the TESS words"]
            # No held-out speaker in these corpora: TESS keeps 10% of its words instead.
            tess = side[corpus[side] == "tess"]
            tess_train, val = _tess_word_split(clips, tess, seed=recipe.train.seed)
            train = np.concatenate([side[corpus[side] != "tess"], tess_train])
        test = np.flatnonzero(corpus == held_out)
        log.info("leave one corpus out", held_out=held_out, train_clips=len(train))
        split = train_split(clips, windows, train, val, recipe, progress=progress)
        scores = score_clips(split, clips, windows, test)
        live = score_clips(split, clips, windows, test, session_length=LIVE_SESSION_CLIPS)
        threshold = (
            fit_confidence_threshold(
                apply_temperature(split.val_probabilities, split.temperature), split.val_labels
            )
            if split.val_probabilities is not None
            else 0.0
        )
        report["held_out"][held_out] = {
            "trained_on": trains_on,
            "abstention": {
                "method": "threshold fitted on the validation speakers' windows",
                "clips": abstention_metrics(scores.calibrated, scores.y_true, threshold),
                "windows": abstention_metrics(
                    scores.window_calibrated, scores.window_true, threshold
                ),
            },
            "validation_speakers": validation,
            **cross_corpus_metrics(scores.y_true, scores.y_pred),
            "session": cross_corpus_metrics(live.y_true, live.y_pred),
            "calibration": calibration_report([scores], [split.temperature]),
            "scores": scores,
        }
    results = report["held_out"].values()
    for mode in ("strict", "calm_as_neutral"):
        uas = [r[mode]["unweighted_accuracy"] for r in results]
        report[f"mean_{mode}_unweighted_accuracy"] = float(np.mean(uas)) if uas else None
        report[f"min_{mode}_unweighted_accuracy"] = float(np.min(uas)) if uas else None
    return report


def cross_corpus_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Strict metrics on the shared labels, and metrics with calm merged into neutral."""
    keep = y_true != CALM
    merged_true = np.where(y_true == CALM, NEUTRAL, y_true)
    merged_pred = np.where(y_pred == CALM, NEUTRAL, y_pred)
    return {
        "strict": classification_metrics(y_true[keep], y_pred[keep]),
        "calm_as_neutral": classification_metrics(merged_true, merged_pred),
    }


def speaker_fold(clip: Clip, folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS) -> int | None:
    """The fold (1-6) in which the speaker protocol tests ``clip``'s speaker."""
    if clip.actor is not None:
        return next((k + 1 for k, actors in enumerate(folds) if clip.actor in actors), None)
    return OTHER_SPEAKER_FOLDS.get(clip.speaker)


def speaker_splits(
    clips: list[Clip],
    folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS,
    *,
    with_tess: bool = True,
    all_speakers: bool = False,
) -> list[tuple[int, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
    """Clip indices of every fold: ``(fold, test_actors, train, validation, test)``.

    Without ``all_speakers`` a fold tests its RAVDESS actors only, and the other corpora
    (TESS with ``with_tess``) are always on the training side. With ``all_speakers`` every
    speaker of every corpus is tested in one fold: a fold also tests the speakers
    :data:`OTHER_SPEAKER_FOLDS` puts there, which no other fold trains on either.
    Folds none of whose speakers is in ``clips`` are left out (with a warning).
    """
    actors = np.array([c.actor or 0 for c in clips])
    corpus = np.array([c.corpus for c in clips])
    speakers = np.array([c.speaker for c in clips])
    splits = []
    for k, test_actors in enumerate(folds):
        val_actors = folds[(k + 1) % len(folds)][:2]
        is_test = np.isin(actors, test_actors)
        others = corpus != "ravdess"
        if all_speakers:
            fold_speakers = [s for s, f in OTHER_SPEAKER_FOLDS.items() if f == k + 1]
            is_test |= np.isin(speakers, fold_speakers)
            train_mask = ~is_test & ~np.isin(actors, val_actors)
        else:
            train_mask = ~others & ~is_test & ~np.isin(actors, val_actors)
            if with_tess:
                train_mask |= corpus == "tess"
        test = np.flatnonzero(is_test)
        if not len(test):
            log.warning("fold skipped: none of its speakers is in the data", fold=k + 1)
            continue
        val = np.flatnonzero(np.isin(actors, val_actors))
        splits.append((k + 1, test_actors, np.flatnonzero(train_mask), val, test))
    return splits


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


def _clip_means(
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


def _select(scores: ClipScores, keep: np.ndarray) -> ClipScores:
    """The scores of the clips where ``keep`` (one flag per scored clip) is set."""
    kept = set(scores.clip_ids[keep].tolist())
    windows = np.array([c in kept for c in scores.window_clip.tolist()], dtype=bool)
    return ClipScores(
        scores.clip_ids[keep],
        scores.y_true[keep],
        scores.raw[keep],
        scores.calibrated[keep],
        scores.window_true[windows],
        scores.window_raw[windows],
        scores.window_calibrated[windows],
        scores.window_clip[windows],
    )


def _of_corpus(clips: list[Clip], scores: ClipScores, corpus: str) -> ClipScores:
    return _select(scores, np.array([clips[i].corpus == corpus for i in scores.clip_ids], bool))


def _concatenated(parts: Sequence[ClipScores]) -> ClipScores:
    return ClipScores(*(np.concatenate([getattr(p, f) for p in parts]) for f in _SCORE_FIELDS))


_SCORE_FIELDS = (
    "clip_ids",
    "y_true",
    "raw",
    "calibrated",
    "window_true",
    "window_raw",
    "window_calibrated",
    "window_clip",
)


def _per_speaker(clips: list[Clip], scores: Sequence[ClipScores]) -> dict[str, dict]:
    """Clip metrics of every tested speaker."""
    joined = _concatenated(scores)
    speakers = np.array([clips[i].speaker for i in joined.clip_ids])
    return {
        name: classification_metrics(
            joined.y_true[speakers == name], joined.y_pred[speakers == name]
        )
        for name in sorted(set(speakers.tolist()))
    }


def _corpora(clips: list[Clip]) -> np.ndarray:
    names = sorted({c.corpus for c in clips})
    return np.array([names.index(c.corpus) for c in clips], dtype=np.int64)


def _labels(clips: list[Clip]) -> np.ndarray:
    return np.array([label_index(c.label) for c in clips])


def _clean(windows: WindowSet, clip_ids: np.ndarray) -> WindowSet:
    return windows.select(np.isin(windows.clip_index, clip_ids) & (windows.variant == 0))


def _tess_word_split(
    clips: list[Clip], tess: np.ndarray, *, seed: int, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Split TESS by word (each word's clips all on one side), ``share`` for validation."""
    if not len(tess):
        return tess, tess
    words = np.array([clips[i].path.stem.split("_")[1].lower() for i in tess])
    unique = np.unique(words)
    rng = np.random.default_rng(seed)
    # Too few words to spare any: no validation (training then stops on its own loss).
    held = set(rng.choice(unique, size=round(share * len(unique)), replace=False))
    is_val = np.array([w in held for w in words])
    return tess[~is_val], tess[is_val]
