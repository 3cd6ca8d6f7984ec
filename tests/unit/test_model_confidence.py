"""The artifact's confidence threshold reaches every prediction: the model core, ``predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ser_stream.artifact import CONFIG_FILE, ONNX_FILE, default_artifact_dir, load_artifact
from ser_stream.errors import ModelError
from ser_stream.messages import Features
from ser_stream.predict import Predictor
from ser_stream.stages.model import ModelCore, is_confident
from ser_stream.testing import noise, voiced

MISSING = object()


def artifact_with(folder: Path, threshold: object = MISSING) -> Path:
    """A copy of the shipped artifact (config and ONNX model) with ``threshold`` stored."""
    folder.mkdir()
    for name in (CONFIG_FILE, ONNX_FILE):
        shutil.copy(default_artifact_dir() / name, folder / name)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["calibration"].pop("confidence_threshold", None)
    if threshold is not MISSING:
        config["calibration"]["confidence_threshold"] = threshold
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def feature_batch(artifact, n: int = 12) -> list[Features]:
    features = artifact.analysis.features
    rng = np.random.default_rng(0)
    matrices = rng.standard_normal((n, features.n_frames, features.n_features)) * 3
    return [
        Features(m.astype(np.float32), i * 1.5, i * 1.5 + 3.0, i) for i, m in enumerate(matrices)
    ]


def talk() -> np.ndarray:
    return np.concatenate([noise(0.4), voiced(3.0, seed=1), noise(0.4, seed=2)])


class TestArtifactThreshold:
    def test_the_threshold_is_read_from_the_calibration(self, tmp_path):
        """``calibration.confidence_threshold`` becomes the artifact's threshold."""
        assert load_artifact(artifact_with(tmp_path / "m", 0.42)).confidence_threshold == 0.42

    @pytest.mark.parametrize("threshold", [MISSING, None])
    def test_an_artifact_without_one_has_none(self, tmp_path, threshold):
        """Older artifacts (no key) and a null key load with no threshold."""
        assert load_artifact(artifact_with(tmp_path / "m", threshold)).confidence_threshold is None

    @pytest.mark.parametrize("bad", [1.5, -0.1, "high", True])
    def test_a_threshold_that_is_not_a_probability_is_a_model_error(self, tmp_path, bad):
        """A threshold outside [0, 1], or not a number, is refused with advice."""
        with pytest.raises(ModelError, match="re-export"):
            load_artifact(artifact_with(tmp_path / "m", bad))


class TestModelCoreConfidence:
    def test_confident_when_the_top_probability_reaches_the_threshold(self, tmp_path):
        """Each prediction is confident exactly when its top calibrated probability is at
        least the threshold; the distribution and label are unchanged by it."""
        plain = ModelCore(load_artifact(artifact_with(tmp_path / "plain")))
        batch = feature_batch(plain.artifact)
        tops = plain.probabilities(np.stack([f.matrix for f in batch])).max(axis=1)
        threshold = float(np.median(tops))
        core = ModelCore(load_artifact(artifact_with(tmp_path / "sure", threshold)))
        predictions = core.push_batch(batch)
        flags = [p.confident for p in predictions]
        assert flags == [bool(t >= threshold) for t in tops]
        assert True in flags and False in flags
        for p, q in zip(predictions, plain.push_batch(batch), strict=True):
            np.testing.assert_array_equal(p.probabilities, q.probabilities)
            assert p.label == q.label

    def test_no_threshold_means_unknown(self, tmp_path):
        """Without a threshold in the artifact every prediction's flag is None."""
        core = ModelCore(load_artifact(artifact_with(tmp_path / "m")))
        assert {p.confident for p in core.push_batch(feature_batch(core.artifact))} == {None}

    def test_is_confident_compares_the_top_probability(self):
        """The flag's rule on its own: top >= threshold, None without one."""
        p = np.array([0.2, 0.5, 0.3], dtype=np.float32)
        assert is_confident(p, 0.5) is True
        assert is_confident(p, 0.51) is False
        assert is_confident(p, None) is None


class TestPredictConfidence:
    def test_json_carries_the_file_and_window_flags(self, tmp_path):
        """``predict --json`` says whether the file and each window are confident: the file by
        its mean distribution's top probability, each window by its own."""
        probe = Predictor(load_artifact(artifact_with(tmp_path / "plain"))).predict_samples(talk())
        assert probe.to_json()["confident"] is None
        assert {w["confident"] for w in probe.windows} == {None}
        file_top = max(probe.probabilities.values())
        threshold = file_top + 1e-3  # just above the file's mean: the file is uncertain
        result = Predictor(load_artifact(artifact_with(tmp_path / "sure", threshold)))
        record = result.predict_samples(talk()).to_json()
        assert record["confident"] is False
        assert record["label"] == probe.label and record["probabilities"] == probe.probabilities
        for window in record["windows"]:
            top = max(window["probabilities"].values())
            assert window["confident"] is (top >= threshold - 1e-6), window

    def test_a_low_threshold_makes_the_file_confident(self, tmp_path):
        """At threshold 0 every window and the file are confident."""
        predictor = Predictor(load_artifact(artifact_with(tmp_path / "m", 0.0)))
        record = predictor.predict_samples(talk()).to_json()
        assert record["confident"] is True
        assert all(w["confident"] is True for w in record["windows"])
