"""Fitting the Keras classifier on feature windows, and clip-level scoring."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

import numpy as np

from ser_stream.labels import LABELS
from ser_stream.models.lstm import ModelConfig, build_model
from ser_stream.train.cache import WindowSet

__all__ = ["Normalizer", "TrainConfig", "clip_probabilities", "fit_normalizer", "train_model"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: most passes over the training windows.
        batch_size: windows per gradient step.
        learning_rate: Adam's initial step size (halved when validation loss stalls).
        patience: epochs without validation improvement before stopping.
        label_smoothing: cross-entropy label smoothing.
        seed: seed of weights, shuffling and dropout.
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8
    label_smoothing: float = 0.05
    seed: int = 42

    def to_dict(self) -> dict:
        """Plain-JSON form, as stored in the model artifact."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Normalizer:
    """Per-feature standardization with statistics of the training windows."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Standardize ``(..., features)`` float32."""
        return ((features - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain-JSON form, as stored in the model artifact."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def fit_normalizer(features: np.ndarray) -> Normalizer:
    """Fit the mean and standard deviation of every feature over all windows and frames."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    std = flat.std(axis=0)
    return Normalizer(
        flat.mean(axis=0).astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)
    )


def train_model(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
):
    """Fit a new classifier on normalized ``(features, label indices)``; return the Keras model.

    Classes are weighted inversely to their frequency (calm is rare); with ``val`` the best
    epoch by validation loss is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(train_config.seed)
    x_train, y_train = train
    model = build_model(x_train.shape[1], x_train.shape[2], len(LABELS), model_config)
    model.compile(
        optimizer=keras.optimizers.Adam(train_config.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_config.label_smoothing),
        metrics=["accuracy"],
    )
    counts = np.bincount(y_train, minlength=len(LABELS)).astype(np.float64)
    present = counts > 0
    weights = np.zeros(len(LABELS))
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    callbacks = []
    monitor = "val_loss" if val is not None else "loss"
    callbacks.append(
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=3, min_lr=1e-5)
    )
    callbacks.append(
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=train_config.patience, restore_best_weights=True
        )
    )
    model.fit(
        x_train,
        keras.utils.to_categorical(y_train, len(LABELS)),
        validation_data=(val[0], keras.utils.to_categorical(val[1], len(LABELS))) if val else None,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        class_weight=dict(enumerate(weights)),
        callbacks=callbacks,
        shuffle=True,
        verbose=(1 if sys.stderr.isatty() else 2) if progress else 0,
    )
    return model


def clip_probabilities(
    window_probabilities: np.ndarray, windows: WindowSet, n_clips: int
) -> tuple[np.ndarray, np.ndarray]:
    """Average window probabilities per clip, as ``predict`` does for a file.

    Returns:
        ``(probabilities, has_windows)``: ``(n_clips, labels)`` and a mask of clips that had
        at least one window (others keep zeros).
    """
    sums = np.zeros((n_clips, window_probabilities.shape[1]))
    np.add.at(sums, windows.clip_index, window_probabilities)
    counts = np.bincount(windows.clip_index, minlength=n_clips)
    has = counts > 0
    sums[has] /= counts[has, None]
    return sums, has
