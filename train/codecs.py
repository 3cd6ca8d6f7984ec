"""Real speech codecs, run through the ``ffmpeg`` program: encode, decode, align.

The channel-shift yardstick hears test speech through these codecs instead of our own
simulations, so a model cannot score well on it by having memorised how training
augmentation imitates a line. Resampling to and from the codec's line rate is ffmpeg's too;
nothing here shares code with :mod:`ser_stream.train.acoustics`.

Audio travels over pipes as raw float32 PCM; nothing is written to disk.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ser_stream.errors import InputError

__all__ = ["CODECS", "Codec", "ffmpeg_available", "round_trip"]

FFMPEG = "ffmpeg"
"""The program run for every round trip (looked up on ``PATH``)."""

_MISSING = (
    "ffmpeg not found: install it (apt-get install ffmpeg) to run the real-codec channel conditions"
)
_MAX_DELAY_S = 0.25
"""Longest codec + resampler delay the alignment looks for."""


@dataclass(frozen=True, slots=True)
class Codec:
    """One codec as ffmpeg runs it.

    Attributes:
        name: short name, the key in :data:`CODECS`.
        encoder: ffmpeg encoder (``-c:a``).
        format: ffmpeg container or raw format the coded stream travels in (``-f``).
        line_rate: sample rate the codec runs at, in Hz.
        bitrate: target bit rate in bit/s, or ``None`` where the codec has one fixed rate.
        description: one line for reports.
        encoder_options: further encoder options (``-application voip``).
        decoder_options: input options the decoder needs, for headerless formats that do
            not carry their sample rate.
    """

    name: str
    encoder: str
    format: str
    line_rate: int
    bitrate: int | None
    description: str
    encoder_options: tuple[str, ...] = ()
    decoder_options: tuple[str, ...] = ()

    @property
    def narrowband(self) -> bool:
        """Whether the codec carries only the telephone band (a line rate of 8 kHz)."""
        return self.line_rate <= 8_000


def _headerless(rate: int) -> tuple[str, ...]:
    return ("-ar", str(rate), "-ac", "1")


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec(
            "gsm",
            "libgsm",
            "gsm",
            8_000,
            None,
            "GSM 06.10 full rate (libgsm), 13 kbit/s, 8 kHz",
            decoder_options=("-ar", "8000"),
        ),
        Codec(
            "g711-mulaw",
            "pcm_mulaw",
            "mulaw",
            8_000,
            None,
            "G.711 mu-law, 64 kbit/s, 8 kHz",
            decoder_options=_headerless(8_000),
        ),
        Codec(
            "g711-alaw",
            "pcm_alaw",
            "alaw",
            8_000,
            None,
            "G.711 A-law, 64 kbit/s, 8 kHz",
            decoder_options=_headerless(8_000),
        ),
        Codec(
            "opus-6k",
            "libopus",
            "ogg",
            8_000,
            6_000,
            "Opus (libopus, VoIP mode), 6 kbit/s, 8 kHz narrowband",
            encoder_options=("-application", "voip"),
        ),
        Codec(
            "opus-12k",
            "libopus",
            "ogg",
            16_000,
            12_000,
            "Opus (libopus, VoIP mode), 12 kbit/s, 16 kHz wideband",
            encoder_options=("-application", "voip"),
        ),
        Codec("g722", "g722", "g722", 16_000, None, "G.722 sub-band ADPCM, 64 kbit/s, 16 kHz"),
        Codec("mp3-16k", "libmp3lame", "mp3", 16_000, 16_000, "MP3 (LAME), 16 kbit/s, 16 kHz"),
    )
}
"""The codecs, by name."""


def ffmpeg_available() -> bool:
    """Whether the ``ffmpeg`` program is on ``PATH``."""
    return shutil.which(FFMPEG) is not None


def round_trip(samples: np.ndarray, sample_rate: int, codec: str | Codec) -> np.ndarray:
    """Return ``samples`` encoded with ``codec`` and decoded again.

    The output is float32 at ``sample_rate`` with exactly the input's length: the codec's
    and resamplers' delay (measured once per codec and rate on a fixed probe) is removed,
    and a decoded stream that comes out short is padded with zeros.

    Args:
        samples: mono audio in [-1, 1] (louder samples are clipped, as a line would).
        sample_rate: its rate, in Hz.
        codec: a name in :data:`CODECS` or a :class:`Codec`.

    Raises:
        InputError: an unknown codec, unusable audio, ffmpeg missing or failing.
    """
    spec = _resolve(codec)
    audio = _checked(samples, sample_rate)
    if audio.size == 0:
        return audio.copy()
    decoded = _encode_decode(audio, sample_rate, spec)
    return _aligned(decoded, _delay(spec, sample_rate), audio.size)


def _resolve(codec: str | Codec) -> Codec:
    if isinstance(codec, Codec):
        return codec
    try:
        return CODECS[codec]
    except KeyError:
        raise InputError(f"unknown codec {codec!r}; choose from {tuple(CODECS)}") from None


def _checked(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"codec round trip takes mono audio, got shape {audio.shape}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise InputError(f"sample rate must be a positive whole number of Hz, got {sample_rate}")
    if not np.all(np.isfinite(audio)):
        raise InputError("audio holds NaN or infinite samples; clean it before the codec")
    return np.clip(audio, -1.0, 1.0)


def _encode_decode(audio: np.ndarray, sample_rate: int, codec: Codec) -> np.ndarray:
    """Two ffmpeg runs over pipes: float32 PCM to the coded stream, and back."""
    pcm = ("-f", "f32le", "-ac", "1")
    bitrate = ("-b:a", str(codec.bitrate)) if codec.bitrate else ()
    encode = (
        *pcm,
        "-ar",
        str(sample_rate),
        "-i",
        "pipe:0",
        "-ar",
        str(codec.line_rate),
        "-c:a",
        codec.encoder,
        *bitrate,
        *codec.encoder_options,
        "-f",
        codec.format,
        "pipe:1",
    )
    decode = (
        "-f",
        codec.format,
        *codec.decoder_options,
        "-i",
        "pipe:0",
        "-ar",
        str(sample_rate),
        *pcm,
        "pipe:1",
    )
    seconds = audio.size / sample_rate
    coded = _ffmpeg(encode, audio.astype("<f4").tobytes(), codec, seconds)
    return np.frombuffer(_ffmpeg(decode, coded, codec, seconds), dtype="<f4").astype(np.float32)


def _ffmpeg(arguments: tuple[str, ...], data: bytes, codec: Codec, seconds: float) -> bytes:
    # One thread: feature workers already run one process per core.
    command = (FFMPEG, "-hide_banner", "-loglevel", "error", "-threads", "1", *arguments)
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=60 + seconds)
    except FileNotFoundError:
        raise InputError(_MISSING) from None
    except subprocess.TimeoutExpired:
        raise InputError(f"ffmpeg hung on the {codec.name} round trip; check its install") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[0] if lines else f"exit status {done.returncode}"
        raise InputError(f"ffmpeg failed on the {codec.name} round trip: {reason}")
    return done.stdout


@lru_cache(maxsize=64)
def _delay(codec: Codec, sample_rate: int) -> int:
    """Samples by which the decoded stream lags its input (negative: it leads).

    Measured by cross-correlation on a fixed speech-like probe rather than on each clip,
    so silence, noise or a clip's own periodicity cannot mislead the alignment.
    """
    probe = _probe(sample_rate)
    decoded = _encode_decode(probe, sample_rate, codec)
    reach = round(_MAX_DELAY_S * sample_rate)
    size = probe.size + decoded.size
    correlation = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(probe, size)), size)
    lags = np.arange(-reach, reach + 1)
    return int(lags[np.argmax(correlation[lags])])


def _probe(sample_rate: int) -> np.ndarray:
    """One second of a gliding harmonic voice with syllable-rate loudness."""
    t = np.arange(sample_rate) / sample_rate
    pitch = 120.0 + 60.0 * t + 15.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    top = int(0.45 * sample_rate / pitch.max())
    harmonics = sum(np.sin(k * phase + k * k) / k for k in range(1, max(top, 1) + 1))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.5 * t)
    voice = harmonics * envelope
    return (0.3 * voice / np.max(np.abs(voice))).astype(np.float32)


def _aligned(decoded: np.ndarray, lag: int, n_samples: int) -> np.ndarray:
    if lag < 0:
        decoded = np.concatenate([np.zeros(-lag, dtype=np.float32), decoded])
        lag = 0
    out = decoded[lag : lag + n_samples]
    if out.size < n_samples:
        out = np.pad(out, (0, n_samples - out.size))
    return np.ascontiguousarray(out, dtype=np.float32)
