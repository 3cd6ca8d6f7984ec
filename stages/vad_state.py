"""What the VAD core keeps of its stream, in parts that each reset on their own.

The core (:class:`~ser_stream.stages.vad.VADCore`) decides each frame and hands it on; these
parts hold what it learned: the trigger ring of recent frames before speech, the utterance
being cut into windows, the noise gathered for the denoiser, and the silence after speech.
Every position is in samples from the first sample pushed; ``seconds`` turns one into stream
time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from ser_stream.messages import Event, Noise, Window

__all__ = ["NoiseChunks", "SilenceTracker", "TriggerRing", "Utterance"]

Seconds = Callable[[int], float]
"""Stream time, in seconds, of a position in samples."""


class TriggerRing:
    """Recent frames before speech: enough voiced ones start an utterance (their pre-roll)."""

    def __init__(self, frames: int) -> None:
        self.frames: deque[tuple[np.ndarray, bool]] = deque(maxlen=frames)
        self.start = 0  # position of the oldest frame held

    def reset(self) -> None:
        """Hold nothing."""
        self.frames.clear()
        self.start = 0

    def push(self, frame: np.ndarray, voiced: bool, position: int) -> tuple[np.ndarray, int] | None:
        """Hold a frame at ``position``; return the one that left the full ring, and where."""
        left = None
        if len(self.frames) == self.frames.maxlen:
            old, _ = self.frames.popleft()
            left = (old, self.start)
            self.start += old.size
        if not self.frames:
            self.start = position
        self.frames.append((frame, voiced))
        return left

    def first_voiced(self, frame_samples: int) -> int:
        """Position of the first voiced frame held (the end of the ring when none is)."""
        index = next((i for i, (_, v) in enumerate(self.frames) if v), len(self.frames))
        return self.start + index * frame_samples

    def voiced(self) -> int:
        """Voiced frames held."""
        return sum(v for _, v in self.frames)

    def take(self) -> list[tuple[np.ndarray, bool]]:
        """Every frame held, oldest first; the ring is then empty."""
        frames = list(self.frames)
        self.frames.clear()
        return frames


class NoiseChunks:
    """Non-speech audio, handed downstream in chunks of at least ``chunk`` samples."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.reset()

    def reset(self) -> None:
        """Hold nothing."""
        self.parts: list[np.ndarray] = []
        self.length = 0
        self.start = 0

    def add(self, audio: np.ndarray, start: int) -> bool:
        """Gather ``audio`` found at ``start``; whether a whole chunk is now held."""
        if not self.parts:
            self.start = start
        self.parts.append(audio)
        self.length += audio.size
        return self.length >= self.chunk

    def take(self, seconds: Seconds) -> Noise | None:
        """What is held, as one message (None when nothing is)."""
        if not self.parts:
            return None
        audio = np.concatenate(self.parts)
        self.parts = []
        self.length = 0
        return Noise(audio, seconds(self.start), seconds(self.start + audio.size))


class SilenceTracker:
    """``silence`` once after each utterance, ``no_speech`` once before the first one.

    ``silence``: samples without a voiced frame after speech that make a silence (None:
    never); ``no_speech``: samples before any speech after which there was none (None: never).
    """

    def __init__(self, silence: int | None, no_speech: int | None) -> None:
        self.silence = silence
        self.no_speech = no_speech
        self.reset()

    def reset(self) -> None:
        """Nothing heard yet."""
        self.since: int | None = None  # the last voiced frame of the last utterance
        self.reported = False
        self.no_speech_reported = False

    def speech_started(self) -> None:
        """An utterance was announced: no silence runs."""
        self.since = None

    def speech_ended(self, last_voiced: int) -> None:
        """An utterance ended; silence is counted from its last voiced frame."""
        self.since = last_voiced
        self.reported = False

    def due(self, now: int, heard_speech: bool, sample_rate: int, seconds: Seconds) -> Event | None:
        """The event that ``now`` (a position) makes due, if any; each fires once."""
        if self.since is None:
            if self.no_speech is None or self.no_speech_reported:
                return None
            if heard_speech or now < self.no_speech:
                return None
            self.no_speech_reported = True
            duration = self.no_speech / sample_rate
            return Event("no_speech", seconds(self.no_speech), {"duration_s": duration})
        if self.silence is None or self.reported or now - self.since < self.silence:
            return None
        self.reported = True
        duration = {"duration_s": self.silence / sample_rate}
        return Event("silence", seconds(self.since + self.silence), duration)


class Utterance:
    """The utterance being heard, cut into windows as it grows.

    Windows never reach past the speech known so far (up to the last voiced frame plus the
    tail pad), so none runs into the hangover. With ``first_window``, an utterance starts
    with short windows that double in length until a full one; during long speech sliding
    windows follow every ``hop``; at its end comes the tail.
    """

    def __init__(
        self,
        *,
        window: int,
        hop: int,
        first_window: int | None,
        min_speech: int,
        tail_pad: int,
        seconds: Seconds,
    ) -> None:
        self._window = window
        self._hop = hop
        self._first_window = first_window
        self._min_speech = min_speech
        self._tail_pad = tail_pad
        self._seconds = seconds
        self.reset()

    def reset(self) -> None:
        """A new stream: no utterance yet, nothing counted."""
        self.active = False  # an utterance is being heard
        self.index = 0  # utterances ended so far
        self.windows = 0  # windows emitted in the stream
        self.begin(0)

    def begin(self, start: int) -> None:
        """An utterance starts at ``start`` (it is heard from now on)."""
        self.frames: list[np.ndarray] = []
        self.length = 0
        self.start = start
        self.last_voiced_end = 0
        self.voiced_len = 0
        self.covered = 0  # utterance samples up to which windows were emitted
        self.next_early = self._first_window
        self.dropped = 0  # utterance samples already released from the front of the buffer
        self.unvoiced_run = 0
        self.next_window = 0
        self.in_utterance = 0  # windows emitted in this utterance
        self.announced = False

    def append(self, frame: np.ndarray, voiced: bool) -> None:
        """The next frame of the utterance."""
        self.frames.append(frame)
        self.length += frame.size
        if voiced:
            self.voiced_len += frame.size
            self.last_voiced_end = self.length
            self.unvoiced_run = 0
        else:
            self.unvoiced_run += 1

    def speech_len(self) -> int:
        """Utterance audio known to be speech: up to the last voiced frame plus the tail pad."""
        return min(self.length, self.last_voiced_end + self._tail_pad)

    def audio(self) -> np.ndarray:
        """The utterance audio still held (from ``dropped`` on)."""
        if len(self.frames) > 1:
            self.frames = [np.concatenate(self.frames)]
        return self.frames[0] if self.frames else np.zeros(0, dtype=np.float32)

    def emit_sliding(self, outputs: list) -> bool:
        """Announce the utterance once it is speech, and emit the windows now complete.

        Returns whether it was announced by this call.
        """
        announced_now = False
        if not self.announced and self.voiced_len >= self._min_speech:
            # Announced only once enough voiced audio was heard: blips never become speech.
            outputs.append(Event("speech_start", self._seconds(self.start)))
            self.announced = announced_now = True
        if not self.announced:
            return False
        limit = self.speech_len()
        early = self.next_early
        while early is not None and early < self._window and early <= limit:
            # Early windows start at the utterance; nothing was dropped from its front yet.
            self._emit(self.audio()[:early], 0, final=False, out=outputs)
            early *= 2
        self.next_early = early
        emitted = False
        while limit - self.next_window >= self._window:
            audio = self.audio()
            start = self.next_window - self.dropped
            self._emit(audio[start : start + self._window], self.next_window, False, outputs)
            self.next_window += self._hop
            emitted = True
        if emitted:
            # Later windows start at or after next_window - hop: the rest can go, which keeps
            # memory bounded during endless speech.
            drop = max(0, self.next_window - self._hop) - self.dropped
            self.frames = [self.audio()[drop:]]
            self.dropped += drop
        return announced_now

    def end(self, outputs: list) -> tuple[np.ndarray | None, int, int | None]:
        """Close the utterance: its last window and ``speech_end``, if it was speech.

        Returns the audio that turned out not to be speech (None: none) with its position,
        and the position of the last voiced frame that silence counts from (None: the
        utterance was never speech).
        """
        audio = self.audio()
        keep = self.speech_len()
        speech, trailing = audio[: keep - self.dropped], audio[keep - self.dropped :]
        self.active = False
        self.frames = []
        self.length = 0
        if not self.announced:
            return audio, self.start, None
        if self.in_utterance == 0:
            self._emit(speech, 0, final=True, out=outputs)
        elif self.covered < keep:
            start = max(0, keep - self._window)
            self._emit(speech[start - self.dropped :], start, final=True, out=outputs)
        end = self.start + keep
        outputs.append(Event("speech_end", self._seconds(end)))
        self.index += 1
        return (trailing if trailing.size else None), end, self.start + self.last_voiced_end

    def _emit(self, audio: np.ndarray, start: int, final: bool, out: list) -> None:
        t0 = self.start + start
        out.append(
            Window(
                samples=audio.copy(),
                t_start=self._seconds(t0),
                t_end=self._seconds(t0 + audio.size),
                utterance=self.index,
                index=self.windows,
                final=final,
            )
        )
        self.windows += 1
        self.in_utterance += 1
        self.covered = max(self.covered, start + audio.size)
