"""The Keras classifier: (bidirectional) LSTM layers, attention pooling over time, softmax.

Only training and export import this module (it needs TensorFlow); serving runs the ONNX
export of the same model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ModelConfig", "build_model", "custom_objects"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of the classifier.

    Attributes:
        units: LSTM units per direction.
        layers: stacked LSTM layers.
        bidirectional: read each window in both directions.
        attention_units: width of the attention scorer.
        dense_units: width of the hidden dense layer before the softmax.
        dropout: dropout before the dense layers (training only).
        input_dropout: dropout of whole feature columns over the window (training only): a
            band or coefficient the model must do without, as SpecAugment's frequency masks.
        frame_dropout: dropout of whole frames (training only), as SpecAugment's time masks.
    """

    units: int = 64
    layers: int = 2
    bidirectional: bool = True
    attention_units: int = 64
    dense_units: int = 64
    dropout: float = 0.3
    input_dropout: float = 0.1
    frame_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in the model artifact."""
        return asdict(self)


def _attention_pool_class():
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="ser_stream")
    class AttentionPool(layers.Layer):
        """Softmax attention over time: a learned weighted mean of the LSTM states."""

        def __init__(self, units: int = 64, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = units
            self.proj = layers.Dense(units, activation="tanh", name="proj")
            self.score = layers.Dense(1, name="score")

        def build(self, input_shape: tuple) -> None:
            self.proj.build(input_shape)
            self.score.build(tuple(input_shape[:-1]) + (self.units,))
            super().build(input_shape)

        def call(self, states):
            weights = ops.softmax(self.score(self.proj(states)), axis=1)
            return ops.sum(weights * states, axis=1)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units}

    return AttentionPool


_ATTENTION_POOL = None


def custom_objects() -> dict[str, Any]:
    """Objects Keras needs to load a saved model of this module."""
    global _ATTENTION_POOL
    if _ATTENTION_POOL is None:
        _ATTENTION_POOL = _attention_pool_class()
    return {"AttentionPool": _ATTENTION_POOL}


def build_model(n_frames: int, n_features: int, n_labels: int, config: ModelConfig):
    """Return an uncompiled Keras model from ``(batch, n_frames, n_features)`` to labels."""
    import keras
    from keras import layers

    pool = custom_objects()["AttentionPool"]
    inputs = keras.Input((n_frames, n_features), name="features")
    hidden = (
        layers.SpatialDropout1D(config.input_dropout)(inputs) if config.input_dropout else inputs
    )
    if config.frame_dropout:
        hidden = layers.Dropout(config.frame_dropout, noise_shape=(None, n_frames, 1))(hidden)
    for i in range(config.layers):
        lstm = layers.LSTM(config.units, return_sequences=True, name=f"lstm{i}")
        hidden = (
            layers.Bidirectional(lstm, name=f"bilstm{i}")(hidden)
            if config.bidirectional
            else lstm(hidden)
        )
    pooled = pool(config.attention_units, name="attention_pool")(hidden)
    pooled = layers.Dropout(config.dropout)(pooled)
    pooled = layers.Dense(config.dense_units, activation="relu", name="dense")(pooled)
    outputs = layers.Dense(n_labels, activation="softmax", name="probabilities")(pooled)
    return keras.Model(inputs, outputs, name="ser_lstm")
