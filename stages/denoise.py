"""Denoise stage: speech windows in, denoised and loudness-normalized windows out.

Noise reduction is noisereduce's stationary spectral gate, fed with the non-speech audio the
VAD hands downstream (the stream's own noise profile). Normalization follows pydub's
``effects.normalize``: scale so the peak sits ``headroom_db`` below full scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ser_stream.adapter import CoreStream
from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.messages import Kind, Noise, Window
from ser_stream.stage import StageSpec

__all__ = [
    "SPEC",
    "DenoiseConfig",
    "DenoiseCore",
    "NoiseGate",
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
_HOP = _N_FFT // 4
"""STFT frame and hop, in samples (noisereduce's ``win_length`` = ``n_fft``, hop a quarter)."""

_PADDING = 1024
"""Samples of context on each side of a window. noisereduce pads each chunk by 30000 samples
by default, which triples the work on a 3 s window; one frame of context is all the gate
needs."""

_CHUNK = 600_000
"""noisereduce's chunk size: longer audio is gated in chunks, and the noise clipped to it."""

_TOP_DB = 80.0
"""noisereduce's floor of the spectrogram in dB, below each frequency's loudest frame."""


class NoiseGate:
    """noisereduce's stationary spectral gate for one noise profile.

    The noise statistics (noisereduce's ``SpectralGateStationary``: STFT of the profile, mean
    and spread in dB per frequency) are computed once, when the gate is built. Each window is
    then gated as noisereduce's ``spectral_gating_stationary`` does, with the same scipy
    FFTs, except that the smoothing filter (an outer product of two triangles) is applied
    as two 1-D correlations instead of a 2-D FFT convolution, and the overlap-add of the
    inverse STFT is four array additions instead of a Python loop over frames. The result is
    ``noisereduce.reduce_noise(..., stationary=True, n_fft=512, padding=1024)`` within
    floating-point rounding (tests hold it to 1e-5).
    """

    def __init__(self, noise: np.ndarray, sample_rate: int, config: DenoiseConfig) -> None:
        """Compute the noise statistics of ``noise`` (float audio at ``sample_rate``)."""
        from noisereduce.spectralgate.stationary import SpectralGateStationary
        from scipy.signal import get_window

        self._noise = noise
        self._sample_rate = sample_rate
        self._config = config
        # The arguments noisereduce.reduce_noise passes, with its defaults where we set none.
        gate = SpectralGateStationary(
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
        self._threshold_db = gate.noise_thresh
        # The filter is outer(freq, time) / sum: its row and column sums are the two factors.
        # (_smoothing_filter is noisereduce 3.0's attribute; the tests catch a change.)
        kernel = gate._smoothing_filter if gate.smooth_mask else None
        self._smoothing = None if kernel is None else (kernel.sum(axis=1), kernel.sum(axis=0))
        self._window = get_window("hann", _N_FFT)
        # scipy's stft scales by this (computed in complex, as scipy does).
        self._scale = float(np.sqrt(1.0 / self._window.astype(np.complex128).sum() ** 2).real)
        # istft undoes the scaling and windows each frame again: one product, one pass.
        self._synthesis = self._window * float(self._window.sum())

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return ``samples`` (1-D float audio) with the noise gated out, as float32."""
        if samples.size > _CHUNK:  # noisereduce would gate it chunk by chunk
            return _noisereduce(samples, self._noise, self._sample_rate, self._config)
        spectrum = self._stft(samples)
        return self._istft(spectrum * self._mask(spectrum), samples.size)

    def _stft(self, samples: np.ndarray) -> np.ndarray:
        """``(frames, bins)`` spectrum of the window, padded as noisereduce and scipy pad it."""
        from scipy import fft

        # _PADDING zeros of context (noisereduce), then half a frame of zeros (scipy's
        # boundary="zeros") on each side.
        offset = _PADDING + _N_FFT // 2
        padded = np.zeros(samples.size + 2 * offset)
        padded[offset : offset + samples.size] = samples
        frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
        spectrum = fft.rfft(frames * self._window, axis=-1)
        spectrum *= self._scale
        return spectrum

    def _mask(self, spectrum: np.ndarray) -> np.ndarray:
        """Smoothed gain per frame and bin: 1 above the noise threshold, else 1 - prop_decrease."""
        db = 20 * np.log10(np.abs(spectrum) + np.finfo(np.float64).eps)
        db = np.maximum(db, np.max(db, axis=0, keepdims=True) - _TOP_DB)
        prop = self._config.prop_decrease
        mask = (db > self._threshold_db) * prop + (1.0 - prop)
        if self._smoothing is not None:
            from scipy.ndimage import correlate1d

            freq, time = self._smoothing
            mask = correlate1d(mask, freq, axis=1, mode="constant")
            mask = correlate1d(mask, time, axis=0, mode="constant")
        return mask

    def _istft(self, spectrum: np.ndarray, n_samples: int) -> np.ndarray:
        """Overlap-add the gated frames back to ``n_samples`` of float32 audio."""
        from scipy import fft

        n_frames = spectrum.shape[0]
        frames = fft.irfft(spectrum, n=_N_FFT, axis=-1)
        frames *= self._synthesis
        # Frame i covers hops i..i+3; adding the quarters last-first keeps scipy's order of
        # summation for every sample.
        quarters = frames.reshape(n_frames, 4, _HOP)
        window_quarters = (self._window**2).reshape(4, _HOP)
        signal = np.zeros((n_frames + 3, _HOP))
        norm = np.zeros((n_frames + 3, _HOP))
        for quarter in range(3, -1, -1):
            signal[quarter : quarter + n_frames] += quarters[:, quarter]
            norm[quarter : quarter + n_frames] += window_quarters[quarter]
        half = _N_FFT // 2
        signal = signal.reshape(-1)[half:-half]
        norm = norm.reshape(-1)[half:-half]
        signal /= np.where(norm > 1e-10, norm, 1.0)
        # noisereduce leaves the chunk's tail beyond the last full hop at zero.
        out = np.zeros(n_samples + 2 * _PADDING)
        out[: signal.size] = signal
        return out[_PADDING : _PADDING + n_samples].astype(np.float32)


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

    def __init__(self, config: DenoiseConfig | None = None, sample_rate: int = SAMPLE_RATE) -> None:
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


def denoise_stream(core: DenoiseCore) -> CoreStream[DenoiseCore]:
    """The denoise core as one stream's processor: noise teaches, windows come out clean."""
    return CoreStream(core, {Noise: core.push_noise, Window: core.push})


def _warm_up(context) -> None:
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
