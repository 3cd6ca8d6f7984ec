"""The model artifact: a folder with the trained model, its config, metrics and model card.

Serving reads every parameter (sample rate, windowing, features, VAD and denoise settings,
normalization statistics, label order) from here, never from duplicated constants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ser_stream.analysis import AnalysisConfig
from ser_stream.errors import ModelError
from ser_stream.labels import LABELS

__all__ = [
    "ARTIFACT_FORMAT",
    "CONFIG_FILE",
    "ModelArtifact",
    "default_artifact_dir",
    "load_artifact",
]

ARTIFACT_FORMAT = "ser-stream-model/1"
CONFIG_FILE = "config.json"
ONNX_FILE = "model.onnx"
KERAS_FILE = "model.keras"


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact's description (the model itself is opened by the model core).

    Attributes:
        path: the artifact folder.
        labels: output order of the model's probabilities.
        analysis: VAD, denoise and feature settings the model was trained with.
        mean: per-feature mean used to standardize the model input.
        std: per-feature standard deviation used to standardize the model input.
        config: the whole parsed ``config.json``.
        temperature: divides the model's logits so its probabilities are calibrated (fitted
            on held-out speakers; 1.0 when the artifact has no calibration).
        confidence_threshold: the calibrated top probability from which a prediction is
            confident (fitted on held-out speakers); None when the artifact has none, and
            then no prediction is known to be confident or not.
    """

    path: Path
    labels: tuple[str, ...]
    analysis: AnalysisConfig
    mean: np.ndarray
    std: np.ndarray
    config: dict
    temperature: float = 1.0
    confidence_threshold: float | None = None

    @property
    def onnx_path(self) -> Path:
        """The ONNX export served by the model core."""
        return self.path / ONNX_FILE

    @property
    def keras_path(self) -> Path:
        """The Keras model the ONNX export was made from."""
        return self.path / KERAS_FILE

    @property
    def sample_rate(self) -> int:
        """Rate the model's audio must have, in Hz."""
        return self.analysis.features.sample_rate


def default_artifact_dir() -> Path:
    """The artifact shipped inside the package."""
    return Path(str(resources.files("ser_stream.models") / "default"))


def load_artifact(path: str | Path | None = None) -> ModelArtifact:
    """Read an artifact folder (the shipped default when ``path`` is None).

    Raises:
        ModelError: the folder, its config or its ONNX model is missing or inconsistent.
    """
    folder = Path(path) if path else default_artifact_dir()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"{folder}: no {CONFIG_FILE}; pass --model with a trained model folder")
    try:
        config = json.loads(config_path.read_text())
        if config.get("format") != ARTIFACT_FORMAT:
            raise ModelError(
                f"{config_path}: format {config.get('format')!r} is not {ARTIFACT_FORMAT!r}; "
                "re-export the model with this version"
            )
        parsed = AnalysisConfig.from_dict(config["analysis"])
        mean = np.asarray(config["normalization"]["mean"], dtype=np.float32)
        std = np.asarray(config["normalization"]["std"], dtype=np.float32)
        labels = tuple(config["labels"])
        calibration = config.get("calibration", {})
        temperature = float(calibration.get("temperature", 1.0))
        threshold = _threshold(calibration.get("confidence_threshold"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: invalid model config ({exc}); re-export it") from exc
    if labels != LABELS:
        raise ModelError(f"{config_path}: label order {labels} is not {LABELS}; re-export it")
    if mean.shape != (parsed.features.n_features,) or std.shape != mean.shape:
        raise ModelError(f"{config_path}: normalization does not match the feature count")
    if not (folder / ONNX_FILE).is_file():
        raise ModelError(f"{folder}: no {ONNX_FILE}; export the model with `ser-stream train`")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ModelError(f"{config_path}: calibration temperature {temperature} is not positive")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ModelError(
            f"{config_path}: confidence threshold {threshold} is not a probability; re-export it"
        )
    return ModelArtifact(folder, labels, parsed, mean, std, config, temperature, threshold)


def _threshold(value: object) -> float | None:
    """``calibration.confidence_threshold`` as a float (None when absent or null)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"confidence_threshold {value!r} is not a number")
    return float(value)
