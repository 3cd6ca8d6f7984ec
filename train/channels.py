"""The channel-shift yardstick: fixed conditions that real audio imposes on clean test speech.

Each condition is a deterministic function of the clip (through ``seed``), so every model is
judged on exactly the same degraded audio. The reverberation here comes from image-source
rooms (pyroomacoustics); training augmentation uses a different room model
(:func:`~ser_stream.train.acoustics.decaying_noise_rir`), so the yardstick does not reward
memorising one simulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ser_stream.errors import InputError
from ser_stream.train import acoustics

__all__ = ["CONDITIONS", "NOISE_SNR_DB", "apply_condition"]

CONDITIONS = ("telephone", "laptop", "reverb", "noise", "gain")
"""Channel conditions, in report order."""

NOISE_SNR_DB = 10.0
"""Speech-to-noise ratio of the ``noise`` condition."""

GAIN_DB = -20.0
"""Gain of the ``gain`` condition."""

_ROOMS = 16
_RT60_RANGE_S = (0.3, 0.8)


def apply_condition(
    name: str,
    samples: np.ndarray,
    sample_rate: int,
    seed: int,
    *,
    babble_sources: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Return ``samples`` as heard through condition ``name``.

    Args:
        name: one of :data:`CONDITIONS`.
        samples: clean float32 mono audio.
        sample_rate: its rate, in Hz.
        seed: chooses the room, noise mixture and offsets for this clip.
        babble_sources: speech of other talkers for the ``noise`` condition's babble
            (played backwards, so no words or emotion come through).

    Raises:
        InputError: an unknown condition.
    """
    rng = np.random.default_rng(seed)
    if name == "telephone":
        band = acoustics.band_limit(samples, sample_rate, 300.0, 3400.0)
        return acoustics.mu_law_round_trip(band, sample_rate)
    if name == "laptop":
        low_cut = acoustics.band_limit(samples, sample_rate, 200.0, None)
        presence = acoustics.peaking_eq(3_000.0, 8.0, 1.0, sample_rate)
        return np.clip(acoustics.apply_biquad(low_cut, presence), -1.0, 1.0)
    if name == "reverb":
        rir = _room_bank(sample_rate)[int(rng.integers(_ROOMS))]
        return acoustics.convolve_rir(samples, rir)
    if name == "noise":
        return np.clip(_noisy(samples, sample_rate, rng, babble_sources), -1.0, 1.0)
    if name == "gain":
        return (samples * 10.0 ** (GAIN_DB / 20.0)).astype(np.float32)
    raise InputError(f"unknown channel condition {name!r}; choose from {CONDITIONS}")


def _noisy(
    samples: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    babble_sources: Sequence[np.ndarray],
) -> np.ndarray:
    """A room's noise: babble of other talkers, ventilation rumble and mains hum."""
    n = samples.size
    parts = [
        (acoustics.colored_noise(n, 2.0, rng), 1.0),
        (acoustics.mains_hum(n, sample_rate, rng), 0.3),
    ]
    if babble_sources:
        reversed_speech = [np.ascontiguousarray(s[::-1]) for s in babble_sources]
        parts.append((acoustics.babble(reversed_speech, n, rng), 1.5))
    noise = sum(weight * part for part, weight in parts)
    return acoustics.mix_at_snr(samples, noise, NOISE_SNR_DB)


@lru_cache(maxsize=2)
def _room_bank(sample_rate: int) -> tuple[np.ndarray, ...]:
    """The same :data:`_ROOMS` rooms in every process (fixed seeds), RT60 spread evenly."""
    rt60s = np.linspace(*_RT60_RANGE_S, _ROOMS)
    return tuple(
        acoustics.shoebox_rir(float(rt60), sample_rate, np.random.default_rng(1_000 + k))
        for k, rt60 in enumerate(rt60s)
    )
