"""Features stage: speech windows in, ``(frames, features)`` matrices out.

The feature set and every parameter live in one :class:`FeatureConfig`, which travels inside
the model artifact: training, ``predict`` and the live pipeline compute exactly the same
matrix from the same audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ser_stream.adapter import CoreStream
from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.heap import keep_freed_buffers
from ser_stream.messages import Features, Kind, Window
from ser_stream.stage import StageSpec
from ser_stream.stages import spectral
from ser_stream.stages.normalize import NormalizeConfig, StreamNormalizer

__all__ = [
    "FEATURE_KINDS",
    "SPEC",
    "FeatureConfig",
    "FeaturesCore",
    "extract_features",
    "features_stream",
    "fit_length",
]

FEATURE_KINDS = (
    "rms",
    "zcr",
    "mfcc",
    "mfcc_delta",
    "mfcc_delta2",
    "logmel",
    "pitch",
    "voicing",
    "tilt",
)
"""Feature kinds a config may list, in the column order of the matrix.

``pitch`` is the fundamental frequency in semitones above 100 Hz (probabilistic YIN;
unvoiced stretches bridged by interpolation), ``voicing`` the probability that a frame is
voiced, ``tilt`` the slope of the log-mel spectrum in dB per band (vocal effort).
"""

PITCH_RANGE_HZ = (65.0, 600.0)
"""Fundamental frequencies ``pitch`` searches, in Hz."""


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """How audio becomes a feature matrix.

    Attributes:
        sample_rate: rate of the audio, in Hz.
        window_s: length of one analysis window; shorter speech is repeated to fill it.
        hop_s: step between sliding windows over long speech.
        n_fft: FFT size (and RMS / ZCR frame length), in samples.
        hop_length: step between feature frames, in samples.
        n_mfcc: number of MFCC coefficients.
        n_mels: mel bands behind the MFCC (and of ``logmel``).
        fmin: lowest mel frequency, in Hz.
        fmax: highest mel frequency, in Hz.
        kinds: feature kinds, a subset of :data:`FEATURE_KINDS`.
        instance_norm: standardize each column over the window (per-utterance normalization).
    """

    sample_rate: int = SAMPLE_RATE
    window_s: float = 3.0
    hop_s: float = 1.5
    n_fft: int = 1024
    hop_length: int = 512
    n_mfcc: int = 13
    n_mels: int = 40
    fmin: float = 50.0
    fmax: float = 8_000.0
    kinds: tuple[str, ...] = ("rms", "zcr", "mfcc")
    instance_norm: bool = False

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in FEATURE_KINDS]
        if unknown or not self.kinds:
            raise InputError(f"unknown feature kinds {unknown}; choose from {FEATURE_KINDS}")
        if self.hop_length <= 0 or self.n_fft <= 0 or self.window_s <= 0:
            raise InputError("n_fft, hop_length and window_s must be positive")
        if any(k.startswith("mfcc_delta") for k in self.kinds) and self.n_frames < 9:
            raise InputError(
                f"MFCC deltas need at least 9 frames per window, got {self.n_frames}; "
                "lengthen window_s or shorten hop_length"
            )

    @property
    def window_samples(self) -> int:
        """Samples in one analysis window."""
        return round(self.window_s * self.sample_rate)

    @property
    def n_frames(self) -> int:
        """Feature frames in one window."""
        return 1 + self.window_samples // self.hop_length

    @property
    def n_features(self) -> int:
        """Columns of the feature matrix."""
        return len(self.column_kinds)

    @property
    def column_kinds(self) -> tuple[str, ...]:
        """The feature kind of every column of the matrix, in order."""
        widths = {
            "rms": 1,
            "zcr": 1,
            "mfcc": self.n_mfcc,
            "mfcc_delta": self.n_mfcc,
            "mfcc_delta2": self.n_mfcc,
            "logmel": self.n_mels,
            "pitch": 1,
            "voicing": 1,
            "tilt": 1,
        }
        return tuple(kind for kind in self.kinds for _ in range(widths[kind]))

    def to_dict(self) -> dict:
        """Plain-JSON form, as stored in the model artifact."""
        data = asdict(self)
        data["kinds"] = list(self.kinds)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"feature config has unknown keys {sorted(unknown)}")
        values = dict(data)
        if "kinds" in values:
            values["kinds"] = tuple(values["kinds"])
        return cls(**values)


def fit_length(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """Repeat short audio (or cut long audio) to exactly ``n_samples``."""
    if samples.size == 0:
        raise InputError("cannot compute features of empty audio")
    if samples.size < n_samples:
        samples = np.tile(samples, -(-n_samples // samples.size))
    return samples[:n_samples]


def extract_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Return the ``(config.n_frames, config.n_features)`` float32 matrix of one window.

    Computed with numpy alone (:mod:`ser_stream.stages.spectral`), equal to librosa's
    features within the tolerance its parity test states.
    """
    y = fit_length(np.asarray(samples, dtype=np.float32), config.window_samples)
    columns: list[np.ndarray] = []
    mel_db = mfcc = None
    needs_mel = any(
        kind in ("mfcc", "mfcc_delta", "mfcc_delta2", "logmel", "tilt") for kind in config.kinds
    )
    pitch = voicing = None
    if "pitch" in config.kinds or "voicing" in config.kinds:
        pitch, voicing = _pitch_and_voicing(y, config)
    if needs_mel:
        basis = spectral.mel_filter_bank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
        )
        mel_db = spectral.power_to_db(
            basis @ spectral.power_spectrogram(y, config.n_fft, config.hop_length)
        )
        dct = spectral.dct_matrix(config.n_mfcc, config.n_mels)
        mfcc = (dct @ mel_db.astype(np.float64)).astype(np.float32)
    for kind in config.kinds:
        if kind == "rms":
            rms = spectral.rms(y, config.n_fft, config.hop_length)
            columns.append(np.log(rms + 1e-6)[None, :])
        elif kind == "zcr":
            columns.append(spectral.zero_crossing_rate(y, config.n_fft, config.hop_length)[None, :])
        elif kind == "mfcc":
            columns.append(mfcc)
        elif kind == "mfcc_delta":
            columns.append(spectral.delta(mfcc, order=1))
        elif kind == "mfcc_delta2":
            columns.append(spectral.delta(mfcc, order=2))
        elif kind == "logmel":
            columns.append(mel_db)
        elif kind == "pitch":
            columns.append(pitch[None, :])
        elif kind == "voicing":
            columns.append(voicing[None, :])
        elif kind == "tilt":
            columns.append(_spectral_tilt(mel_db)[None, :])
    matrix = np.concatenate(columns, axis=0).T.astype(np.float32)
    if config.instance_norm:
        # float64: a float32 std of a constant column of magnitude ~600 is SIMD-dependent
        # rounding error (up to ~5e-4), which would be blown up into noise. Constant columns
        # become exact zeros.
        wide = matrix.astype(np.float64)
        std = wide.std(axis=0)
        centered = wide - wide.mean(axis=0)
        matrix = np.where(std > 1e-4, centered / np.maximum(std, 1e-4), 0.0)
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _pitch_and_voicing(y: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame pitch (semitones above 100 Hz) and voicing (periodicity, 0 to 1).

    YIN estimates the period of every frame (probabilistic YIN gives a voicing probability
    too, but costs ~170 ms per 3 s window); voicing is the normalized autocorrelation of
    the frame at that period, high only where the frame really repeats. Pitch is bridged
    across unvoiced frames by interpolation between voiced ones.
    """
    f0, voicing = spectral.yin(
        y,
        fmin=PITCH_RANGE_HZ[0],
        fmax=PITCH_RANGE_HZ[1],
        sample_rate=config.sample_rate,
        frame_length=config.n_fft,
        hop_length=config.hop_length,
    )
    semitones = 12.0 * np.log2(f0 / 100.0)
    voiced = voicing >= _VOICED
    if voiced.any():
        index = np.arange(semitones.size)
        semitones = np.interp(index, index[voiced], semitones[voiced])
    else:
        semitones = np.zeros_like(semitones)
    return semitones.astype(np.float32), voicing.astype(np.float32)


_VOICED = 0.5
"""Periodicity above which a frame's pitch is trusted."""


def _spectral_tilt(mel_db: np.ndarray) -> np.ndarray:
    """Least-squares slope of each frame's log-mel spectrum across bands, in dB per band."""
    bands = np.arange(mel_db.shape[0], dtype=np.float64)
    centered = bands - bands.mean()
    return (centered @ (mel_db - mel_db.mean(axis=0))) / float(centered @ centered)


class FeaturesCore:
    """One stream's features: each window's matrix, normalized by the stream's statistics.

    Stateful only through stream normalization (a no-op unless the model was trained with
    it); one core per stream, or per file in ``predict``.
    """

    def __init__(
        self, config: FeatureConfig | None = None, normalize: NormalizeConfig | None = None
    ) -> None:
        self.config = config or FeatureConfig()
        self.normalizer = StreamNormalizer(
            normalize or NormalizeConfig(),
            self.config.n_features,
            column_kinds=self.config.column_kinds,
        )

    def push(self, window: Window) -> Features:
        """Compute the (normalized) features of ``window``.

        A live first look at an utterance (shorter than a window, and not its last) is
        normalized by the stream's statistics but does not change them: the full window that
        follows brings the same speech again, so later windows are normalized exactly as
        ``predict`` normalizes them.
        """
        matrix = extract_features(window.samples, self.config)
        early = not window.final and window.samples.size < self.config.window_samples
        matrix = self.normalizer.push(matrix, window.t_start, window.t_end, learn=not early)
        return Features(matrix, window.t_start, window.t_end, window.index)

    def reset(self) -> None:
        """Forget the stream's statistics."""
        self.normalizer.reset()


def features_stream(core: FeaturesCore) -> CoreStream[FeaturesCore]:
    """The features core as one stream's processor."""
    return CoreStream(core, {Window: core.push})


def _warm_up(context) -> None:
    config = context.artifact.analysis.features
    keep_freed_buffers()  # this stage's own process: every window reuses the last one's buffers
    extract_features(np.sin(np.arange(config.window_samples) / 7.0).astype(np.float32), config)


SPEC = StageSpec(
    name="features",
    warm_up=_warm_up,
    accepts=frozenset({Kind.WINDOW}),
    emits=frozenset({Kind.FEATURES}),
    build=lambda context: features_stream(
        FeaturesCore(context.artifact.analysis.features, context.artifact.analysis.normalize)
    ),
    description="feature matrices of speech windows, as the model was trained on",
)
