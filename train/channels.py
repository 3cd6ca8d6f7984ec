"""The channel-shift yardstick: fixed conditions that real audio imposes on clean test speech.

Each condition is a deterministic function of the clip (through ``seed``), so every model is
judged on exactly the same degraded audio. The yardstick is made apart from training
augmentation (:mod:`ser_stream.train.augment`) so that it does not reward memorising our own
simulator: telephone and VoIP lines are real codecs run by ffmpeg
(:mod:`ser_stream.train.codecs`) behind band-pass filters of families augmentation never
uses, room noise comes from the yardstick's own generators (:mod:`ser_stream.train.rooms`),
and reverberation from image-source rooms where training uses statistical ones.

Where a condition still imposes a kind of degradation that augmentation can draw, however
differently made, :data:`SHARED_WITH_TRAINING` says so; the other conditions share neither
code nor kind with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ser_stream.errors import InputError
from ser_stream.train import acoustics, codecs, rooms

__all__ = [
    "CONDITIONS",
    "DESCRIPTIONS",
    "GAIN_DB",
    "NOISE_SNR_DB",
    "SHARED_WITH_TRAINING",
    "apply_condition",
]

_CODEC_CONDITIONS = ("gsm", "g711-mulaw", "g711-alaw", "opus-6k", "opus-12k", "g722", "mp3-16k")

CONDITIONS = (*_CODEC_CONDITIONS, "band-cheby", "reverb", "noise", "gain")
"""Channel conditions, in report order."""

NOISE_SNR_DB = 10.0
"""Speech-to-noise ratio of the ``noise`` condition."""

GAIN_DB = -20.0
"""Gain of the ``gain`` condition."""

TELEPHONE_BAND_HZ = (300.0, 3_400.0)
"""Pass band of the telephone line in front of the narrowband codecs and of ``band-cheby``."""

_ROOMS = 16
_RT60_RANGE_S = (0.3, 0.8)
_NOISE_LEVEL_DBFS = -40.0  # any level: mixing sets the SNR

_LINE = "elliptic 300-3400 Hz line band (8th order) + "
DESCRIPTIONS: dict[str, str] = {
    **{
        name: (_LINE if codecs.CODECS[name].narrowband else "") + codecs.CODECS[name].description
        for name in _CODEC_CONDITIONS
    },
    "band-cheby": "300-3400 Hz band only: Chebyshev type I (8th order, 1 dB ripple), no codec",
    "reverb": "room reverberation, RT60 0.3-0.8 s (image-source shoebox rooms)",
    "noise": "room noise at 10 dB SNR: fan, drifting mains hum, reversed babble of other talkers",
    "gain": "-20 dB gain",
}
"""One line per condition, for reports."""

_BAND = (
    "partly: its 300-3400 Hz line band is a band limit, which augment's band_prob draws "
    "(4th-order Butterworth, random edges); the {codec} codec has no training counterpart"
)
SHARED_WITH_TRAINING: dict[str, str] = {
    "gsm": _BAND.format(codec="GSM"),
    "g711-mulaw": "mu-law companding at 8 kHz, as augment's mu-law round trip (codec_prob); "
    "here ffmpeg's coder and resampler behind an elliptic line band",
    "g711-alaw": "A-law is G.711's other 8-bit log companding law, the family of augment's "
    "mu-law round trip (codec_prob)",
    "opus-6k": _BAND.format(codec="Opus"),
    "band-cheby": "band limiting, as augment's band_prob (random Butterworth edges that span "
    "300-3400 Hz); the filter family and its steepness differ",
    "reverb": "both are reverberation: augment convolves statistical decaying-noise rooms "
    "(reverb_prob), this image-source shoebox rooms",
    "noise": "augment's noise_kinds include hum and reversed babble too, from other generators "
    "(acoustics); the fan has no training counterpart",
    "gain": "augment draws gains in -20..+6 dB",
}
"""Conditions that impose a kind of degradation augmentation can draw, with how."""


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
        seed: chooses the room and the noise for this clip (the lines need no draw).
        babble_sources: speech of other talkers for the ``noise`` condition's babble
            (played backwards, so no words or emotion come through).

    Raises:
        InputError: an unknown condition; ffmpeg missing or failing (codec conditions).
    """
    rng = np.random.default_rng(seed)
    if name in _CODEC_CONDITIONS:
        return _line(samples, sample_rate, codecs.CODECS[name])
    if name == "band-cheby":
        return _filtered(samples, _chebyshev_band(sample_rate))
    if name == "reverb":
        rir = _room_bank(sample_rate)[int(rng.integers(_ROOMS))]
        return acoustics.convolve_rir(samples, rir)
    if name == "noise":
        noise = rooms.room_noise(
            samples.size,
            sample_rate,
            rng,
            level_dbfs=_NOISE_LEVEL_DBFS,
            babble_sources=babble_sources,
        )
        return np.clip(acoustics.mix_at_snr(samples, noise, NOISE_SNR_DB), -1.0, 1.0)
    if name == "gain":
        return (samples * 10.0 ** (GAIN_DB / 20.0)).astype(np.float32)
    raise InputError(f"unknown channel condition {name!r}; choose from {CONDITIONS}")


def _line(samples: np.ndarray, sample_rate: int, codec: codecs.Codec) -> np.ndarray:
    """A call: the telephone band in front of a narrowband codec, then the codec."""
    if codec.narrowband:
        samples = _filtered(samples, _line_band(sample_rate))
    return codecs.round_trip(samples, sample_rate, codec)


def _filtered(samples: np.ndarray, sos: np.ndarray) -> np.ndarray:
    from scipy.signal import sosfilt

    out = sosfilt(sos, np.asarray(samples, dtype=np.float64))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@lru_cache(maxsize=4)
def _line_band(sample_rate: int) -> np.ndarray:
    """Elliptic band-pass (8th order, 0.5 dB ripple, 50 dB stop band): a line's steep edges."""
    from scipy.signal import ellip

    return ellip(4, 0.5, 50.0, TELEPHONE_BAND_HZ, "bandpass", fs=sample_rate, output="sos")


@lru_cache(maxsize=4)
def _chebyshev_band(sample_rate: int) -> np.ndarray:
    """Chebyshev type I band-pass (8th order, 1 dB pass-band ripple)."""
    from scipy.signal import cheby1

    return cheby1(4, 1.0, TELEPHONE_BAND_HZ, "bandpass", fs=sample_rate, output="sos")


@lru_cache(maxsize=2)
def _room_bank(sample_rate: int) -> tuple[np.ndarray, ...]:
    """The same :data:`_ROOMS` rooms in every process (fixed seeds), RT60 spread evenly."""
    rt60s = np.linspace(*_RT60_RANGE_S, _ROOMS)
    return tuple(
        acoustics.shoebox_rir(float(rt60), sample_rate, np.random.default_rng(1_000 + k))
        for k, rt60 in enumerate(rt60s)
    )
