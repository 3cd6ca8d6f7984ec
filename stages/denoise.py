"""Denoise stage: speech windows in, denoised and loudness-normalized windows out.

Noise reduction is noisereduce's stationary spectral gate (computed with numpy alone, in
``spectral_gate``), fed with the non-speech audio the VAD hands downstream (the stream's own
noise profile). Normalization follows pydub's
``effects.normalize``: scale so the peak sits ``headroom_db`` below full scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ser_stream.adapter import CoreStream
from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.heap import keep_freed_buffers
from ser_stream.messages import Kind, Noise, Window
from ser_stream.stage import StageSpec
from ser_stream.stages.spectral_gate import N_FFT, NoiseGate

__all__ = [
    "SPEC",
    "DenoiseConfig",
    "DenoiseCore",
    "denoise_stream",
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
        min_noise_s: noise reduction waits until this much noise has been heard (and one STFT
            frame, 512 samples, at the least).
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


def reduce_noise(
    samples: np.ndarray, noise: np.ndarray, sample_rate: int, config: DenoiseConfig
) -> np.ndarray:
    """Remove the stationary noise described by ``noise`` from ``samples``.

    One-off form of :class:`NoiseGate`; a stream reuses one gate while its profile holds.
    """
    return _gate(noise, sample_rate, config)(np.asarray(samples, dtype=np.float32))


def _gate(noise: np.ndarray, sample_rate: int, config: DenoiseConfig) -> NoiseGate:
    return NoiseGate(
        noise,
        sample_rate,
        prop_decrease=config.prop_decrease,
        n_std_thresh=config.n_std_thresh,
    )


class DenoiseCore:
    """Pure and stateful: the noise profile of one stream, and its gate.

    The gate (noise statistics) is built on the first window after the profile changed and
    reused for every window until the next noise arrives.
    """

    def __init__(self, config: DenoiseConfig | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        self.config = config or DenoiseConfig()
        self.sample_rate = sample_rate
        self._memory = round(self.config.noise_memory_s * sample_rate)
        # The gate needs one STFT frame of noise at least.
        self._min_noise = max(round(self.config.min_noise_s * sample_rate), N_FFT)
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
                self._gate = _gate(self._noise, self.sample_rate, self.config)
            samples = self._gate(samples)
        return replace(window, samples=normalize_peak(samples, self.config.headroom_db))


def denoise_stream(core: DenoiseCore) -> CoreStream[DenoiseCore]:
    """The denoise core as one stream's processor: noise teaches, windows come out clean."""
    return CoreStream(core, {Noise: core.push_noise, Window: core.push})


def _warm_up(context) -> None:
    keep_freed_buffers()  # this stage's own process: every window reuses the last one's buffers
    core = DenoiseCore(context.artifact.analysis.denoise, context.artifact.sample_rate)
    rng = np.random.default_rng(0)
    core.push_noise(Noise(rng.standard_normal(8_000).astype(np.float32) * 0.01, 0.0, 0.5))
    core.push(Window(rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1, 0.0, 1.0, 0, 0))


SPEC = StageSpec(
    name="denoise",
    warm_up=_warm_up,
    accepts=frozenset({Kind.NOISE, Kind.WINDOW}),
    emits=frozenset({Kind.WINDOW}),
    build=lambda context: denoise_stream(
        DenoiseCore(context.artifact.analysis.denoise, context.artifact.sample_rate)
    ),
    description="noise reduction with the stream's noise profile, then peak normalization",
)
