"""The served model (ONNX through onnxruntime) matches the Keras model within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.artifact import default_artifact_dir, load_artifact
from ser_stream.stages.model import ModelCore, apply_temperature

pytest.importorskip("tensorflow")


def keras_probabilities(artifact, matrices: np.ndarray) -> np.ndarray:
    """What Keras gives for the windows, calibrated with the artifact's temperature."""
    import keras

    from ser_stream.models.lstm import custom_objects

    model = keras.models.load_model(
        artifact.keras_path, custom_objects=custom_objects(), compile=False
    )
    normalized = (matrices - artifact.mean) / artifact.std
    raw = np.asarray(model(normalized.astype(np.float32), training=False))
    return apply_temperature(raw, artifact.temperature)


def feature_batch(artifact, n: int, seed: int = 0) -> np.ndarray:
    from ser_stream.analysis import analyze
    from ser_stream.testing import noise, voiced

    rng = np.random.default_rng(seed)
    audio = np.concatenate([noise(0.5), voiced(7.0, seed=seed), noise(0.5, seed=3)])
    real = np.stack([f.matrix for f in analyze(audio, artifact.analysis)])
    shape = (n, artifact.analysis.features.n_frames, artifact.analysis.features.n_features)
    random = artifact.mean + artifact.std * rng.standard_normal(shape).astype(np.float32)
    return np.concatenate([real, random.astype(np.float32)])


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_onnx_matches_keras_within_1e_5(which, tiny_artifact):
    """Probabilities of the ONNX runtime and of Keras differ by at most 1e-5."""
    artifact = load_artifact(tiny_artifact if which == "tiny" else default_artifact_dir())
    matrices = feature_batch(artifact, 16)
    served = ModelCore(artifact).probabilities(matrices)
    expected = keras_probabilities(artifact, matrices)
    assert served.shape == expected.shape == (len(matrices), len(artifact.labels))
    assert np.max(np.abs(served - expected)) <= 1e-5


def test_training_only_masks_vanish_from_the_exported_model(tmp_path):
    """Frame and column dropout shape training only: the ONNX export equals Keras' inference."""
    from ser_stream.models.lstm import ModelConfig
    from ser_stream.train.export import export_onnx
    from ser_stream.train.training import TrainConfig, train_model

    x = np.random.default_rng(0).standard_normal((32, 20, 6)).astype(np.float32)
    config = ModelConfig(
        units=8, layers=1, attention_units=8, dense_units=8, input_dropout=0.2, frame_dropout=0.3
    )
    model = train_model(
        (x, np.arange(32) % 8), None, config, TrainConfig(epochs=1, batch_size=8), progress=False
    )
    assert export_onnx(model, tmp_path / "masked.onnx") <= 1e-5


def test_cropped_batches_cover_every_window_once_per_epoch_with_class_weights():
    """Cropped training batches hold each window once an epoch, cropped, with its weight."""
    from ser_stream.train.training import TrainConfig, _cropped_batches

    x = np.repeat(np.arange(10, dtype=np.float32)[:, None, None], 20, axis=1)  # row i holds i
    x = x + np.arange(20, dtype=np.float32)[None, :, None] / 100  # frame index in decimals
    y = np.eye(8, dtype=np.float32)[np.arange(10) % 8]
    w = np.linspace(1.0, 2.0, 10)
    batches = _cropped_batches(x, y, w, TrainConfig(batch_size=4, crop_s=(0.1, 0.3)), 0.032)
    seen = []
    for i in range(len(batches)):
        xb, yb, wb = batches[i]
        rows = np.floor(xb[:, 0, 0]).astype(int)
        seen.extend(rows.tolist())
        np.testing.assert_allclose(wb, w[rows])
        np.testing.assert_array_equal(yb, y[rows])
        frames = np.round((xb[:, :, 0] - rows[:, None]) * 100).astype(int)
        assert all(3 <= len(set(f)) <= 9 for f in frames)  # 0.1-0.3 s of 32 ms frames
    assert sorted(seen) == list(range(10))


def test_cropped_training_runs_and_exports(tmp_path):
    """A model trained on cropped windows trains and exports like any other."""
    from ser_stream.models.lstm import ModelConfig
    from ser_stream.train.export import export_onnx
    from ser_stream.train.training import TrainConfig, train_model

    x = np.random.default_rng(1).standard_normal((32, 20, 6)).astype(np.float32)
    model = train_model(
        (x, np.arange(32) % 8),
        None,
        ModelConfig(units=8, layers=1, attention_units=8, dense_units=8),
        TrainConfig(epochs=1, batch_size=8, crop_s=(0.2, 0.5)),
        progress=False,
        frame_s=0.032,
    )
    assert export_onnx(model, tmp_path / "cropped.onnx") <= 1e-5
