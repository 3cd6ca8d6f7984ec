"""Protocol ``corpus``: leave one corpus out, train on the others, test on the one left out."""

from __future__ import annotations

import numpy as np

from ser_stream.logs import get_logger
from ser_stream.stages.model import apply_temperature
from ser_stream.train.cache import WindowSet
from ser_stream.train.calibration import abstention_metrics, fit_confidence_threshold
from ser_stream.train.datasets import CORPORA, Clip
from ser_stream.train.evaluate import LIVE_SESSION_CLIPS, score_clips, train_split
from ser_stream.train.recipe import Recipe
from ser_stream.train.scores import calibration_report, cross_corpus_metrics

__all__ = ["CORPUS_VAL_SPEAKERS", "corpus_protocol", "tess_word_split"]

CORPUS_VAL_SPEAKERS: dict[str, tuple[str, ...]] = {
    "ravdess": ("ravdess-19", "ravdess-20"),
    "savee": ("savee-KL",),
}
"""Speakers held out of leave-one-corpus-out training, for early stopping and calibration,
when their corpus is on the training side (TESS, two speakers, keeps 10% of its words)."""

log = get_logger(component="evaluate")


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
            tess_train, val = tess_word_split(clips, tess, seed=recipe.train.seed)
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


def tess_word_split(
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
