"""Synthetic audio for tests: tones, silence, room noise and speech-like signals, float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16_000


def tone(
    seconds: float, frequency: float = 440.0, *, amplitude: float = 0.3, rate: int = RATE
) -> np.ndarray:
    """A pure sine tone, float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def silence(seconds: float, *, rate: int = RATE) -> np.ndarray:
    """Digital silence, float32."""
    return np.zeros(round(seconds * rate), dtype=np.float32)


def noise(seconds: float, *, level: float = 0.003, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Quiet white noise (room tone), float32."""
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def room_tone(
    seconds: float, dbfs: float, *, kind: str = "hiss", seed: int = 0, rate: int = RATE
) -> np.ndarray:
    """Room noise at an RMS level in dBFS, float32: a real room is never digitally silent.

    ``kind`` is ``hiss`` (white noise), ``hum`` (50 Hz mains and harmonics) or ``fan``
    (brown-ish noise, most energy low).
    """
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    if kind == "hiss":
        out = rng.standard_normal(n)
    elif kind == "hum":
        t = np.arange(n) / rate
        out = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3, 5))
        out = out + 0.05 * rng.standard_normal(n)
    elif kind == "fan":
        out = np.cumsum(rng.standard_normal(n))
        out = out - np.convolve(out, np.ones(401) / 401, mode="same")  # no drift below ~40 Hz
    else:
        raise ValueError(f"room tone kind {kind!r} is not hiss, hum or fan")
    rms = np.sqrt(np.mean(np.square(out))) + 1e-12
    return (out * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def voiced(
    seconds: float, *, f0: float = 140.0, amplitude: float = 0.4, seed: int = 0, rate: int = RATE
) -> np.ndarray:
    """A speech-like signal that WebRTC VAD takes for speech.

    A glottal-like harmonic series with a wandering pitch, shaped by syllable-rate amplitude
    modulation, over quiet noise.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))
    out = signal * envelope
    out = amplitude * out / (np.max(np.abs(out)) + 1e-9)
    return (out + noise(seconds, level=0.002, seed=seed + 1, rate=rate)).astype(np.float32)


def talk(
    path: Path, utterances: int, *, speech_s: float = 2.5, f0_step: float = 10.0, rate: int = RATE
) -> Path:
    """Write ``utterances`` of :func:`voiced` speech as 16-bit audio; return ``path``.

    Stretches of room noise (never digital silence) stand between and around them.
    """
    import soundfile

    parts = [noise(0.5, rate=rate)]
    for i in range(utterances):
        parts += [
            voiced(speech_s, f0=120 + f0_step * (i % 8), seed=i, rate=rate),
            noise(0.6, seed=100 + i, rate=rate),
        ]
    soundfile.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return path
