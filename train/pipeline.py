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
from ser_stream.train.calibration import expected_calibration_error
from ser_stream.train.channels import CONDITIONS
from ser_stream.train.datasets import Clip, data_root, load_corpora
from ser_stream.train.evaluate import (
    CROSS_VAL_ACTORS,
    EMOBOX_FOLDS,
    cross_corpus_protocol,
    plot_confusion,
    seed_protocol,
    speaker_protocol,
    train_split,
)
from ser_stream.train.export import write_artifact
from ser_stream.train.model_card import write_model_card
from ser_stream.train.recipe import Recipe
from ser_stream.train.streams import fold_babble, same_speaker_babble

__all__ = ["PROTOCOLS", "evaluate_protocols", "train_default"]

PROTOCOLS = ("seed", "speaker", "cross", "channel")
"""Evaluation protocols, in report order (``all`` runs every one)."""

MAX_ACTOR = 20
"""RAVDESS actors above this one are never used for training or evaluation folds."""

log = get_logger(component="train")


def _clips(data: str | None) -> list[Clip]:
    clips = load_corpora(data_root(data))
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


def _channel_windows(
    clips: list[Clip], recipe: Recipe, cache: str | None, workers: int | None
) -> dict[str, WindowSet]:
    """Every RAVDESS clip (the folds' test side) through every channel condition."""
    ids = np.array([i for i, c in enumerate(clips) if c.corpus == "ravdess"], dtype=np.int64)
    subset = [clips[i] for i in ids]
    babble = fold_babble(subset, EMOBOX_FOLDS)
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
    clips = _clips(data)
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
    if calibration_from is not None:
        temperature, fitted_on = _pooled_temperature(calibration_from, recipe)
    calibration = {"temperature": temperature, "fitted_on": fitted_on + ", window level"}
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


def _pooled_temperature(metrics_path: Path, recipe: Recipe) -> tuple[float, str]:
    """The pooled temperature of a speaker-independent evaluation of ``recipe``."""
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
    return float(speaker["calibration"]["pooled_temperature"]), (
        f"the test windows of the {folds} speaker-independent fold models of recipe "
        f"{recipe.name} (every RAVDESS actor 01-20 unseen by the model that scored it; "
        f"{metrics_path.name} of that evaluation)"
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
    clips = _clips(data)
    windows = _windows(clips, recipe, cache, workers)
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
    if "speaker" in protocols or "channel" in protocols:
        channel_windows = (
            _channel_windows(clips, recipe, cache, workers) if "channel" in protocols else None
        )
        speaker, channel = speaker_protocol(
            clips, windows, recipe, only=folds, channel_windows=channel_windows
        )
        if folds:
            speaker["only_folds"] = list(folds)
        store("speaker", speaker)
        _plot(out, "speaker", speaker["pooled"]["confusion"])
        if channel is not None:
            store("channel", channel)
            _plot(out, "channel", channel["conditions"]["noise"]["pooled"]["confusion"])
    if "cross" in protocols:
        cross = cross_corpus_protocol(clips, windows, recipe)
        store("cross", cross)
        _plot(out, "cross", cross["tess_to_ravdess"]["calm_as_neutral"]["confusion"])
    write_model_card(out)
    return results


_TITLES = {
    "seed": "Seed protocol (random split, speakers mixed): test clips",
    "speaker": "Speaker-independent (EmoBox actor folds): pooled test clips",
    "channel": "Channel shift, room noise at 10 dB SNR: pooled test clips",
    "cross": "Cross-corpus, TESS -> RAVDESS (calm counted as neutral)",
}


def _plot(out: Path, name: str, confusion: list[list[int]]) -> None:
    plot_confusion(confusion, out / f"confusion_{name}.png", _TITLES[name])
