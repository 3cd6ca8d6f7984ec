"""Training a model on one split of the clips, and scoring clips with it as ``predict`` does.

Every protocol (:mod:`ser_stream.train.protocol_seed`, ``protocol_speaker``,
``protocol_corpus``) trains its models with :func:`train_split`, which calibrates each on
held-out speakers, and judges them with :func:`score_clips`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ser_stream.labels import label_index
from ser_stream.logs import get_logger
from ser_stream.stages.model import apply_temperature
from ser_stream.train.cache import WindowSet
from ser_stream.train.calibration import expected_calibration_error, fit_temperature
from ser_stream.train.datasets import Clip
from ser_stream.train.recipe import Recipe
from ser_stream.train.scores import ClipScores, clip_means
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
    "CROSS_VAL_ACTORS",
    "LIVE_SESSION_CLIPS",
    "TrainedSplit",
    "clean_windows",
    "clip_labels",
    "score_clips",
    "train_split",
]

CROSS_VAL_ACTORS = (19, 20)
"""RAVDESS actors held out of cross-corpus (and final) training for early stopping and
calibration: one male, one female."""

LIVE_SESSION_CLIPS = 8
"""Clips per simulated live session when scoring how a warmed-up stream does."""

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
    labels = clip_labels(clips)
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
        val_set = clean_windows(windows, val_clips)
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
    labels = clip_labels(clips)
    chosen = clean_windows(windows, clip_ids)
    if not len(chosen.clip_index):
        return ClipScores.empty()
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
        clip_means(window_raw, chosen.clip_index, ids),
        np.zeros((len(ids), window_raw.shape[1])),
        labels[chosen.clip_index],
        window_raw,
        window_raw,
        chosen.clip_index,
    )
    return uncalibrated.recalibrated(split.temperature)


def clip_labels(clips: list[Clip]) -> np.ndarray:
    """The label index of every clip."""
    return np.array([label_index(c.label) for c in clips])


def clean_windows(windows: WindowSet, clip_ids: np.ndarray) -> WindowSet:
    """The clean windows (variant 0, no augmented copy) of ``clip_ids``."""
    return windows.select(np.isin(windows.clip_index, clip_ids) & (windows.variant == 0))


def _corpora(clips: list[Clip]) -> np.ndarray:
    names = sorted({c.corpus for c in clips})
    return np.array([names.index(c.corpus) for c in clips], dtype=np.int64)
