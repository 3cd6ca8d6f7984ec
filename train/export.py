"""Writing a model artifact: Keras model, its ONNX export, config, metrics and confusion plots."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ser_stream.analysis import AnalysisConfig
from ser_stream.artifact import ARTIFACT_FORMAT, CONFIG_FILE, KERAS_FILE, ONNX_FILE
from ser_stream.errors import ModelError
from ser_stream.labels import LABELS
from ser_stream.train.training import Normalizer

__all__ = ["export_onnx", "write_artifact"]

_OUTPUT_NAME = "probabilities"


def export_onnx(model, path: Path, *, opset: int = 17, atol: float = 1e-5) -> float:
    """Export a Keras model to ONNX at ``path``; return the largest difference from Keras.

    The LSTM layers must become native ONNX ``LSTM`` nodes (no ``Loop``), and the export is
    checked against Keras on a random batch.

    Raises:
        ModelError: the export is not a fused LSTM graph or differs from Keras by more than
            ``atol``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tensorflow as tf

    signature = [
        tf.TensorSpec((None, *tuple(t.shape[1:])), tf.float32, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    tmp = Path(f"{path}.tmp")
    with warnings.catch_warnings():  # Keras' numpy-2 patch for tf2onnx warns about np.object
        warnings.simplefilter("ignore", FutureWarning)
        model.export(
            str(tmp), format="onnx", input_signature=signature, opset_version=opset, verbose=False
        )
    graph = onnx.load(str(tmp))
    tmp.unlink()
    for value in list(graph.graph.input) + list(graph.graph.output):
        batch_dim = value.type.tensor_type.shape.dim[0]
        if not batch_dim.HasField("dim_value"):
            batch_dim.dim_param = "batch"
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [_OUTPUT_NAME if o == old else o for o in node.output]
        node.input[:] = [_OUTPUT_NAME if i == old else i for i in node.input]
    graph.graph.output[0].name = _OUTPUT_NAME
    onnx.checker.check_model(graph)
    ops = [node.op_type for node in graph.graph.node]
    if "LSTM" not in ops or "Loop" in ops or "Scan" in ops:
        raise ModelError(
            "ONNX export did not fuse the LSTM layers; check tf2onnx and Keras versions"
        )
    onnx.save(graph, str(path))
    return _max_difference(model, path, atol)


def _max_difference(model, path: Path, atol: float) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = (8, *tuple(model.inputs[0].shape[1:]))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    difference = float(np.abs(got - expected).max())
    if difference > atol:
        raise ModelError(f"ONNX export differs from Keras by {difference:.2g} > {atol}")
    return difference


def write_artifact(
    folder: Path,
    model,
    analysis: AnalysisConfig,
    normalizer: Normalizer,
    *,
    training: dict,
    calibration: dict | None = None,
) -> Path:
    """Save ``model`` and everything serving needs into ``folder`` (created if missing).

    ``analysis`` carries the stream normalization with its training prior; ``calibration``
    holds the temperature serving applies to the model's probabilities.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / KERAS_FILE)
    difference = export_onnx(model, folder / ONNX_FILE)
    config = {
        "format": ARTIFACT_FORMAT,
        "labels": list(LABELS),
        "sample_rate": analysis.features.sample_rate,
        "analysis": analysis.to_dict(),
        "normalization": {"kind": "global", **normalizer.to_dict()},
        "onnx": {"file": ONNX_FILE, "max_abs_difference_from_keras": difference},
        "keras": {"file": KERAS_FILE},
        "calibration": calibration or {"temperature": 1.0},
        "training": training,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder
