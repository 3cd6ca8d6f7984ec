"""Denoise stage: speech windows in, denoised and loudness-normalized windows out.

Noise reduction is noisereduce's stationary spectral gate, fed with the non-speech audio the
VAD hands downstream (the stream's own noise profile). Normalization follows pydub's
``effects.normalize``: scale so the peak sits ``headroom_db`` below full scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ser_stream.errors import InputError
from ser_stream.messages import Noise, Window
from ser_stream.stage import StageSpec
from ser_stream.wire import Kind

__all__ = [
    "SPEC",
    "DenoiseConfig",
    "DenoiseCore",
    "DenoiseStream",
    "NoiseGate",
    "normalize_peak",
    "reduce_noise",
]


@dataclass(frozen=True, slots=True)
class DenoiseConfig:
    """Settings of the denoise core.

    Attributes:
        enabled: run noise reduction at all (normalization always runs).
        prop_decrease: share of the estimated noise removed, 0 to 1.
        n_std_thresh: spectral-gate threshold in standard deviations of the noise.
        min_noise_s: noise reduction waits until this much noise has been heard.
        noise_memory_s: only the most recent noise of this length forms the profile.
        headroom_db: peak level after normalization, in dB below full scale.
    """

    enabled: bool = True
    prop_decrease: float = 0.8
    n_std_thresh: float = 1.5
    min_noise_s: float = 0.25
    noise_memory_s: float = 2.0
    headroom_db: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.prop_decrease <= 1.0:
            raise InputError(f"prop_decrease {self.prop_decrease} must be within 0-1")
        if self.headroom_db < 0:
            raise InputError(f"headroom_db {self.headroom_db} must not be negative")


def normalize_peak(samples: np.ndarray, headroom_db: float = 0.1) -> np.ndarray:
    """Scale float audio so its peak is ``headroom_db`` below full scale (pydub semantics).

    Digital silence is returned unchanged, as pydub does.
    """
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        return samples.astype(np.float32, copy=True)
    gain = (10.0 ** (-headroom_db / 20.0)) / peak
    # float64: the gain of a subnormal peak overflows float32.
    return (samples.astype(np.float64) * gain).astype(np.float32)


_N_FFT = 512
_PADDING = 1024
"""Samples of context on each side of a window. noisereduce pads each chunk by 30000 samples
by default, which triples the work on a 3 s window; one frame of context is all the gate
needs."""

_CHUNK = 600_000
"""noisereduce's chunk size: longer audio is gated in chunks, and the noise clipped to it."""


class NoiseGate:
    """noisereduce's stationary spectral gate for one noise profile.

    The noise statistics (STFT of the profile, mean and spread per frequency) are computed
    once, when the gate is built; every window is then gated against them. The result is
    ``noisereduce.reduce_noise(..., stationary=True, n_fft=512, padding=1024)``.
    """

    def __init__(self, noise: np.ndarray, sample_rate: int, config: DenoiseConfig) -> None:
        """Compute the noise statistics of ``noise`` (float audio at ``sample_rate``)."""
        from noisereduce.spectralgate.stationary import SpectralGateStationary

        self._noise = noise
        self._sample_rate = sample_rate
        self._config = config
        self._gate = SpectralGateStationary(
            y=noise,
            sr=sample_rate,
            y_noise=noise,
            n_std_thresh_stationary=config.n_std_thresh,
            chunk_size=_CHUNK,
            clip_noise_stationary=True,
            padding=_PADDING,
            n_fft=_N_FFT,
            win_length=None,
            hop_length=None,
            time_constant_s=2.0,
            freq_mask_smooth_hz=500,
            time_mask_smooth_ms=50,
            tmp_folder=None,
            prop_decrease=config.prop_decrease,
            use_tqdm=False,
            n_jobs=1,
        )

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return ``samples`` (1-D float audio) with the noise gated out, as float32."""
        if samples.size > _CHUNK:  # noisereduce would gate it chunk by chunk
            return _noisereduce(samples, self._noise, self._sample_rate, self._config)
        # Zero context on both sides, as noisereduce pads a lone chunk, then its gate.
        padded = np.zeros((1, samples.size + 2 * _PADDING))
        padded[0, _PADDING:-_PADDING] = samples
        gated = self._gate.spectral_gating_stationary(padded)
        return gated[0, _PADDING:-_PADDING].astype(np.float32)


def _noisereduce(
    samples: np.ndarray, noise: np.ndarray, sample_rate: int, config: DenoiseConfig
) -> np.ndarray:
    import noisereduce

    reduced = noisereduce.reduce_noise(
        y=samples,
        sr=sample_rate,
        y_noise=noise,
        stationary=True,
        prop_decrease=config.prop_decrease,
        n_std_thresh_stationary=config.n_std_thresh,
        n_fft=_N_FFT,
        padding=_PADDING,
    )
    return np.asarray(reduced, dtype=np.float32)


def reduce_noise(
    samples: np.ndarray, noise: np.ndarray, sample_rate: int, config: DenoiseConfig
) -> np.ndarray:
    """Remove the stationary noise described by ``noise`` from ``samples``.

    One-off form of :class:`NoiseGate`; a stream reuses one gate while its profile holds.
    """
    return NoiseGate(noise, sample_rate, config)(np.asarray(samples, dtype=np.float32))


class DenoiseCore:
    """Pure and stateful: the noise profile of one stream, and its gate.

    The gate (noise statistics) is built on the first window after the profile changed and
    reused for every window until the next noise arrives.
    """

    def __init__(self, config: DenoiseConfig | None = None, sample_rate: int = 16_000) -> None:
        self.config = config or DenoiseConfig()
        self.sample_rate = sample_rate
        self._memory = round(self.config.noise_memory_s * sample_rate)
        self._min_noise = round(self.config.min_noise_s * sample_rate)
        self.reset()

    def reset(self) -> None:
        """Forget the noise profile."""
        self._noise = np.zeros(0, dtype=np.float32)
        self._gate: NoiseGate | None = None

    @property
    def noise_profile(self) -> np.ndarray:
        """The noise the next window will be cleaned with (possibly too short to use)."""
        return self._noise

    def push_noise(self, noise: Noise) -> None:
        """Learn from non-speech audio."""
        joined = np.concatenate([self._noise, np.asarray(noise.samples, dtype=np.float32)])
        self._noise = joined[-self._memory :] if self._memory else joined
        self._gate = None  # the statistics are rebuilt on the next window

    def push(self, window: Window) -> Window:
        """Return ``window`` with noise reduced (once a profile exists) and normalized."""
        samples = np.asarray(window.samples, dtype=np.float32)
        if self.config.enabled and self._noise.size >= self._min_noise and samples.size:
            if self._gate is None:
                self._gate = NoiseGate(self._noise, self.sample_rate, self.config)
            samples = self._gate(samples)
        return replace(window, samples=normalize_peak(samples, self.config.headroom_db))


class DenoiseStream:
    """The denoise core as one stream's processor: noise teaches, windows come out clean."""

    def __init__(self, core: DenoiseCore) -> None:
        self._core = core

    def push(self, body: Noise | Window) -> list[Window]:
        """Learn from noise, or clean a window."""
        if isinstance(body, Noise):
            self._core.push_noise(body)
            return []
        return [self._core.push(body)]

    def flush(self) -> list[Window]:
        """Nothing is held back."""
        return []


def _warm_up(context) -> None:
    core = DenoiseCore(context.artifact.analysis.denoise, context.artifact.sample_rate)
    rng = np.random.default_rng(0)
    core.push_noise(Noise(rng.standard_normal(8_000).astype(np.float32) * 0.01, 0.0, 0.5))
    core.push(Window(rng.standard_normal(16_000).astype(np.float32) * 0.1, 0.0, 1.0, 0, 0))


SPEC = StageSpec(
    name="denoise",
    warm_up=_warm_up,
    accepts=frozenset({Kind.NOISE, Kind.WINDOW}),
    emits=frozenset({Kind.WINDOW}),
    build=lambda context: DenoiseStream(
        DenoiseCore(context.artifact.analysis.denoise, context.artifact.sample_rate)
    ),
    description="noise reduction with the stream's noise profile, then peak normalization",
)
