"""Stream normalization, the features stage's memory: features standardized per stream.

Each feature column is standardized by the statistics of its own stream (cepstral mean and
variance normalization per stream).

A voice, a microphone and a room each shift the feature columns by a roughly constant
amount; the stream's own running mean and spread remove those shifts, so the model sees
how this speaker deviates from themselves rather than how the recording differs from the
training studios.

How it warms up: the statistics start as the training set's (``prior_mean``/``prior_std``)
weighted as ``prior_s`` seconds of speech; every window adds the seconds of speech it brings
that the previous window did not already cover; older speech fades with time constant
``memory_s`` (seconds of speech, not wall-clock time, so pauses do not erase it). A
window is normalized with statistics that already include it, so the first window of a
stream (and a short file in ``predict``) is judged by its own statistics blended with the
prior. ``predict`` runs one normalizer per file over the file's windows in order, and the
live pipeline one per stream: on the same audio they give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ser_stream.errors import InputError

__all__ = ["NORMALIZE_MODES", "NormalizeConfig", "StreamNormalizer"]

NORMALIZE_MODES = ("none", "stream")
"""``none``: features pass unchanged; ``stream``: standardized by the stream's statistics."""

_MIN_STD = 1e-3


@dataclass(frozen=True, slots=True)
class NormalizeConfig:
    """Settings of stream normalization, stored in the model artifact.

    Attributes:
        mode: one of :data:`NORMALIZE_MODES`.
        prior_s: weight of the training statistics, in seconds of speech.
        memory_s: time constant with which old speech fades, in seconds of speech.
        variance: also divide by the stream's standard deviation (else only subtract the
            mean).
        kinds: feature kinds to normalize (empty: every column); the others pass unchanged.
        prior_mean: per-column mean of the training features (before normalization).
        prior_std: per-column standard deviation of the training features.
    """

    mode: str = "none"
    prior_s: float = 0.0
    memory_s: float = 60.0
    variance: bool = True
    kinds: tuple[str, ...] = ()
    prior_mean: tuple[float, ...] = ()
    prior_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZE_MODES:
            raise InputError(f"normalization mode {self.mode!r} is not one of {NORMALIZE_MODES}")
        if self.prior_s < 0 or self.memory_s <= 0:
            raise InputError("normalization prior_s must be >= 0 and memory_s > 0")
        if len(self.prior_mean) != len(self.prior_std):
            raise InputError("normalization prior_mean and prior_std differ in length")

    @property
    def enabled(self) -> bool:
        """Whether features are normalized at all."""
        return self.mode != "none"

    def with_prior(self, mean: np.ndarray, std: np.ndarray) -> NormalizeConfig:
        """This config with the training statistics as its prior."""
        return replace(
            self,
            prior_mean=tuple(float(v) for v in mean),
            prior_std=tuple(float(v) for v in std),
        )

    def to_dict(self) -> dict:
        """Plain-JSON form, as stored in the model artifact."""
        data = asdict(self)
        data["kinds"] = list(self.kinds)
        data["prior_mean"] = list(self.prior_mean)
        data["prior_std"] = list(self.prior_std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NormalizeConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"normalization config has unknown keys {sorted(unknown)}")
        values = dict(data)
        for key in ("prior_mean", "prior_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        if "kinds" in values:
            values["kinds"] = tuple(values["kinds"])
        return cls(**values)


class StreamNormalizer:
    """Running statistics of one stream; pure and stateful (one object per stream or file)."""

    def __init__(
        self,
        config: NormalizeConfig,
        n_features: int,
        *,
        column_kinds: Sequence[str] | None = None,
    ) -> None:
        """Start a stream.

        Args:
            config: the settings (with the training prior when ``prior_s`` > 0).
            n_features: columns of the matrices to come.
            column_kinds: the feature kind of each column, needed when ``config.kinds``
                picks some kinds only.

        Raises:
            InputError: the prior or the column kinds do not fit the features.
        """
        self.config = config
        self.n_features = n_features
        self._columns = self._selected(config, n_features, column_kinds)
        if config.enabled and config.prior_s > 0 and not config.prior_mean:
            raise InputError(
                "stream normalization with prior_s > 0 needs the training statistics; "
                "re-export the model"
            )
        if config.prior_mean and len(config.prior_mean) != n_features:
            raise InputError(
                f"normalization prior has {len(config.prior_mean)} columns, features have "
                f"{n_features}; re-export the model"
            )
        if config.prior_mean:
            self._prior_mean = np.asarray(config.prior_mean, dtype=np.float64)
            prior_std = np.asarray(config.prior_std, dtype=np.float64)
            self._prior_square = prior_std**2 + self._prior_mean**2
        else:
            self._prior_mean = np.zeros(n_features)
            self._prior_square = np.ones(n_features)
        self.reset()

    @staticmethod
    def _selected(
        config: NormalizeConfig, n_features: int, column_kinds: Sequence[str] | None
    ) -> np.ndarray:
        if not config.kinds:
            return np.ones(n_features, dtype=bool)
        if column_kinds is None or len(column_kinds) != n_features:
            raise InputError(
                "normalizing some feature kinds needs the kind of every column; "
                "check the feature config"
            )
        unknown = set(config.kinds) - set(column_kinds)
        if unknown:
            raise InputError(
                f"normalization names kinds {sorted(unknown)} the features do not have; "
                "re-export the model"
            )
        return np.array([kind in config.kinds for kind in column_kinds])

    def reset(self) -> None:
        """Forget the stream: the statistics return to the prior."""
        self._weight = 0.0  # seconds of speech, decayed
        self._sum = np.zeros(self.n_features)  # weighted column means, decayed
        self._square = np.zeros(self.n_features)  # weighted column mean squares, decayed
        self._covered_until: float | None = None

    @property
    def seconds(self) -> float:
        """Speech heard so far, decayed, in seconds."""
        return self._weight

    def push(
        self, matrix: np.ndarray, t_start: float, t_end: float, *, learn: bool = True
    ) -> np.ndarray:
        """Learn from one window's ``(frames, features)`` matrix and return it normalized.

        ``t_start``/``t_end`` place the window in the stream (seconds); only the part not
        covered by the previous window counts as new speech. With ``learn`` false the window
        is normalized as if it were learnt, and then forgotten: a live first look at an
        utterance, whose speech the full window that replaces it brings again.
        """
        if not learn:
            state = (self._weight, self._sum, self._square, self._covered_until)
            try:
                return self.push(matrix, t_start, t_end)
            finally:
                self._weight, self._sum, self._square, self._covered_until = state
        matrix = np.asarray(matrix, dtype=np.float32)
        if not self.config.enabled:
            return matrix
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features or matrix.shape[0] == 0:
            raise InputError(
                f"feature matrix of shape {matrix.shape} does not have {self.n_features} "
                "columns; check the feature config"
            )
        start = t_start if self._covered_until is None else max(t_start, self._covered_until)
        new_s = max(0.0, t_end - start)
        self._covered_until = (
            t_end if self._covered_until is None else max(self._covered_until, t_end)
        )
        wide = matrix.astype(np.float64)
        if new_s > 0 or self._weight == 0:
            # A window that brings nothing new still teaches a fresh stream a little.
            weight = new_s if new_s > 0 else 1e-3
            decay = math.exp(-weight / self.config.memory_s)
            self._weight = self._weight * decay + weight
            self._sum = self._sum * decay + weight * wide.mean(axis=0)
            self._square = self._square * decay + weight * (wide**2).mean(axis=0)
        mean, std = self.statistics()
        columns = self._columns
        out = wide.copy()
        out[:, columns] -= mean[columns]
        if self.config.variance:
            out[:, columns] /= std[columns]
        return out.astype(np.float32)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The current per-column ``(mean, std)``: the stream's, blended with the prior."""
        prior = self.config.prior_s
        total = prior + self._weight
        if total <= 0:
            return self._prior_mean.copy(), np.sqrt(self._prior_square - self._prior_mean**2)
        mean = (prior * self._prior_mean + self._sum) / total
        square = (prior * self._prior_square + self._square) / total
        std = np.sqrt(np.maximum(square - mean**2, 0.0))
        return mean, np.maximum(std, _MIN_STD)
