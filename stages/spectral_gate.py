"""noisereduce's stationary spectral gate, computed with numpy alone.

The gate gives what ``noisereduce.reduce_noise(y, sr, y_noise=noise, stationary=True,
n_fft=512, padding=1024)`` (noisereduce 3.0) gives, without importing noisereduce or scipy:
their ``scipy.signal`` and ``scipy.stats`` would cost a serving process about 100 MB and part
of its start-up. The steps are noisereduce's and scipy's, in their order of arithmetic:

- noise statistics, once per profile: ``scipy.signal.stft`` of the noise (periodic Hann window
  of 512 samples, hop of 128, half a frame of zeros on each side, scaled by the window's sum),
  its level in dB per frequency and frame floored 80 dB below each frequency's loudest frame,
  and the threshold ``mean + n_std_thresh * std`` over frames, per frequency;
- each window: the same STFT after 1024 samples of context on each side (zeros at the ends of
  the audio); gain 1 where the level exceeds the threshold, else ``1 - prop_decrease``; the
  gain smoothed by noisereduce's filter, the outer product of two triangles (500 Hz, 50 ms),
  applied as one correlation per axis, each triangle as two running box sums; the inverse STFT
  by overlap-add, as ``scipy.signal.istft`` sums it;
- audio longer than noisereduce's 600000-sample chunk is gated chunk by chunk, each chunk with
  1024 samples of its neighbours as context, and the noise profile is clipped to one chunk.

The STFT of a window equals scipy's bit for bit (numpy's and scipy's FFTs are the same
pocketfft); the smoothing differs from noisereduce's FFT convolution by rounding. The noise
statistics are computed in float64 even for float32 noise, which noisereduce (through scipy)
transforms in single precision, so the threshold differs from its by rounding only.
"""

from __future__ import annotations

import numpy as np

from ser_stream.errors import InputError
from ser_stream.stages.spectral import hann

__all__ = ["CHUNK", "N_FFT", "PADDING", "NoiseGate", "smoothing_widths"]

N_FFT = 512
"""STFT frame, in samples (noisereduce's ``win_length`` = ``n_fft``)."""

HOP = N_FFT // 4
"""STFT hop, in samples (noisereduce's default: a quarter frame)."""

PADDING = 1024
"""Samples of context on each side of a window. noisereduce pads each chunk by 30000 samples
by default, which triples the work on a 3 s window; one frame of context is all the gate
needs."""

CHUNK = 600_000
"""noisereduce's chunk size: longer audio is gated in chunks, and the noise clipped to it."""

_TOP_DB = 80.0
"""noisereduce's floor of the spectrogram in dB, below each frequency's loudest frame."""

_FREQ_SMOOTH_HZ = 500
_TIME_SMOOTH_MS = 50
"""noisereduce's defaults for the reach of the gain's smoothing."""

_BINS = N_FFT // 2 + 1
_EPS = np.finfo(np.float64).eps


_WINDOW = hann(N_FFT)
_SCALE = float(np.sqrt(1.0 / _WINDOW.sum() ** 2))
"""scipy.signal.stft's scaling (``scaling="spectrum"``) of a float64 signal."""
_SYNTHESIS = _WINDOW * float(_WINDOW.sum())
"""istft undoes the scaling and windows each frame again: one product, one pass."""
_WINDOW_QUARTERS = (_WINDOW**2).reshape(4, HOP)


def smoothing_widths(sample_rate: int) -> tuple[int, int] | None:
    """Half-widths of noisereduce's smoothing triangles, in bins and frames.

    None where both are 1, where noisereduce does not smooth the gain at all.
    """
    n_freq = int(_FREQ_SMOOTH_HZ / (sample_rate / (N_FFT / 2)))
    n_time = int(_TIME_SMOOTH_MS / ((HOP / sample_rate) * 1000))
    if n_freq < 1 or n_time < 1:
        raise InputError(
            f"sample rate {sample_rate} Hz is too high for the gate's smoothing "
            f"({_FREQ_SMOOTH_HZ} Hz, {_TIME_SMOOTH_MS} ms)"
        )
    return None if n_freq == n_time == 1 else (n_freq, n_time)


def _stft(padded: np.ndarray) -> np.ndarray:
    """The ``(frames, bins)`` spectrum of ``padded``, as scipy.signal.stft computes it.

    ``padded`` is already extended by half a frame of zeros on each side (scipy's
    ``boundary="zeros"``); frames that do not fit are left out (``padded=False``).
    """
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=-1)
    spectrum *= _SCALE
    return spectrum


def _decibels(spectrum: np.ndarray) -> np.ndarray:
    """Level in dB, floored 80 dB below each frequency's peak (noisereduce's ``_amp_to_db``)."""
    db = np.abs(spectrum)
    db += _EPS
    np.log10(db, out=db)
    db *= 20
    floor = db.max(axis=0)
    floor -= _TOP_DB
    return np.maximum(db, floor, out=db)


def _triangle(padded: np.ndarray, n: int, scratch: np.ndarray) -> np.ndarray:
    """Correlate along axis 0 with the triangle ``n + 1 - |k|`` (|k| <= n), zeros beyond.

    ``padded`` holds the values between ``n`` zeros at each end; the result is a view of its
    middle. The triangle is two boxes of ``n + 1``, each a sum of shifted slices.
    """
    before, after = n // 2, n - n // 2
    length = padded.shape[0] - 2 * n
    scratch[...] = padded  # first box: scratch[i] = sum of padded[i - before .. i + after]
    for k in range(1, before + 1):
        scratch[k:] += padded[:-k]
    for k in range(1, after + 1):
        scratch[:-k] += padded[k:]
    out = padded[n : n + length]  # second box, mirrored, over the middle only
    out[...] = scratch[n : n + length]
    for k in range(1, after + 1):
        out += scratch[n - k : n - k + length]
    for k in range(1, before + 1):
        out += scratch[n + k : n + k + length]
    return out


class NoiseGate:
    """noisereduce's stationary spectral gate for one noise profile.

    The noise statistics are computed once, when the gate is built; each call then gates one
    stretch of audio as a fresh ``noisereduce.reduce_noise`` call with this profile would
    (tests hold the two within 1e-5, the profile handed to noisereduce as float64: see the
    module's note on precision).
    """

    def __init__(
        self,
        noise: np.ndarray,
        sample_rate: int,
        *,
        prop_decrease: float,
        n_std_thresh: float,
    ) -> None:
        """Compute the statistics of ``noise`` (1-D float audio at ``sample_rate``)."""
        noise = np.asarray(noise)
        if noise.ndim != 1 or noise.size < N_FFT:
            raise InputError(
                f"a noise profile is 1-D audio of at least {N_FFT} samples, got shape {noise.shape}"
            )
        self._prop_decrease = prop_decrease
        self._widths = smoothing_widths(sample_rate)
        half = N_FFT // 2
        clipped = noise[:CHUNK]
        padded = np.pad(clipped.astype(np.float64), half)
        # noisereduce's layout, (bins, frames) over frame-major memory: the same order of
        # summation in the mean and spread.
        db = _decibels(_stft(padded)).T
        self._threshold_db = np.mean(db, axis=1) + np.std(db, axis=1) * n_std_thresh

    @property
    def threshold_db(self) -> np.ndarray:
        """The level per frequency bin above which a bin passes unchanged, in dB."""
        return self._threshold_db

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Return ``samples`` (1-D float audio) with the noise gated out, as float32."""
        samples = np.asarray(samples)
        if samples.size <= CHUNK:
            return self._gate(samples, 0, samples.size)
        out = np.empty(samples.size, dtype=np.float32)
        for start in range(0, samples.size, CHUNK):
            stop = min(start + CHUNK, samples.size)
            # noisereduce gates a whole chunk, the last one padded with zeros.
            out[start:stop] = self._gate(samples, start, start + CHUNK)[: stop - start]
        return out

    def _gate(self, samples: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Return ``samples[start:stop]`` gated, as float32 (noisereduce's ``filter_chunk``).

        The stretch is gated with PADDING samples of context on each side, zeros beyond the
        audio.
        """
        offset = PADDING + N_FFT // 2  # context, then scipy's half frame of zeros
        padded = np.zeros(stop - start + 2 * offset)
        first, last = max(start - PADDING, 0), min(stop + PADDING, samples.size)
        at = first - (start - offset)
        padded[at : at + last - first] = samples[first:last]
        spectrum = _stft(padded)
        spectrum *= self._gain(spectrum)
        signal = self._istft(spectrum)
        # Output sample i is chunk sample PADDING + i; noisereduce leaves the chunk's tail
        # beyond the last full hop at zero.
        out = np.zeros(stop - start, dtype=np.float32)
        kept = signal[PADDING : PADDING + out.size]
        out[: kept.size] = kept
        return out

    def _gain(self, spectrum: np.ndarray) -> np.ndarray:
        """Smoothed gain per frame and bin: 1 above the noise threshold, else 1 - prop_decrease."""
        db = _decibels(spectrum)
        above = db > self._threshold_db
        prop = self._prop_decrease
        if self._widths is None:
            gain = np.multiply(above, prop, out=db)
            gain += 1.0 - prop
            return gain
        n_frames, bins = db.shape
        n_freq, n_time = self._widths
        # Across frequencies first, on the transposed gain, whose rows are contiguous.
        wide = np.empty((bins + 2 * n_freq, n_frames))
        wide[:n_freq] = 0.0
        wide[n_freq + bins :] = 0.0
        middle = np.multiply(above.T, prop, out=wide[n_freq : n_freq + bins])
        middle += 1.0 - prop
        smoothed = _triangle(wide, n_freq, np.empty(wide.shape))
        tall = np.empty((n_frames + 2 * n_time, bins))
        tall[:n_time] = 0.0
        tall[n_time + n_frames :] = 0.0
        tall[n_time : n_time + n_frames] = smoothed.T
        gain = _triangle(tall, n_time, np.empty(tall.shape))
        gain *= 1.0 / ((n_freq + 1) ** 2 * (n_time + 1) ** 2)  # the filter sums to 1
        return gain

    @staticmethod
    def _istft(spectrum: np.ndarray) -> np.ndarray:
        """Overlap-add the frames of ``spectrum``, without scipy's half frame at each end."""
        n_frames = spectrum.shape[0]
        frames = np.fft.irfft(spectrum, n=N_FFT, axis=-1)
        frames *= _SYNTHESIS
        # Frame i covers hops i..i+3; adding the quarters last-first keeps scipy's order of
        # summation for every sample.
        quarters = frames.reshape(n_frames, 4, HOP)
        signal = np.zeros((n_frames + 3, HOP))
        norm = np.zeros((n_frames + 3, HOP))
        for quarter in range(3, -1, -1):
            signal[quarter : quarter + n_frames] += quarters[:, quarter]
            norm[quarter : quarter + n_frames] += _WINDOW_QUARTERS[quarter]
        half = N_FFT // 2
        signal = signal.reshape(-1)[half:-half]
        norm = norm.reshape(-1)[half:-half]
        return np.divide(signal, norm, out=signal, where=norm > 1e-10)
