"""The signal processing behind the features, in numpy alone.

Every function here computes what the librosa function it names computes, with the same
framing, padding, windows and constants, so that a model trained on librosa's features is
served with the same numbers (``tests/unit/test_spectral_parity.py`` holds each to librosa on
real and synthetic speech, and states the tolerance). librosa stays the reference and the
training-time library; serving does without it, because importing it brings numba and LLVM
(about 120 MB per process, over a second of start-up, and a compile step on a fresh install).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "delta",
    "dct_matrix",
    "frame",
    "hann",
    "mel_filter_bank",
    "power_spectrogram",
    "power_to_db",
    "rms",
    "yin",
    "zero_crossing_rate",
]


def frame(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``(n_frames, frame_length)`` read-only view of ``y`` (``librosa.util.frame``, transposed)."""
    if y.size < frame_length:
        raise ValueError(f"{y.size} samples are shorter than one frame of {frame_length}")
    return np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop_length]


def _centered(y: np.ndarray, frame_length: int, mode: str = "constant") -> np.ndarray:
    half = frame_length // 2
    return np.pad(y, (half, half), mode=mode)


@functools.lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    """Periodic Hann window of ``n`` samples, read-only.

    Computed as ``scipy.signal.get_window("hann", n)`` computes it (a symmetric window one
    sample longer, its last sample dropped), so that the two are equal bit for bit.
    """
    angles = np.linspace(-np.pi, np.pi, n + 1)
    window = np.zeros(n + 1)
    for k, weight in enumerate((0.5, 0.5)):
        window += weight * np.cos(k * angles)
    window = window[:-1]
    window.flags.writeable = False
    return window


def power_spectrogram(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``(1 + n_fft // 2, n_frames)`` float32 power of ``librosa.stft`` (Hann, centered, zeros).

    librosa multiplies float32 frames by a float64 window, transforms in float64 and stores
    complex64; the same steps here keep the rounding the same.
    """
    frames = frame(_centered(np.asarray(y, dtype=np.float32), n_fft), n_fft, hop_length)
    spectrum = np.fft.rfft(frames * hann(n_fft), axis=-1).astype(np.complex64)
    return np.ascontiguousarray((np.abs(spectrum) ** 2).T)


@functools.lru_cache(maxsize=16)
def mel_filter_bank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """``(n_mels, 1 + n_fft // 2)`` float32 ``librosa.filters.mel`` (Slaney scale and norm).

    Read-only: one copy serves every call with the same settings.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = np.subtract.outer(hz_points, fft_freqs)
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float32)
    for band in range(n_mels):
        lower = -ramps[band] / widths[band]
        upper = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, np.newaxis]
    weights.flags.writeable = False
    return weights


_MEL_STEP_HZ = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _MEL_STEP_HZ
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    if hz >= _LOG_START_HZ:
        return _LOG_START_MEL + float(np.log(hz / _LOG_START_HZ)) / _LOG_STEP
    return hz / _MEL_STEP_HZ


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _MEL_STEP_HZ * mels
    log_part = mels >= _LOG_START_MEL
    hz[log_part] = _LOG_START_HZ * np.exp(_LOG_STEP * (mels[log_part] - _LOG_START_MEL))
    return hz


@functools.lru_cache(maxsize=8)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` orthonormal DCT-II, the transform of ``librosa.feature.mfcc``.

    float64: librosa's float32 DCT and this product round differently; in float64 the result
    sits within float32 rounding of both.
    """
    k = np.arange(n_out)[:, np.newaxis]
    n = np.arange(n_in)[np.newaxis, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    basis.flags.writeable = False
    return basis


def power_to_db(power: np.ndarray, amin: float = 1e-10) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=None)``."""
    return 10.0 * np.log10(np.maximum(np.float32(amin), power))


def rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``(n_frames,)`` float32 ``librosa.feature.rms`` (centered, zero padding)."""
    padded = _centered(np.asarray(y, dtype=np.float32), frame_length)
    frames = frame(padded, frame_length, hop_length)
    return np.sqrt(np.mean(np.abs(frames) ** 2, axis=-1, dtype=np.float32))


def zero_crossing_rate(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``(n_frames,)`` ``librosa.feature.zero_crossing_rate`` (centered, edge padding).

    A sample within 1e-10 of zero counts as positive; the first sample of each frame never
    counts as a crossing.
    """
    padded = _centered(np.asarray(y), frame_length, mode="edge")
    negative = np.signbit(np.where(np.abs(padded) <= 1e-10, 0.0, padded))
    crossings = negative[1:] != negative[:-1]
    # A frame of frame_length samples holds frame_length - 1 neighbouring pairs.
    return frame(crossings, frame_length - 1, hop_length).sum(axis=-1) / frame_length


def delta(data: np.ndarray, order: int = 1, width: int = 9) -> np.ndarray:
    """``librosa.feature.delta(data, order=order, width=width)`` along the last axis.

    A Savitzky-Golay derivative of polynomial degree ``order``: inside, each frame gets the
    derivative of the least-squares polynomial through the ``width`` frames around it. At the
    edges librosa (``mode="interp"``) uses the polynomial through the first or last ``width``
    frames, whose ``order``-th derivative is constant: the value of the nearest inner frame.
    """
    if data.shape[-1] < width:
        raise ValueError(f"delta needs at least {width} frames, got {data.shape[-1]}")
    half = width // 2
    inner = np.lib.stride_tricks.sliding_window_view(data, width, axis=-1) @ _savgol(order, width)
    first = np.repeat(inner[..., :1], half, axis=-1)
    last = np.repeat(inner[..., -1:], half, axis=-1)
    return np.concatenate([first, inner, last], axis=-1).astype(data.dtype)


@functools.lru_cache(maxsize=8)
def _savgol(order: int, width: int) -> np.ndarray:
    offsets = np.arange(width) - width // 2
    vandermonde = np.vander(offsets, order + 1, increasing=True).astype(np.float64)
    return np.linalg.pinv(vandermonde)[order] * float(np.prod(np.arange(1, order + 1)))


def yin(
    y: np.ndarray,
    *,
    fmin: float,
    fmax: float,
    sample_rate: int,
    frame_length: int,
    hop_length: int,
    trough_threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame fundamental frequency (Hz) by YIN, and each frame's periodicity (0 to 1).

    The frequency is ``librosa.yin``'s (centered, zero padding): the difference function
    comes from an FFT autocorrelation, and each frame's period is the first trough of the
    cumulative-mean-normalized difference below ``trough_threshold`` (the global minimum when
    none is), refined by parabolic interpolation. librosa works in float32 here; float64 is
    faster with numpy's FFT and only closer to the exact values. The periodicity is the
    frame's normalized autocorrelation at the rounded period.
    """
    frames = frame(
        _centered(np.asarray(y, dtype=np.float64), frame_length), frame_length, hop_length
    )
    min_period = int(np.floor(sample_rate / fmax))
    max_period = min(int(np.ceil(sample_rate / fmin)), frame_length - 1)
    n_pad = 1 << (2 * frame_length - 2).bit_length()  # no circular overlap up to any lag
    spectrum = np.fft.rfft(frames, n=n_pad, axis=-1)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=n_pad, axis=-1)
    energy = np.cumsum(np.square(frames), axis=-1)
    cmnd = _normalized_difference(acf[:, : max_period + 1], energy, min_period, max_period)
    shifts = _parabolic_shifts(cmnd)
    troughs = np.empty_like(cmnd, dtype=bool)
    troughs[:, 1:-1] = (cmnd[:, 1:-1] < cmnd[:, :-2]) & (cmnd[:, 1:-1] <= cmnd[:, 2:])
    troughs[:, 0] = cmnd[:, 0] < cmnd[:, 1]
    troughs[:, -1] = cmnd[:, -1] < cmnd[:, -2]
    below = troughs & (cmnd < trough_threshold)
    period = np.where(below.any(axis=1), np.argmax(below, axis=1), np.argmin(cmnd, axis=1))
    rows = np.arange(period.size)
    f0 = sample_rate / (min_period + period + shifts[rows, period])
    lags = np.clip(np.round(sample_rate / f0).astype(int), 1, frame_length - 1)
    # The frame's head (all but its last `lag` samples) against its tail (all but its first).
    head_energy = energy[rows, frame_length - lags - 1]
    tail_energy = energy[:, -1] - energy[rows, lags - 1]
    norm = np.sqrt(head_energy * tail_energy)
    safe = norm > 1e-12
    periodicity = np.zeros(f0.size)
    periodicity[safe] = np.maximum(0.0, acf[rows, lags][safe] / norm[safe])
    return f0, periodicity


def _normalized_difference(
    acf: np.ndarray, energy: np.ndarray, min_period: int, max_period: int
) -> np.ndarray:
    """``(n_frames, periods)`` cumulative mean normalized difference, min to max period."""
    difference = np.empty_like(acf)
    difference[:, 0] = 0
    # librosa's difference at lag 1 reads the running energy after zeroing its first entry.
    lead = energy[:, :max_period].copy()
    lead[:, 0] = 0
    difference[:, 1:] = 2 * (acf[:, :1] - acf[:, 1:]) - lead
    lags = np.arange(1, max_period + 1)
    cumulative_mean = np.cumsum(difference[:, 1:], axis=-1) / lags
    denominator = cumulative_mean[:, min_period - 1 : max_period]
    tiny = np.finfo(denominator.dtype).tiny
    return difference[:, min_period:] / (denominator + tiny)


def _parabolic_shifts(values: np.ndarray) -> np.ndarray:
    """Offset of each point's parabola vertex, 0 where it would move more than a bin."""
    shifts = np.zeros_like(values)
    left, centre, right = values[:, :-2], values[:, 1:-1], values[:, 2:]
    a = right + left - 2 * centre
    b = (right - left) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shifts[:, 1:-1] = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a)
    return shifts
