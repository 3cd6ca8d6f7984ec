"""The training and evaluation jobs behind ``ser-stream train`` and ``ser-stream evaluate``."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ser_stream.errors import InputError
from ser_stream.logs import get_logger
from ser_stream.stages.model import apply_temperature
from ser_stream.train.cache import WindowSet, cache_dir, clip_windows
from ser_stream.train.calibration import expected_calibration_error, fit_confidence_threshold
from ser_stream.train.channels import CONDITIONS
from ser_stream.train.datasets import CORPORA, Clip, data_root, load_corpora
from ser_stream.train.evaluate import CROSS_VAL_ACTORS, train_split
from ser_stream.train.export import write_artifact
from ser_stream.train.folds import speaker_fold
from ser_stream.train.model_card import write_model_card
from ser_stream.train.protocol_corpus import corpus_protocol
from ser_stream.train.protocol_seed import seed_protocol
from ser_stream.train.protocol_speaker import speaker_protocol
from ser_stream.train.recipe import Recipe
from ser_stream.train.scores import plot_confusion
from ser_stream.train.streams import fold_babble, same_speaker_babble

__all__ = ["PROTOCOLS", "channel_clips", "evaluate_model", "evaluate_protocols", "train_default"]

PROTOCOLS = ("seed", "speaker", "corpus", "channel", "room")
"""Evaluation protocols, in report order (``all`` runs every one)."""

MAX_ACTOR = 20
"""RAVDESS actors above this one are never used for training or evaluation folds."""

log = get_logger(component="train")


def _clips(data: str | None, recipe: Recipe) -> list[Clip]:
    clips = load_corpora(data_root(data), recipe.corpora)
    # Actors 21-24 are the corpus' unseen-speaker hold-out: never trained or tuned on.
    held_out = [c for c in clips if (c.actor or 0) > MAX_ACTOR]
    clips = [c for c in clips if (c.actor or 0) <= MAX_ACTOR]
    log.info("clips", count=len(clips), held_out_actors_21_24=len(held_out))
    return clips


def _windows(
    clips: list[Clip], recipe: Recipe, cache: str | None, workers: int | None
) -> WindowSet:
    augmentation = recipe.augment
    uses_babble = augmentation is not None and "babble" in augmentation.noise_kinds
    return clip_windows(
        clips,
        recipe.analysis,
        augmentation=augmentation,
        babble=same_speaker_babble(clips, seed=recipe.train.seed) if uses_babble else None,
        seed=recipe.train.seed,
        workers=workers or min(2, os.cpu_count() or 1),
        cache=cache_dir(cache),
    )


def channel_clips(clips: list[Clip]) -> np.ndarray:
    """The clips the channel conditions are tried on.

    One rendition of each RAVDESS sentence and emotion (statement 01, repetition 01: 15
    per actor) and every other SAVEE sentence.

    A subset, because every condition is a whole pass of feature extraction (and of ffmpeg);
    it keeps every speaker and label of both corpora. TESS, one carrier phrase, is left out.
    """
    keep = []
    for i, clip in enumerate(clips):
        stem = clip.path.stem
        if clip.corpus == "ravdess" and stem.split("-")[4:6] == ["01", "01"]:
            keep.append(i)
        elif clip.corpus == "savee" and int(stem[-2:]) % 2 == 1:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _channel_windows(
    clips: list[Clip], recipe: Recipe, cache: str | None, workers: int | None
) -> dict[str, WindowSet]:
    """The channel clips (:func:`channel_clips`) through every channel condition."""
    ids = channel_clips(clips)
    subset = [clips[i] for i in ids]
    babble = fold_babble(subset, speaker_fold)
    result = {}
    for name in CONDITIONS:
        windows = clip_windows(
            subset,
            recipe.analysis,
            condition=name,
            babble=babble if name == "noise" else None,
            seed=recipe.train.seed,
            workers=workers or min(2, os.cpu_count() or 1),
            cache=cache_dir(cache),
        )
        result[name] = replace(windows, clip_index=ids[windows.clip_index])
    return result


def train_default(
    recipe: Recipe,
    *,
    data: str | None = None,
    out: Path,
    cache: str | None = None,
    workers: int | None = None,
    calibration_from: Path | None = None,
) -> Path:
    """Train the shipped model and write its artifact to ``out``.

    Training uses RAVDESS actors 01-20 and TESS, except two RAVDESS actors
    (:data:`CROSS_VAL_ACTORS`) kept for early stopping and calibration. The temperature is
    fitted on those two actors, or taken from ``calibration_from``: the ``metrics.json`` of
    a speaker-independent evaluation of the same recipe, whose fold models were calibrated
    on all 20 RAVDESS actors as unseen speakers (a far larger sample than two actors).
    """
    started = time.time()
    clips = _clips(data, recipe)
    windows = _windows(clips, recipe, cache, workers)
    actors = np.array([c.actor or 0 for c in clips])
    val = np.flatnonzero(np.isin(actors, CROSS_VAL_ACTORS))
    train = np.setdiff1d(np.arange(len(clips)), val)
    split = train_split(clips, windows, train, val, recipe)
    training = {
        "recipe": recipe.to_dict(),
        "data": {
            "corpora": sorted({c.corpus for c in clips}),
            "clips": int(len(train)),
            "speakers": len({clips[i].speaker for i in train}),
            "windows": int(np.isin(windows.clip_index, train).sum()),
            "validation_actors": list(CROSS_VAL_ACTORS),
        },
        "model": recipe.model.to_dict(),
        "optimizer": recipe.train.to_dict(),
        "augmentation": recipe.augment.to_dict() if recipe.augment else None,
        "seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    held_out = ", ".join(f"{a:02d}" for a in CROSS_VAL_ACTORS)
    temperature, fitted_on = split.temperature, f"RAVDESS actors {held_out} (held out of training)"
    threshold, threshold_on = None, fitted_on
    if split.val_probabilities is not None:
        calibrated = apply_temperature(split.val_probabilities, temperature)
        threshold = fit_confidence_threshold(calibrated, split.val_labels)
    if calibration_from is not None:
        temperature, fitted_on, pooled_threshold = _pooled_calibration(calibration_from, recipe)
        if pooled_threshold is not None:
            threshold, threshold_on = pooled_threshold, fitted_on
    calibration = {
        "temperature": temperature,
        "fitted_on": fitted_on + ", window level",
        "confidence_threshold": threshold,
        "confidence_threshold_fitted_on": threshold_on
        + ", window level: the calibrated top probability from which a shown label was right "
        "70% of the time",
    }
    if split.val_probabilities is not None:
        probs, labels = split.val_probabilities, split.val_labels
        calibration.update(
            validation_actors=list(CROSS_VAL_ACTORS),
            validation_window_ece_before=expected_calibration_error(probs, labels),
            validation_window_ece_after=expected_calibration_error(
                apply_temperature(probs, temperature), labels
            ),
        )
    write_artifact(
        out,
        split.model,
        split.recipe.analysis,
        split.normalizer,
        training=training,
        calibration=calibration,
    )
    write_model_card(out)
    return out


def _pooled_calibration(metrics_path: Path, recipe: Recipe) -> tuple[float, str, float | None]:
    """The pooled temperature and confidence threshold of an evaluation of ``recipe``.

    Evaluations made before thresholds existed give none.
    """
    metrics = json.loads(Path(metrics_path).read_text())
    evaluated = metrics.get("recipe", {}).get("name")
    speaker = metrics.get("speaker", {})
    if evaluated != recipe.name or "pooled_temperature" not in speaker.get("calibration", {}):
        raise InputError(
            f"{metrics_path}: no speaker-independent calibration of recipe {recipe.name!r} "
            f"(found {evaluated!r}); run ser-stream evaluate --recipe {recipe.name} "
            "--protocol speaker first"
        )
    folds = len(speaker["folds"])
    tested = "every speaker" if speaker.get("all_speakers") else "every RAVDESS actor 01-20"
    threshold = speaker["calibration"].get("abstention", {}).get("pooled_threshold")
    return (
        float(speaker["calibration"]["pooled_temperature"]),
        f"the test windows of the {folds} speaker-independent fold models of recipe "
        f"{recipe.name} ({tested} unseen by the model that scored it; "
        f"{metrics_path.name} of that evaluation)",
        None if threshold is None else float(threshold),
    )


def evaluate_protocols(
    protocols: Sequence[str],
    recipe: Recipe,
    *,
    data: str | None = None,
    out: Path,
    cache: str | None = None,
    workers: int | None = None,
    folds: Sequence[int] | None = None,
    command: str = "ser-stream evaluate",
) -> dict[str, dict]:
    """Run the named protocols (see :data:`PROTOCOLS`); store metrics and plots in ``out``.

    ``speaker`` and ``channel`` share the fold models: asked together, each fold is trained
    once. ``folds`` limits both to some EmoBox folds (1-6), for quick comparisons.
    """
    clips = _clips(data, recipe)
    windows = _windows(clips, recipe, cache, workers)
    # Before any model is trained: the feature workers are forked, and a process forked
    # once TensorFlow has started its threads can die on one of its locks.
    channel_windows = (
        _channel_windows(clips, recipe, cache, workers) if "channel" in protocols else None
    )
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["recipe"] = recipe.to_dict()
    results: dict[str, dict] = {}

    def store(name: str, result: dict) -> None:
        result["command"] = f"{command} --protocol {name}"
        results[name] = metrics[name] = result
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    if "seed" in protocols:
        store("seed", seed_protocol(clips, windows, recipe))
        _plot(out, "seed", metrics["seed"]["test"]["confusion"])
    if {"speaker", "channel", "room"} & set(protocols):
        speaker, channel, room = speaker_protocol(
            clips,
            windows,
            recipe,
            only=folds,
            channel_windows=channel_windows,
            all_speakers=True,
            room="room" in protocols,
        )
        if folds:
            speaker["only_folds"] = list(folds)
        store("speaker", speaker)
        _plot(out, "speaker", speaker["pooled"]["confusion"])
        if channel is not None:
            store("channel", channel)
            for name, condition in channel["conditions"].items():
                _plot(out, f"channel_{name}", condition["pooled"]["confusion"], name)
        if room is not None:
            store("room", room)
            _plot(out, "room", room["pooled"]["confusion"])
    if "corpus" in protocols:
        corpus = corpus_protocol(clips, windows, recipe)
        for name, held_out in corpus["held_out"].items():
            held_out.pop("scores", None)
            _plot(out, f"corpus_{name}", held_out["calm_as_neutral"]["confusion"], name)
        store("corpus", corpus)
    write_model_card(out)
    return results


def evaluate_model(model: Path, *, data: str | None = None, out: Path, room: bool = True) -> dict:
    """Judge a trained artifact on every corpus it never trained on; store it as ``baseline``.

    Raises:
        InputError: the artifact trained on every corpus there is.
    """
    from ser_stream.train.artifact_eval import evaluate_artifact, trained_corpora

    seen = set(trained_corpora(model))
    unseen = tuple(name for name in CORPORA if name not in seen)
    if not unseen:
        raise InputError(
            f"{model} trained on every corpus ({', '.join(sorted(seen))}): there is none left "
            "to judge it on; use ser-stream evaluate --recipe to train and test fresh models"
        )
    clips = [c for c in load_corpora(data_root(data), unseen) if (c.actor or 0) <= MAX_ACTOR]
    report = evaluate_artifact(model, clips, channel_ids=channel_clips(clips), room=room)
    report["command"] = f"ser-stream evaluate --model {model}"
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["baseline"] = report
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(out)
    return report


_TITLES = {
    "seed": "Seed protocol (random split, speakers mixed): test clips",
    "speaker": "Speaker-independent (all speakers, 6 folds): pooled test clips",
    "channel": "Channel shift, {}: pooled test clips",
    "room": "Sessions in a room (-60..-40 dBFS), as up hears them: pooled clips",
    "corpus": "Leave one corpus out, {} held out (calm counted as neutral)",
}


def _plot(out: Path, name: str, confusion: list[list[int]], detail: str = "") -> None:
    title = _TITLES[name.split("_", 1)[0]].format(detail)
    plot_confusion(confusion, out / f"confusion_{name}.png", title)
