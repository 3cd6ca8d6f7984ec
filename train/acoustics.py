"""What rooms, microphones, lines and noise do to speech.

The building blocks of training augmentation and of the channel-shift yardstick.

Every function takes and returns float32 mono audio at ``sample_rate`` (Hz) and is
deterministic given its arguments; randomness comes in as explicit parameters or a
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "apply_biquad",
    "babble",
    "band_limit",
    "colored_noise",
    "convolve_rir",
    "decaying_noise_rir",
    "mains_hum",
    "mix_at_snr",
    "mu_law_round_trip",
    "peaking_eq",
    "shelf_eq",
    "shoebox_rir",
]


def _f32(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32)


def peaking_eq(
    center_hz: float, gain_db: float, q: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Biquad ``(b, a)`` of a peaking EQ (the RBJ audio-EQ cookbook's formulas)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * center_hz / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp])
    return b / a[0], a / a[0]


def shelf_eq(
    corner_hz: float, gain_db: float, sample_rate: int, *, high: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Biquad ``(b, a)`` of a low or high shelf with slope 1 (RBJ cookbook)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * corner_hz / sample_rate
    cos, alpha = np.cos(w0), np.sin(w0) / np.sqrt(2.0)
    root = 2.0 * np.sqrt(amp) * alpha
    sign = -1.0 if high else 1.0
    b = amp * np.array(
        [
            (amp + 1) - sign * (amp - 1) * cos + root,
            sign * 2 * ((amp - 1) - sign * (amp + 1) * cos),
            (amp + 1) - sign * (amp - 1) * cos - root,
        ]
    )
    a = np.array(
        [
            (amp + 1) + sign * (amp - 1) * cos + root,
            -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
            (amp + 1) + sign * (amp - 1) * cos - root,
        ]
    )
    return b / a[0], a / a[0]


def apply_biquad(samples: np.ndarray, coefficients: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Filter ``samples`` through one biquad ``(b, a)``."""
    from scipy.signal import lfilter

    b, a = coefficients
    return _f32(lfilter(b, a, samples))


def band_limit(
    samples: np.ndarray, sample_rate: int, low_hz: float | None, high_hz: float | None
) -> np.ndarray:
    """Keep the band between ``low_hz`` and ``high_hz`` (4th-order Butterworth edges)."""
    from scipy.signal import butter, sosfilt

    nyquist = sample_rate / 2.0
    out = np.asarray(samples, dtype=np.float64)
    if low_hz:
        out = sosfilt(butter(4, low_hz / nyquist, btype="highpass", output="sos"), out)
    if high_hz and high_hz < nyquist:
        out = sosfilt(butter(4, high_hz / nyquist, btype="lowpass", output="sos"), out)
    return _f32(out)


def mu_law_round_trip(samples: np.ndarray, sample_rate: int, line_rate: int = 8_000) -> np.ndarray:
    """Resample to ``line_rate``, code with 8-bit mu-law (G.711), decode and resample back."""
    import librosa
    import soxr

    line = soxr.resample(np.clip(samples, -1.0, 1.0), sample_rate, line_rate)
    coded = librosa.mu_expand(
        librosa.mu_compress(np.clip(line, -1.0, 1.0), mu=255, quantize=True), mu=255, quantize=True
    )
    back = soxr.resample(coded.astype(np.float32), line_rate, sample_rate)
    return _f32(_fit(back, samples.size))


def colored_noise(n_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as ``1 / f**exponent`` (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples)
    freqs[0] = freqs[1] if n_samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=n_samples)
    return _f32(noise / (np.sqrt(np.mean(noise**2)) or 1.0))


def mains_hum(
    n_samples: int, sample_rate: int, rng: np.random.Generator, *, mains_hz: float | None = None
) -> np.ndarray:
    """Hum of the mains (50 or 60 Hz) with decaying harmonics, unit RMS."""
    base = mains_hz or float(rng.choice([50.0, 60.0]))
    t = np.arange(n_samples) / sample_rate
    hum = sum(
        rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 8)
    )
    return _f32(hum / (np.sqrt(np.mean(hum**2)) or 1.0))


def babble(sources: Sequence[np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once: each source looped from a random offset, summed, unit RMS."""
    out = np.zeros(n_samples, dtype=np.float64)
    for source in sources:
        if source.size == 0:
            continue
        level = np.sqrt(np.mean(source.astype(np.float64) ** 2)) or 1.0
        start = int(rng.integers(source.size))
        looped = np.resize(np.roll(source, -start), n_samples)
        out += looped / level
    return _f32(out / (np.sqrt(np.mean(out**2)) or 1.0))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` so the speech-to-noise power ratio is ``snr_db``.

    Speech power is measured over its louder half of 30 ms frames, so the pauses of a
    recording do not make the noise quieter than stated.
    """
    speech = np.asarray(speech, dtype=np.float64)
    noise = np.resize(np.asarray(noise, dtype=np.float64), speech.size)
    frame = 480
    usable = speech.size // frame * frame
    if usable:
        powers = np.mean(speech[:usable].reshape(-1, frame) ** 2, axis=1)
        speech_power = float(np.mean(np.sort(powers)[powers.size // 2 :]))
    else:
        speech_power = float(np.mean(speech**2))
    noise_power = float(np.mean(noise**2)) or 1e-12
    scale = np.sqrt(max(speech_power, 1e-12) / (noise_power * 10.0 ** (snr_db / 10.0)))
    return _f32(speech + scale * noise)


def decaying_noise_rir(
    rt60_s: float, sample_rate: int, rng: np.random.Generator, *, direct_to_reverb_db: float = 0.0
) -> np.ndarray:
    """A statistical room response: a direct path, then noise decaying 60 dB in ``rt60_s``."""
    length = max(2, round(rt60_s * sample_rate))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * 10.0 ** (-3.0 * t / rt60_s)
    tail[: round(0.002 * sample_rate)] = 0.0  # reflections arrive after the direct sound
    tail *= 10.0 ** (-direct_to_reverb_db / 20.0) / (np.sqrt(np.sum(tail**2)) or 1.0)
    tail[0] = 1.0
    return _f32(tail)


def shoebox_rir(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """An image-source room response (pyroomacoustics) of a random furnished-size room.

    The absorption and reflection order come from Sabine's formula for ``rt60_s``; source and
    microphone stand at random places at least 0.5 m from the walls.
    """
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.2)])
    absorption, max_order = pra.inverse_sabine(rt60_s, dims)
    room = pra.ShoeBox(
        dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order
    )
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return _f32(rir / (np.max(np.abs(rir)) or 1.0))


def convolve_rir(samples: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Reverberate ``samples`` with ``rir``, keeping the length and the peak level."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(np.asarray(samples, dtype=np.float64), rir)[: samples.size]
    peak_in = float(np.max(np.abs(samples))) if samples.size else 0.0
    peak_out = float(np.max(np.abs(wet))) if wet.size else 0.0
    if peak_out > 0:
        wet *= peak_in / peak_out
    return _f32(wet)


def _fit(samples: np.ndarray, n_samples: int) -> np.ndarray:
    if samples.size >= n_samples:
        return samples[:n_samples]
    return np.pad(samples, (0, n_samples - samples.size))
