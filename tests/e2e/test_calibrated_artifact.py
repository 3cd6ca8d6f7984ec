"""An artifact's stream normalization and calibration reach every consumer of the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ser_stream.artifact import load_artifact
from ser_stream.errors import ModelError
from ser_stream.predict import Predictor
from ser_stream.stages.model import ModelCore, apply_temperature
from ser_stream.testing import noise, voiced


def test_model_core_applies_the_artifact_temperature(tiny_stream_artifact):
    """Served probabilities are the ONNX outputs rescaled by the stored temperature."""
    artifact = load_artifact(tiny_stream_artifact)
    assert artifact.temperature == pytest.approx(1.7)
    core = ModelCore(artifact)
    features = artifact.analysis.features
    batch = np.random.default_rng(0).standard_normal((3, features.n_frames, features.n_features))
    raw = core._session.run(
        None, {core._input: ((batch - artifact.mean) / artifact.std).astype(np.float32)}
    )[0]
    np.testing.assert_allclose(
        core.probabilities(batch), apply_temperature(raw, 1.7), rtol=1e-5, atol=1e-6
    )


def test_artifact_without_calibration_serves_raw_probabilities(tiny_stream_artifact, tmp_path):
    """Artifacts written before calibration existed load with temperature 1."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_stream_artifact, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["calibration"]
    (copy / "config.json").write_text(json.dumps(config))
    assert load_artifact(copy).temperature == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, "warm"])
def test_invalid_temperature_is_a_model_error(tiny_stream_artifact, tmp_path, bad):
    """A temperature that is not a positive number is refused with advice."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_stream_artifact, copy)
    config = json.loads((copy / "config.json").read_text())
    config["calibration"]["temperature"] = bad
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError):
        load_artifact(copy)


def test_predict_normalizes_each_file_by_itself(tiny_stream_artifact):
    """A file's result depends on its own audio only: the same file gives the same result
    before and after another file was predicted."""
    predictor = Predictor(load_artifact(tiny_stream_artifact))
    talk = np.concatenate([noise(0.4), voiced(3.0, seed=1), noise(0.4, seed=2)])
    other = np.concatenate([noise(0.4, seed=3), voiced(2.5, f0=260.0, seed=4)])
    first = predictor.predict_samples(talk).probabilities
    predictor.predict_samples(other)
    assert predictor.predict_samples(talk).probabilities == first
