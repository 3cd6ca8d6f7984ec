"""Noise of a room, for evaluation only: a fan, mains hum and other people talking.

Training augmentation has its own noise generators (:mod:`ser_stream.train.acoustics`);
these are written separately, with other models of each sound, so the channel-shift
yardstick and the sessions-in-a-room evaluation do not hear the noise a model was trained
on. Every generator returns float32 at unit RMS and costs a few FFTs or array passes, so
minutes of noise are cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft

__all__ = ["fan_noise", "mains_hum", "reversed_babble", "room_noise"]

_ENVELOPE_KNOTS = 10
"""Points of the fan's random spectral envelope, spaced evenly in log frequency."""


def fan_noise(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Broadband noise of a fan or air vent, unit RMS.

    The spectrum follows a smooth random envelope (a downward tilt with bumps, drawn at a
    few log-spaced frequencies and interpolated), and the loudness swells slowly as the
    airflow does.
    """
    if n_samples == 0:
        return np.zeros(0, dtype=np.float32)
    size = fft.next_fast_len(n_samples, real=True)
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    knots = np.geomspace(20.0, sample_rate / 2.0, _ENVELOPE_KNOTS)
    tilt_db = -rng.uniform(3.0, 6.0) * np.log2(knots / knots[0])
    envelope_db = tilt_db + rng.normal(0.0, 4.0, _ENVELOPE_KNOTS)
    log_freqs = np.log(np.maximum(freqs, knots[0]))
    gain = 10.0 ** (np.interp(log_freqs, np.log(knots), envelope_db) / 20.0)
    gain[0] = 0.0  # no DC offset
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    noise = fft.irfft(spectrum * gain, size)[:n_samples]
    t = np.arange(n_samples) / sample_rate
    swell = 1.0 + rng.uniform(0.05, 0.25) * np.sin(
        2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi)
    )
    return _unit_rms(noise * swell)


def mains_hum(
    n_samples: int, sample_rate: int, rng: np.random.Generator, *, mains_hz: float | None = None
) -> np.ndarray:
    """Hum of 50 or 60 Hz mains and a few harmonics, drifting slightly in pitch, unit RMS.

    Odd harmonics dominate (a transformer's hum); each has its own random amplitude and
    phase. The mains frequency wanders by up to 0.3 % over tens of seconds.
    """
    base = mains_hz or float(rng.choice([50.0, 60.0]))
    t = np.arange(n_samples) / sample_rate
    drift = 1.0 + rng.uniform(0.0005, 0.003) * np.sin(
        2 * np.pi * rng.uniform(0.02, 0.1) * t + rng.uniform(0, 2 * np.pi)
    )
    phase = 2 * np.pi * base * np.cumsum(drift) / sample_rate
    hum = np.zeros(n_samples)
    for k in range(1, 6):
        if base * k >= sample_rate / 2:
            break
        weight = rng.uniform(0.5, 1.0) if k % 2 else rng.uniform(0.05, 0.3)
        hum += weight / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return _unit_rms(hum)


def reversed_babble(
    sources: Sequence[np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
    *,
    talkers: int = 4,
) -> np.ndarray:
    """Other people talking, played backwards so no words or emotions come through; unit RMS.

    Each of ``talkers`` voices strings together randomly chosen recordings from
    ``sources``, each reversed and entered at a random point, with short pauses between
    them; voices differ in level by a few dB.
    """
    usable = [np.asarray(s, dtype=np.float64)[::-1] for s in sources if np.size(s)]
    if not usable or n_samples == 0:
        return np.zeros(n_samples, dtype=np.float32)
    out = np.zeros(n_samples)
    for _ in range(talkers):
        out += 10.0 ** (rng.uniform(-4.0, 0.0) / 20.0) * _talker(usable, n_samples, rng)
    return _unit_rms(out)


def room_noise(
    n_samples: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    level_dbfs: float,
    babble_sources: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """A room's background at an RMS of ``level_dbfs``: a fan, maybe hum, maybe talkers.

    The fan is always on; mains hum is heard in about half the rooms, and other talkers
    wherever ``babble_sources`` are given. Quiet rooms sit around -60..-40 dBFS.

    Args:
        n_samples: length of the noise.
        sample_rate: its rate, in Hz.
        rng: the draws of this room.
        level_dbfs: RMS level of the result, in dB relative to full scale.
        babble_sources: recordings of other talkers (not the speaker under test).
    """
    noise = fan_noise(n_samples, sample_rate, rng).astype(np.float64)
    if rng.random() < 0.5:
        noise += rng.uniform(0.1, 0.5) * mains_hum(n_samples, sample_rate, rng)
    if len(babble_sources):
        noise += rng.uniform(0.8, 1.6) * reversed_babble(babble_sources, n_samples, rng)
    rms = float(np.sqrt(np.mean(noise**2))) if n_samples else 0.0
    scale = 10.0 ** (level_dbfs / 20.0) / rms if rms > 0 else 0.0
    return (noise * scale).astype(np.float32)


def _talker(sources: list[np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """One voice: reversed recordings one after another from a random start, unit RMS each."""
    pieces: list[np.ndarray] = []
    filled = 0
    first = True
    while filled < n_samples:
        source = sources[int(rng.integers(len(sources)))]
        if first:  # the talker was already speaking when the clip began
            source = source[int(rng.integers(source.size)) :]
            first = False
        pause = np.zeros(int(rng.integers(0, max(source.size // 4, 1))))
        piece = source / (np.sqrt(np.mean(source**2)) or 1.0)
        pieces.extend((piece, pause))
        filled += piece.size + pause.size
    return np.concatenate(pieces)[:n_samples]


def _unit_rms(samples: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
    return (samples / rms if rms > 0 else samples).astype(np.float32)
