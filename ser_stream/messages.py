"""Messages that flow between the cores: plain frozen dataclasses, no behaviour.

The same objects travel in-process (``predict``, training) and over ZeroMQ between stage
processes; times are seconds of audio from the start of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

__all__ = [
    "Audio",
    "EndOfStream",
    "ErrorMsg",
    "Event",
    "Features",
    "Heartbeat",
    "Kind",
    "Noise",
    "Prediction",
    "Window",
]


@dataclass(frozen=True, slots=True)
class Audio:
    """A chunk of captured audio (capture emits 30 ms frames of 16 kHz mono int16).

    Attributes:
        samples: mono PCM, int16 or float32.
        sample_rate: rate of ``samples``, in Hz.
        t_start: seconds from the start of the stream to the first sample.
    """

    samples: np.ndarray
    sample_rate: int
    t_start: float


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of speech to classify.

    Attributes:
        samples: mono float32 audio at the stream's sample rate.
        t_start: start of the window, seconds from the start of the stream.
        t_end: end of the window, seconds from the start of the stream.
        utterance: index of the utterance the window belongs to, from 0.
        index: index of the window in the stream, from 0.
        final: True for the window emitted when its utterance ended (the tail); an utterance
            whose speech the sliding windows covered exactly has no final window.
    """

    samples: np.ndarray
    t_start: float
    t_end: float
    utterance: int
    index: int
    final: bool = False


@dataclass(frozen=True, slots=True)
class Noise:
    """Non-speech audio, handed downstream to learn the noise profile of the stream."""

    samples: np.ndarray
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in the stream: ``speech_start``, ``speech_end``, ``silence``.

    Attributes:
        name: the event kind.
        t: when it happened, seconds from the start of the stream.
        data: extra facts, e.g. ``{"duration_s": 2.0}`` for silence.
    """

    name: str
    t: float
    data: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Features:
    """The feature matrix of one window, ``(frames, features)`` float32."""

    matrix: np.ndarray
    t_start: float
    t_end: float
    index: int


@dataclass(frozen=True, slots=True)
class Prediction:
    """The emotion distribution of one window, in the label order of the model.

    Attributes:
        probabilities: calibrated probability of each label.
        label: the label of highest probability (the model's best guess).
        t_start: start of the window, seconds from the start of the stream.
        t_end: end of the window, seconds from the start of the stream.
        index: index of the window in the stream, from 0.
        confident: whether the top probability reaches the artifact's confidence threshold
            (False: show "uncertain", not the label); None when the model has no threshold.
    """

    probabilities: np.ndarray
    label: str
    t_start: float
    t_end: float
    index: int
    confident: bool | None = None


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The stream is over; ``reason`` is ``eof``, ``silence``, ``signal`` or ``error``."""

    reason: str = "eof"


@dataclass(frozen=True, slots=True)
class ErrorMsg:
    """Something went wrong with one message or stream; the pipeline goes on.

    Attributes:
        reason: one line, what happened and what to do.
        stage: the stage that reports it.
    """

    reason: str
    stage: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A stage is alive: sent downstream when idle, and to the supervisor every second.

    Attributes:
        stage: who sends it (``vad``, or ``vad.0`` to the supervisor).
        position_s: a capture's heartbeat to the supervisor: seconds of its stream sent so
            far (a capture that is restarted resumes a file there).
        positions: a stage's heartbeat to the supervisor: stream time each of its streams
            has reached (a VAD that is restarted counts the audio lost from there).
        streams: a heartbeat to the supervisor: streams whose state the process holds.
        queued: a stage's heartbeat to the supervisor: the most input messages it found
            waiting at one look since its previous heartbeat (its queue depth).
        received: a heartbeat to the supervisor: messages the process has taken in so far.
        sent: a heartbeat to the supervisor: messages it has sent on so far.
        oldest_s: age of the oldest message the process holds and has not finished with
            (0 when it holds none).
        stalled_s: how long the process has held work without finishing or sending anything
            (0 when it holds none): the supervisor's measure of being stuck, however
            regularly the heartbeats come.
    """

    stage: str
    position_s: float = 0.0
    positions: dict[str, float] = field(default_factory=dict)
    streams: int = 0
    queued: int = 0
    received: int = 0
    sent: int = 0
    oldest_s: float = 0.0
    stalled_s: float = 0.0


class Kind(str, Enum):
    """Message kinds, as written in the header's ``kind``."""

    AUDIO = "audio"
    WINDOW = "window"
    NOISE = "noise"
    FEATURES = "features"
    PREDICTION = "prediction"
    EVENT = "event"
    END_OF_STREAM = "end_of_stream"
    ERROR = "error"
    HEARTBEAT = "heartbeat"
