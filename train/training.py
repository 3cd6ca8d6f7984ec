"""Fitting the Keras classifier on feature windows, and clip-level scoring."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

import numpy as np

from ser_stream.labels import LABELS
from ser_stream.models.lstm import ModelConfig, build_model

__all__ = [
    "Normalizer",
    "TrainConfig",
    "balanced_weights",
    "crop_and_tile",
    "fit_normalizer",
    "train_model",
]


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
        crop_s: each epoch, each training window is cut to a random stretch of this many
            seconds (drawn from the range) and tiled back to full length, as a short
            utterance is: the model must hear the emotion in any part of the speech, not
            learn the course of the corpus' few sentences. ``None`` trains on whole windows.
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8
    label_smoothing: float = 0.05
    seed: int = 42
    crop_s: tuple[float, float] | None = None

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
    frame_s: float | None = None,
    groups: np.ndarray | None = None,
):
    """Fit a new classifier on normalized ``(features, label indices)``; return the Keras model.

    ``frame_s`` (seconds per feature frame) is needed when ``train_config`` crops windows.

    Classes are weighted inversely to their frequency (calm is rare); with ``groups`` (one
    id per window, e.g. its corpus) every group also weighs the same in total, whatever its
    size. With ``val`` the best epoch by validation loss is kept.
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
    window_weights = balanced_weights(y_train, groups)
    targets = keras.utils.to_categorical(y_train, len(LABELS))
    if train_config.crop_s:
        if frame_s is None:
            raise ValueError("cropping windows needs frame_s, the features' seconds per frame")
        data = {"x": _cropped_batches(x_train, targets, window_weights, train_config, frame_s)}
    else:
        data = {
            "x": x_train,
            "y": targets,
            "batch_size": train_config.batch_size,
            "sample_weight": window_weights,
            "shuffle": True,
        }
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
        **data,
        validation_data=(val[0], keras.utils.to_categorical(val[1], len(LABELS))) if val else None,
        epochs=train_config.epochs,
        callbacks=callbacks,
        verbose=(1 if sys.stderr.isatty() else 2) if progress else 0,
    )
    return model


def balanced_weights(labels: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-window weights, mean 1, under which every label (and group) weighs the same.

    Labels are balanced within the weighted groups, so a label that only one group has
    (calm) still weighs as much as any other.
    """
    groups = np.zeros(len(labels), np.int64) if groups is None else np.asarray(groups)
    weights = np.ones(len(labels), np.float64)
    for group in np.unique(groups):
        members = groups == group
        weights[members] = 1.0 / members.sum()
    totals = np.bincount(labels, weights=weights, minlength=len(LABELS))
    weights = weights / totals[labels]
    return weights * (len(labels) / weights.sum()) if len(labels) else weights


def crop_and_tile(windows: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cut windows to stretches and tile each stretch back to the full frame count.

    Window ``i`` (``(frames, features)``) keeps ``lengths[i]`` frames from ``starts[i]``.
    """
    n_frames = windows.shape[1]
    offsets = np.arange(n_frames)[None, :] % lengths[:, None] + starts[:, None]
    return np.take_along_axis(windows, offsets[:, :, None], axis=1)


def _cropped_windows_class():
    import keras

    class CroppedWindows(keras.utils.PyDataset):
        """Shuffled batches of randomly cropped and re-tiled windows, with class weights."""

        def __init__(self, x, y, sample_weight, config: TrainConfig, frame_s: float) -> None:
            super().__init__()
            self.x, self.y, self.w, self.config = x, y, sample_weight, config
            self.rng = np.random.default_rng(config.seed)
            low, high = config.crop_s
            self.low = max(2, round(low / frame_s))
            self.high = min(x.shape[1], max(self.low, round(high / frame_s)))
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return -(-len(self.x) // self.config.batch_size)

        def __getitem__(self, index: int):
            rows = self.order[index * self.config.batch_size : (index + 1) * self.config.batch_size]
            lengths = self.rng.integers(self.low, self.high + 1, size=len(rows))
            starts = self.rng.integers(0, self.x.shape[1] - lengths + 1)
            return crop_and_tile(self.x[rows], lengths, starts), self.y[rows], self.w[rows]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(self.x))

    return CroppedWindows


def _cropped_batches(x, y, sample_weight, config: TrainConfig, frame_s: float):
    """A keras PyDataset of cropped batches (keras is imported only when cropping)."""
    return _cropped_windows_class()(x, y, sample_weight, config, frame_s)
