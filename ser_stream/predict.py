"""Batch prediction over audio files: the cores chained in-process, one result per file.

Each file is judged alone: its result never depends on the other files of the same call.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ser_stream.analysis import analyze
from ser_stream.artifact import ModelArtifact, load_artifact
from ser_stream.audio import load_audio
from ser_stream.errors import InputError
from ser_stream.stages.model import ModelCore, is_confident, model_stream

__all__ = ["FileResult", "Predictor", "predict_files", "with_vad_engine"]

PARALLEL_MIN_FILES = 16
"""Below this many files one process is as fast as forking workers (2-core x86-64)."""


@dataclass(frozen=True)
class FileResult:
    """The outcome for one input file: a prediction, or an error that says what to do.

    Attributes:
        file: the path (or name) of the recording.
        label: the label of highest mean probability over the windows (the best guess).
        probabilities: the mean calibrated probability of each label over the windows.
        windows: one object per window: ``t_start``, ``t_end``, ``label``,
            ``probabilities`` and ``confident``.
        error: what went wrong and what to do, instead of a prediction.
        confident: whether the mean's top probability reaches the model's confidence
            threshold (False: report "uncertain"); None when the model has no threshold.
    """

    file: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    windows: list[dict] = field(default_factory=list)
    error: str | None = None
    confident: bool | None = None

    def to_json(self) -> dict:
        """The JSON object ``predict --json`` prints for this file."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {
            "file": self.file,
            "label": self.label,
            "confident": self.confident,
            "probabilities": self.probabilities,
            "windows": self.windows,
        }


class Predictor:
    """Loads a model artifact once and predicts whole recordings with it."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.core = ModelCore(artifact)
        self._model = model_stream(self.core)  # the model stage's processor

    def predict_samples(self, samples: np.ndarray, name: str = "<audio>") -> FileResult:
        """Predict canonical (16 kHz mono float32) audio; the file label is the window mean.

        The file is confident when its mean distribution's top probability reaches the
        threshold, whatever its windows' flags: the mean is what its label is made of.
        """
        features = analyze(samples, self.artifact.analysis)
        predictions = [p for outputs in self._model.push_batch(features) for p in outputs]
        labels = self.artifact.labels
        mean = np.mean([p.probabilities for p in predictions], axis=0)
        windows = [
            {
                "t_start": round(p.t_start, 3),
                "t_end": round(p.t_end, 3),
                "label": p.label,
                "confident": p.confident,
                "probabilities": _as_dict(labels, p.probabilities),
            }
            for p in predictions
        ]
        return FileResult(
            file=name,
            label=labels[int(np.argmax(mean))],
            probabilities=_as_dict(labels, mean),
            windows=windows,
            confident=is_confident(mean, self.artifact.confidence_threshold),
        )

    def predict_file(self, path: str) -> FileResult:
        """Predict one file; unreadable or unusable audio gives a result with ``error`` set."""
        try:
            samples = load_audio(path, target_rate=self.artifact.sample_rate)
            return self.predict_samples(samples, name=path)
        except InputError as exc:
            message = str(exc)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            return FileResult(file=path, error=message)
        except Exception as exc:  # one file must never end the batch
            reason = str(exc).splitlines()[0] if str(exc) else ""
            return FileResult(
                file=path,
                error=f"{path}: unexpected {type(exc).__name__} ({reason}); "
                "check the file, and report it if it plays elsewhere",
            )


def predict_files(
    paths: Iterable[str],
    model: str | Path | None = None,
    *,
    workers: int | None = None,
    vad_engine: str | None = None,
) -> Iterator[FileResult]:
    """Predict each file in order; large batches run in worker processes.

    The first file is always predicted in this process. That loads every library the cores
    use (the ONNX session, the VAD engine), so workers forked
    afterwards start warm instead of each loading them again.
    """
    paths = list(paths)
    artifact = with_vad_engine(load_artifact(model), vad_engine)
    if not paths:
        return
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(paths) >= PARALLEL_MIN_FILES else 1
    predictor = Predictor(artifact)
    yield predictor.predict_file(paths[0])
    rest = paths[1:]
    if workers <= 1 or len(rest) <= 1:
        for path in rest:
            yield predictor.predict_file(path)
        return
    chunk = max(1, min(32, len(rest) // (workers * 4)))
    with ProcessPoolExecutor(
        workers,
        mp_context=_warm_context(),
        initializer=_init_worker,
        initargs=(artifact.path, vad_engine),
    ) as pool:
        yield from pool.map(_predict_in_worker, rest, chunksize=chunk)


def _warm_context() -> multiprocessing.context.BaseContext | None:
    # Forked workers inherit the libraries already loaded here; elsewhere (macOS, Windows)
    # fork is unsafe or missing, and the platform's default start method loads them anew.
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


_WORKER: Predictor | None = None


def _init_worker(model_dir: Path, vad_engine: str | None) -> None:
    global _WORKER
    _WORKER = Predictor(with_vad_engine(load_artifact(model_dir), vad_engine))


def with_vad_engine(artifact: ModelArtifact, engine: str | None) -> ModelArtifact:
    """The artifact with another VAD engine (``None``: its own, the one it was trained with)."""
    if engine is None or engine == artifact.analysis.vad.engine:
        return artifact
    vad = replace(artifact.analysis.vad, engine=engine)
    return replace(artifact, analysis=replace(artifact.analysis, vad=vad))


def _predict_in_worker(path: str) -> FileResult:
    if _WORKER is None:
        raise RuntimeError("predict worker used before its initializer ran")
    return _WORKER.predict_file(path)


def _as_dict(labels: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {label: round(float(v), 6) for label, v in zip(labels, values, strict=True)}
