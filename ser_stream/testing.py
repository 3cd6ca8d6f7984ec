"""Helpers for tests of cores and stages: synthetic audio and a core driver.

Shipped with the package so users testing their own cores or sinks can use them too.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["noise", "room_tone", "run_core", "silence", "tone", "voiced"]

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


def run_core(core, chunks: Iterable[np.ndarray]) -> list:
    """Push every chunk through a streaming core, then flush it; return all outputs in order."""
    outputs: list = []
    for chunk in chunks:
        outputs.extend(core.push(chunk))
    outputs.extend(core.flush())
    return outputs
