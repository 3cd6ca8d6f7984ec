"""Judge a trained model artifact on corpora it never trained on, as a user's files meet it.

Every clip goes through ``ser-stream predict``'s own path (:class:`~ser_stream.predict.Predictor`:
the artifact's VAD, denoise, features and ONNX model); the channel conditions are applied to
the audio first, and the room sessions are heard the way ``up`` hears a stream. The corpora
the artifact trained on are read from its ``config.json`` and left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser_stream.artifact import load_artifact
from ser_stream.audio import load_audio
from ser_stream.errors import InputError
from ser_stream.labels import LABELS, label_index
from ser_stream.logs import get_logger
from ser_stream.predict import Predictor
from ser_stream.train.calibration import abstention_metrics
from ser_stream.train.channels import (
    CONDITIONS,
    DESCRIPTIONS,
    SHARED_WITH_TRAINING,
    apply_condition,
)
from ser_stream.train.codecs import CODECS, ffmpeg_available
from ser_stream.train.datasets import Clip
from ser_stream.train.room_sessions import predicted_labels, room_sessions
from ser_stream.train.scores import classification_metrics, cross_corpus_metrics

__all__ = ["evaluate_artifact", "trained_corpora"]

log = get_logger(component="evaluate")


def trained_corpora(model: Path) -> list[str]:
    """The corpora an artifact was trained on, from its ``config.json``."""
    config = json.loads((Path(model) / "config.json").read_text())
    return list(config.get("training", {}).get("data", {}).get("corpora", []))


def evaluate_artifact(
    model: Path,
    clips: list[Clip],
    *,
    channel_ids: Sequence[int],
    conditions: Sequence[str] = CONDITIONS,
    seed: int = 42,
    room: bool = True,
) -> dict:
    """Score ``model`` on ``clips`` of corpora it never trained on.

    Clean, through every condition (on ``channel_ids``), and heard as sessions in a room.

    Raises:
        InputError: a clip's corpus is one the artifact trained on.
    """
    if set(conditions) & set(CODECS) and not ffmpeg_available():
        raise InputError(
            "the real-codec conditions run ffmpeg, which is not installed: apt-get install "
            "ffmpeg (or make setup-dev)"
        )
    seen = set(trained_corpora(model)) & {c.corpus for c in clips}
    if seen:
        raise InputError(f"{model} trained on {sorted(seen)}: judge it on other corpora")
    artifact = load_artifact(model)
    predictor = Predictor(artifact)
    rate = artifact.sample_rate
    truth = np.array([label_index(c.label) for c in clips])
    ids = np.arange(len(clips))
    clean = _predict(predictor, clips, ids, rate, None, seed)
    report: dict = {
        "model": str(model),
        "trained_on": trained_corpora(model),
        "judged_on": sorted({c.corpus for c in clips}),
        "vad": artifact.analysis.vad.engine,
        "clean": _metrics(truth, clean, artifact.confidence_threshold),
        "conditions": {},
    }
    channel_ids = np.asarray(channel_ids, dtype=np.int64)
    same_clean = cross_corpus_metrics(truth[channel_ids], predicted_labels(clean[channel_ids]))
    report["channel_clean"] = same_clean
    for name in conditions:
        log.info("artifact condition", condition=name, clips=len(channel_ids))
        shifted = _predict(predictor, clips, channel_ids, rate, name, seed)
        metrics = cross_corpus_metrics(truth[channel_ids], predicted_labels(shifted[channel_ids]))
        report["conditions"][name] = {
            "description": DESCRIPTIONS.get(name, name),
            "shared_with_training": SHARED_WITH_TRAINING.get(name),
            **metrics,
            "loss_vs_clean": same_clean["strict"]["unweighted_accuracy"]
            - metrics["strict"]["unweighted_accuracy"],
        }
    if room:
        heard, probabilities, stats = room_sessions(
            clips, ids, artifact.analysis, _scorer(predictor), seed=seed, n_labels=len(LABELS)
        )
        first_look = stats.pop("first_look")
        alone = cross_corpus_metrics(truth[heard], predicted_labels(clean[heard]))
        in_room = cross_corpus_metrics(truth[heard], predicted_labels(probabilities))
        report["room"] = {
            **in_room,
            "alone": alone,
            "loss_vs_alone": alone["strict"]["unweighted_accuracy"]
            - in_room["strict"]["unweighted_accuracy"],
            "first_look": cross_corpus_metrics(truth[heard], predicted_labels(first_look)),
            **stats,
        }
    return report


def _scorer(predictor: Predictor):
    return lambda matrices: predictor.core.probabilities(matrices).astype(np.float64)


def _predict(
    predictor: Predictor,
    clips: list[Clip],
    ids: np.ndarray,
    rate: int,
    condition: str | None,
    seed: int,
) -> np.ndarray:
    """``(clips, labels)`` file probabilities, as ``predict`` gives them.

    A row of NaN: no result, which counts as an error.
    """
    rows = np.full((len(clips), len(LABELS)), np.nan)
    for i in ids:
        try:
            samples = load_audio(clips[i].path, target_rate=rate)
            if condition is not None:
                key = seed * 1_000_003 + clips[i].key
                samples = apply_condition(condition, samples, rate, key)
            result = predictor.predict_samples(samples, name=str(clips[i].path))
        except InputError as exc:
            log.warning("clip not judged", path=str(clips[i].path), reason=str(exc))
            continue
        rows[i] = [result.probabilities[label] for label in LABELS]
    return rows


def _metrics(truth: np.ndarray, probabilities: np.ndarray, threshold: float | None) -> dict:
    predicted = predicted_labels(probabilities)
    metrics = cross_corpus_metrics(truth, predicted)
    metrics["all_labels"] = classification_metrics(truth, predicted)
    if threshold is not None:
        metrics["abstention"] = abstention_metrics(np.nan_to_num(probabilities), truth, threshold)
    return metrics
