"""Audio augmentation for training: the voice, the room, the microphone and the line.

Each augmented copy of a clip draws, in the order sound travels: speed and pitch (the
voice), reverberation and background noise (the room), EQ and band limits (the
microphone), a codec round trip (the line), and a gain. Steps with probability 0 are
skipped, so :class:`AugmentConfig`'s defaults reproduce the original speed + noise + gain
recipe exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ser_stream.train import acoustics

__all__ = ["AugmentConfig", "augment"]


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Ranges each augmented copy draws from.

    Attributes:
        copies: augmented copies per training clip (besides the clean one).
        speed_range: playback speed factors (resampling changes tempo and pitch).
        snr_db_range: signal-to-noise ratio of added noise, in dB.
        gain_db_range: gain applied last, in dB (it moves the level the VAD hears; peak
            normalization later undoes it, except where it clips).
        pitch_prob: chance of a pitch shift (tempo kept), which also moves the formants.
        pitch_semitones: largest pitch shift either way, in semitones.
        reverb_prob: chance of a statistical room response.
        rt60_range_s: reverberation times to draw from, in seconds.
        noise_kinds: noise colours to draw from: ``white``, ``pink``, ``brown``, ``hum``,
            ``babble`` (the same speaker's other clips played backwards). The original
            recipe draws white or pink.
        eq_prob: chance of a random microphone EQ (peaks and shelves).
        eq_db: largest boost or cut of one EQ band, in dB.
        band_prob: chance of band-limiting (a small or cheap microphone).
        codec_prob: chance of an 8 kHz mu-law round trip (a telephone line).
    """

    copies: int = 2
    speed_range: tuple[float, float] = (0.9, 1.1)
    snr_db_range: tuple[float, float] = (15.0, 40.0)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)
    pitch_prob: float = 0.0
    pitch_semitones: float = 3.0
    reverb_prob: float = 0.0
    rt60_range_s: tuple[float, float] = (0.2, 1.0)
    noise_kinds: tuple[str, ...] = ("white", "pink")
    eq_prob: float = 0.0
    eq_db: float = 10.0
    band_prob: float = 0.0
    codec_prob: float = 0.0

    def to_dict(self) -> dict:
        """Plain-JSON form, for cache keys and the model card."""
        data = asdict(self)
        data["noise_kinds"] = list(self.noise_kinds)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Inverse of :meth:`to_dict`."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def augment(
    samples: np.ndarray,
    sample_rate: int,
    config: AugmentConfig,
    seed: int,
    *,
    babble_sources: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Return one randomly perturbed copy of ``samples``; the same seed gives the same copy.

    Args:
        samples: clean float32 mono audio.
        sample_rate: its rate, in Hz.
        config: what to draw from.
        seed: the copy's seed.
        babble_sources: speech for ``babble`` noise (the same speaker's other clips, so no
            other speaker's voice enters a training clip).
    """
    import soxr

    rng = np.random.default_rng(seed)
    # Draws beyond the original recipe come from their own generator, so the original
    # recipe's copies stay bit-identical whatever else is enabled.
    extra = np.random.default_rng([seed, 1])
    speed = rng.uniform(*config.speed_range)
    audio = soxr.resample(samples, sample_rate * speed, sample_rate).astype(np.float32)
    if config.pitch_prob and extra.random() < config.pitch_prob:
        audio = _pitch_shift(audio, sample_rate, extra.uniform(-1, 1) * config.pitch_semitones)
    if config.reverb_prob and extra.random() < config.reverb_prob:
        rir = acoustics.decaying_noise_rir(
            extra.uniform(*config.rt60_range_s),
            sample_rate,
            extra,
            direct_to_reverb_db=extra.uniform(-3.0, 10.0),
        )
        audio = acoustics.convolve_rir(audio, rir)
    audio = _add_noise(audio, sample_rate, config, rng, extra, babble_sources)
    if config.eq_prob and extra.random() < config.eq_prob:
        audio = _random_eq(audio, sample_rate, config.eq_db, extra)
    if config.band_prob and extra.random() < config.band_prob:
        low = extra.uniform(50.0, 400.0) if extra.random() < 0.7 else None
        high = extra.uniform(3_000.0, 7_500.0) if extra.random() < 0.7 else None
        audio = acoustics.band_limit(audio, sample_rate, low, high)
    if config.codec_prob and extra.random() < config.codec_prob:
        audio = acoustics.mu_law_round_trip(np.clip(audio, -1.0, 1.0), sample_rate)
    gain = 10 ** (rng.uniform(*config.gain_db_range) / 20)
    return np.clip(audio * gain, -1.0, 1.0).astype(np.float32)


def _add_noise(
    audio: np.ndarray,
    sample_rate: int,
    config: AugmentConfig,
    rng: np.random.Generator,
    extra: np.random.Generator,
    babble_sources: Sequence[np.ndarray],
) -> np.ndarray:
    if config.noise_kinds == ("white", "pink"):
        return _original_noise(audio, config, rng)
    snr_db = rng.uniform(*config.snr_db_range)
    kinds = [k for k in config.noise_kinds if k != "babble" or babble_sources]
    kind = str(extra.choice(kinds))
    n = audio.size
    if kind == "hum":
        noise = acoustics.mains_hum(n, sample_rate, extra) + 0.3 * acoustics.colored_noise(
            n, 1.0, extra
        )
    elif kind == "babble":
        chosen = extra.choice(len(babble_sources), size=min(4, len(babble_sources)), replace=False)
        noise = acoustics.babble(
            [np.ascontiguousarray(babble_sources[i][::-1]) for i in chosen], n, extra
        )
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        noise = acoustics.colored_noise(n, exponent, extra)
    return acoustics.mix_at_snr(audio, noise, snr_db)


def _original_noise(
    audio: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """White or pink-ish noise at a whole-clip SNR, as the first recipe drew it."""
    power = float(np.mean(audio**2)) or 1e-10
    snr_db = rng.uniform(*config.snr_db_range)
    noise = rng.standard_normal(audio.size).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: integrate white noise, then remove the drift
        noise = np.cumsum(noise) * 0.05
        noise -= np.convolve(noise, np.ones(256) / 256, mode="same")
    noise *= np.sqrt(power / (10 ** (snr_db / 10)) / (float(np.mean(noise**2)) or 1e-10))
    return audio + noise


def _random_eq(
    audio: np.ndarray, sample_rate: int, max_db: float, rng: np.random.Generator
) -> np.ndarray:
    """One or two peaking bands and a shelf at random: the colour of an unknown microphone."""
    for _ in range(int(rng.integers(1, 3))):
        center = float(np.exp(rng.uniform(np.log(150.0), np.log(6_000.0))))
        band = acoustics.peaking_eq(
            center, rng.uniform(-max_db, max_db), rng.uniform(0.5, 2.0), sample_rate
        )
        audio = acoustics.apply_biquad(audio, band)
    high = bool(rng.random() < 0.5)
    corner = rng.uniform(2_000.0, 6_000.0) if high else rng.uniform(100.0, 400.0)
    shelf = acoustics.shelf_eq(corner, rng.uniform(-max_db, max_db) * 0.6, sample_rate, high=high)
    audio = acoustics.apply_biquad(audio, shelf)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio / peak * 0.9 if peak > 1.0 else audio


def _pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(audio, sr=sample_rate, n_steps=semitones).astype(np.float32)
