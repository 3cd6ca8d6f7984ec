"""Speech in a quiet room, made here for tests alone.

The room noise is generated in this module on purpose: a test of how speech is heard in
noise must not share its noise with the training augmentation it would then confirm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser_stream.audio import bundled_sample, load_audio

RATE = 16_000
ROOM_DBFS = -55.0
"""A quiet room: ventilation and electronics, well above a studio's digital floor."""


def room_noise(seconds: float, dbfs: float = ROOM_DBFS, seed: int = 0) -> np.ndarray:
    """Room tone at ``dbfs`` RMS: noise falling off as 1/f above 50 Hz, and a faint mains hum."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    hz = np.fft.rfftfreq(n, 1 / RATE)
    spectrum /= np.sqrt(np.maximum(hz, 50.0) / 50.0)
    spectrum[0] = 0.0
    tone = np.fft.irfft(spectrum, n)
    tone += 0.3 * tone.std() * np.sin(2 * np.pi * 50.0 * np.arange(n) / RATE)
    return (tone * 10 ** (dbfs / 20) / np.sqrt(np.mean(tone**2))).astype(np.float32)


@dataclass(frozen=True)
class Talk:
    """Speech bursts in a room: the audio and each burst's ``(start_s, end_s)``."""

    audio: np.ndarray
    bursts: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        """Length of the audio."""
        return self.audio.size / RATE

    def burst_of(self, t_start: float, t_end: float) -> int | None:
        """The burst that holds ``[t_start, t_end]`` whole (None: it reaches outside)."""
        for index, (start, end) in enumerate(self.bursts):
            if start <= t_start and t_end <= end:
                return index
        return None


def sentences() -> list[np.ndarray]:
    """The two sentences of the bundled sample (a real voice), cut in its own pauses."""
    audio = load_audio(bundled_sample())
    return [
        audio[round(0.3 * RATE) : round(5.6 * RATE)],
        audio[round(6.6 * RATE) : round(11.8 * RATE)],
    ]


def talk_in_room(gap_s: float = 1.2, pause_s: float = 3.0) -> Talk:
    """Three sentences ``gap_s`` apart in room noise, then a ``pause_s`` pause of it."""
    first, second = sentences()
    parts = [np.zeros(round(0.5 * RATE), np.float32)]
    bursts = []
    for index, sentence in enumerate((first, second, first)):
        if index:
            parts.append(np.zeros(round(gap_s * RATE), np.float32))
        start = sum(p.size for p in parts)
        parts.append(sentence)
        bursts.append((start / RATE, (start + sentence.size) / RATE))
    parts.append(np.zeros(round(pause_s * RATE), np.float32))
    speech = np.concatenate(parts)
    audio = speech + room_noise(speech.size / RATE, seed=7)
    return Talk(np.clip(audio, -1.0, 1.0).astype(np.float32), bursts)
