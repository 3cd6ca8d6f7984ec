"""Audio augmentation for training: speed (tempo and pitch together), noise and gain."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AugmentConfig", "augment"]


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Ranges each augmented copy draws from.

    Attributes:
        copies: augmented copies per training clip (besides the clean one).
        speed_range: playback speed factors (resampling changes tempo and pitch).
        snr_db_range: signal-to-noise ratio of added white/pink noise, in dB.
        gain_db_range: gain applied last, in dB (it moves the level the VAD hears; peak
            normalization later undoes it, except where it clips).
    """

    copies: int = 2
    speed_range: tuple[float, float] = (0.9, 1.1)
    snr_db_range: tuple[float, float] = (15.0, 40.0)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)

    def to_dict(self) -> dict:
        """Plain-JSON form, for cache keys and the model card."""
        return asdict(self)


def augment(samples: np.ndarray, sample_rate: int, config: AugmentConfig, seed: int) -> np.ndarray:
    """Return one randomly perturbed copy of ``samples``; the same seed gives the same copy."""
    import soxr

    rng = np.random.default_rng(seed)
    speed = rng.uniform(*config.speed_range)
    audio = soxr.resample(samples, sample_rate * speed, sample_rate).astype(np.float32)
    power = float(np.mean(audio**2)) or 1e-10
    snr_db = rng.uniform(*config.snr_db_range)
    noise = rng.standard_normal(audio.size).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: integrate white noise, then remove the drift
        noise = np.cumsum(noise) * 0.05
        noise -= np.convolve(noise, np.ones(256) / 256, mode="same")
    noise *= np.sqrt(power / (10 ** (snr_db / 10)) / (float(np.mean(noise**2)) or 1e-10))
    gain = 10 ** (rng.uniform(*config.gain_db_range) / 20)
    return np.clip((audio + noise) * gain, -1.0, 1.0).astype(np.float32)
