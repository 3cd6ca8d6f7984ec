"""The rules of the ``zmq:ENDPOINT`` source: what producers' messages may be, and their turns.

No sockets here: :class:`Producers` takes decoded messages and gives what goes on, so the
rules are tested without a pipeline. The socket side, on the capture's loop and transport,
is :mod:`ser_stream.producer_source`.

Producers are strangers, so every message is checked and cut before it goes on:

* a message carries at most :data:`MAX_MESSAGE_S` of audio at a rate from
  :data:`MIN_RATE` to :data:`MAX_RATE` Hz; others are refused with an error record that
  says why (after resampling, any larger one could exceed what the next stage takes);
* accepted audio is resampled to 16 kHz and cut into frames of at most
  :data:`~ser_stream.settings.FRAME_MS`, which fit anywhere downstream;
* streams take turns: the frames waiting are sent one stream at a time, round robin, each
  stream at most :data:`MAX_SPEED` times real time after its first :data:`BURST_S`; a
  stream may have at most :data:`MAX_AHEAD_S` of audio waiting (more is refused with an
  error record that says to pace the producer), and the socket is read whatever waits
  (up to :data:`READ_AHEAD_S` for all streams together). One producer's volume therefore
  takes only a share of the stages (its audio does not queue ahead of everyone's in every
  stage) and never keeps another's messages unread; a flood of malformed messages costs
  one frame per turn: its reports are held to a few at a time and the rest counted in one
  record;
* a stream's silence is measured on the time this source spent waiting for messages
  with none to read, never on time it spent blocked sending or busy with others' audio;
* a stream's messages must number upwards (``seq``): a message that does not is refused,
  as another producer using the same stream id (their audio is never merged silently);
  and an id whose stream ended is not opened again (the stages would drop it unsaid).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.messages import Audio, EndOfStream, ErrorMsg
from ser_stream.stage import ENDED_MEMORY

if TYPE_CHECKING:
    from ser_stream.wire import Envelope

__all__ = [
    "BURST_S",
    "MAX_MESSAGE_S",
    "MAX_SPEED",
    "MAX_RATE",
    "MIN_RATE",
    "PRODUCER_SILENT_S",
    "READ_AHEAD_S",
    "Producers",
]


PRODUCER_SILENT_S = 10.0
"""A producer's stream that sends nothing this long is ended (its producer is gone): a live
producer sends audio all the time, silence included."""
MAX_MESSAGE_S = 10.0
"""Most audio in one producer message (as ``serve`` takes per WebSocket message): a live
producer sends tens of milliseconds at a time; more is a file that should be sent in parts."""
MIN_RATE, MAX_RATE = 8_000, 384_000
"""Sample rates the pipeline can use, in Hz: telephone speech up to studio rates."""
MAX_SPEED = 20.0
"""Fastest a producer stream's audio is taken, in times real time, after its first
:data:`BURST_S` (a file sent as fast as the socket takes it is fine, up to this pace): one
stream can then take only a share of what the stages can do, and the others' audio does not
queue behind it in every stage."""
TURN_S = 0.12
"""Audio each stream may send in one round of the turns: a real-time producer's 20-100 ms
messages go on whole in the round after they arrive."""
BURST_S = 10.0
"""Audio of a stream that goes on at once, whatever its pace (a short clip is not slowed)."""
MAX_AHEAD_S = 20.0
"""Most audio of one stream read and not yet sent on: audio beyond it is refused with an
error record (the producer sends faster than ``MAX_SPEED`` for long; it should pace itself).
The socket is always read, so a flood cannot keep a real-time producer's messages unread."""
READ_AHEAD_S = 600.0
"""Audio waiting of all streams together beyond which this source stops reading (and the
producers' own queues make them wait): the memory bound, 19 MB, reached only by dozens of
streams each at its ``MAX_AHEAD_S``."""
REPORTS_HELD = 8
"""Error reports waiting per stream beyond which further ones are counted in one record."""

Item = tuple  # (stream, body) or (stream, body, timestamps), as the source runtime takes


@dataclass
class _Stream:
    """One producer stream: where it is, what waits to go on, when it was last heard."""

    heard: float  # the listening clock at its last message
    seq: int  # the last sequence number taken
    position: int = 0  # samples sent so far (16 kHz)
    rate: int = SAMPLE_RATE  # of the producer's audio
    resampler: object | None = None  # to 16 kHz, from ``rate``
    pending: deque[Item] = field(default_factory=deque)
    reports: int = 0  # error reports in ``pending``
    credit_s: float = BURST_S  # audio it may send now (a token bucket, refilled at MAX_SPEED)
    credit_at: float | None = None  # when the credit was counted (monotonic)
    waiting: int = 0  # samples in ``pending``
    untold: int = 0  # reports counted, not sent
    last_reason: str = ""


class Producers:
    """The state of every producer stream, and the turn order in which they send."""

    def __init__(self, frame: int, max_streams: int, log) -> None:
        self.frame = frame
        self.max_streams = max_streams
        self.log = log
        self.open: dict[str, _Stream] = {}
        self.closing: dict[str, _Stream] = {}  # ended, with frames still to send
        self.ended: OrderedDict[str, None] = OrderedDict()  # ids that may not open again
        self.nobody = _Stream(heard=0.0, seq=-1)  # reports about no stream, under "-"
        self.listened = 0.0  # seconds spent waiting with nothing to read

    def streams(self) -> list[tuple[str, _Stream]]:
        """Every stream with a turn."""
        return [("-", self.nobody), *self.closing.items(), *self.open.items()]

    @property
    def pending_samples(self) -> int:
        """Audio read and not yet sent on, all streams together, in samples."""
        return sum(state.waiting for _, state in self.streams())

    def report(self, name: str, state: _Stream, reason: str) -> None:
        """An error record for ``name``, unless too many already wait (then counted)."""
        if state.reports >= REPORTS_HELD:  # counted, and logged with the record that says so
            state.untold += 1
            state.last_reason = reason
            return
        self._say(name, state, "producer message skipped", reason)

    def _say(self, name: str, state: _Stream, event: str, reason: str) -> None:
        """Log ``reason`` and queue its error record in the stream's turn."""
        self.log.warning(event, stream=name, reason=reason)
        state.reports += 1
        state.pending.append((name, ErrorMsg(reason, "capture")))

    def take(self, envelope: Envelope) -> int:
        """One producer message: refuse it with a reason, or queue its frames.

        Returns the samples it queued (0 when refused or not audio).
        """
        stream, body = envelope.stream, envelope.body
        if stream == "-":
            self.report("-", self.nobody, "stream id '-' is reserved; name your stream otherwise")
            return 0
        state = self.open.get(stream)
        problem = _refusal(body) if isinstance(body, Audio) else ""
        if state is None:
            if isinstance(body, EndOfStream):
                return 0  # the end of a stream that is not open (already ended): nothing to do
            if stream in self.ended:  # the stages would take it for a straggler of the last
                problem = "that stream has ended; give each new stream an id of its own"
            elif len(self.open) >= self.max_streams:
                problem = f"{self.max_streams} streams are open; end one first"
            if problem:  # not opened: said under "-"
                self.report("-", self.nobody, f"producer stream {stream} refused: {problem}")
                return 0
            state = self.open[stream] = _Stream(heard=self.listened, seq=envelope.seq - 1)
        if envelope.seq <= state.seq:
            self.report(stream, state, f"stream {stream}: message {envelope.seq} does not follow "
                        f"{state.seq}; is another producer using this stream id? Give each "
                        "producer its own")  # fmt: skip
            return 0
        state.seq = envelope.seq
        state.heard = self.listened
        if isinstance(body, EndOfStream):
            self.close(stream, body.reason)
        elif not isinstance(body, Audio):
            self.report(stream, state, f"producer sent {envelope.kind.value}, not audio; "
                        "send audio messages")  # fmt: skip
        elif problem or (problem := self._too_far_ahead(state, body)):
            self.report(stream, state, f"stream {stream}: message {envelope.seq} refused: "
                        f"{problem}")  # fmt: skip
        else:
            return self._queue(stream, state, body, envelope.timestamps)
        return 0

    @staticmethod
    def _too_far_ahead(state: _Stream, body: Audio) -> str:
        waiting = state.waiting / SAMPLE_RATE
        if waiting + body.samples.size / body.sample_rate <= MAX_AHEAD_S:
            return ""
        return (f"{waiting:.1f} s of this stream's audio already waits to go on (at most "
                f"{MAX_AHEAD_S:.0f} s); send at most {MAX_SPEED:.0f}x real time")  # fmt: skip

    def _queue(self, stream: str, state: _Stream, body: Audio, stamps: dict) -> int:
        import soxr

        samples = np.asarray(body.samples)
        if samples.dtype != np.int16:
            samples = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        if body.sample_rate != state.rate:  # the producer changed its rate: finish the old
            self._flush_resampler(stream, state)
            state.rate = body.sample_rate
            if state.rate != SAMPLE_RATE:
                state.resampler = soxr.ResampleStream(state.rate, SAMPLE_RATE, 1, "int16")
        if state.resampler is not None:
            samples = state.resampler.resample_chunk(samples)
        self._frames(stream, state, samples, stamps)
        return samples.size

    def _flush_resampler(self, stream: str, state: _Stream) -> None:
        if state.resampler is not None:
            tail = state.resampler.resample_chunk(np.zeros(0, np.int16), last=True)
            self._frames(stream, state, tail, {})
            state.resampler = None

    def _frames(self, stream: str, state: _Stream, samples: np.ndarray, stamps: dict) -> None:
        for start in range(0, samples.size, self.frame):
            piece = samples[start : start + self.frame]
            audio = Audio(piece, SAMPLE_RATE, state.position / SAMPLE_RATE)
            # a producer's own timestamps ride along only when it sent some
            state.pending.append((stream, audio, stamps) if stamps else (stream, audio))
            state.position += piece.size
            state.waiting += piece.size

    def close(self, stream: str, reason: str) -> None:
        """The end of one stream: the resampler's last samples, then its end of stream."""
        state = self.open.pop(stream)
        self._flush_resampler(stream, state)
        self.ended[stream] = None
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        self._tell_untold(stream, state)
        state.pending.append((stream, EndOfStream(reason)))
        self.closing[stream] = state

    def end_silent(self, silent_s: float) -> None:
        """End the streams whose producer sent nothing for ``silent_s`` of listening."""
        for stream, state in list(self.open.items()):
            if self.listened - state.heard > silent_s:
                reason = (f"the producer of stream {stream} sent nothing for {silent_s:.0f} s; "
                          "its stream was ended")  # fmt: skip
                self._say(stream, state, "producer went silent", reason)
                self.close(stream, "error")

    def _tell_untold(self, name: str, state: _Stream) -> None:
        if state.untold:
            reason = (f"{state.untold} more producer messages skipped (the last: "
                      f"{state.last_reason})")  # fmt: skip
            self._say(name, state, "producer messages skipped", reason)
            state.untold = 0

    def due_in(self, state: _Stream, now: float) -> float:
        """Seconds until the stream's next frame may go (0: now), at :data:`MAX_SPEED`."""
        if not state.pending or not isinstance(state.pending[0][1], Audio):
            return 0.0
        if state.credit_at is not None:
            earned = (now - state.credit_at) * MAX_SPEED
            state.credit_s = min(BURST_S, state.credit_s + earned)
        state.credit_at = now
        return 0.0 if state.credit_s > 0 else -state.credit_s / MAX_SPEED

    def wait_s(self, now: float) -> float | None:
        """Seconds until some stream may send (0: now; None: nothing waits)."""
        waits = [self.due_in(state, now) for _, state in self.streams() if state.pending]
        if any(state.untold and not state.pending for _, state in self.streams()):
            waits.append(0.0)
        return min(waits) if waits else None

    def turn(self, now: float) -> list[Item]:
        """What every stream may send in this round: up to :data:`TURN_S` of its audio."""
        items = []
        for name, state in self.streams():
            if not state.pending and state.untold:
                self._tell_untold(name, state)
            quantum = int(TURN_S * SAMPLE_RATE)
            while state.pending and quantum > 0 and self.due_in(state, now) == 0:
                item = self._next(name, state)
                if isinstance(item[1], Audio):
                    quantum -= item[1].samples.size
                items.append(item)
        return items

    def _next(self, name: str, state: _Stream) -> Item:
        """Take the next item of a stream off its queue."""
        item = state.pending.popleft()
        body = item[1]
        if isinstance(body, ErrorMsg):
            state.reports -= 1
        elif isinstance(body, Audio):
            state.waiting -= body.samples.size
            state.credit_s -= body.samples.size / SAMPLE_RATE
        if not state.pending and name in self.closing:
            del self.closing[name]
        return item

    @property
    def waiting(self) -> bool:
        """Whether anything waits to go on (frames, reports, or a count of reports)."""
        return any(state.pending or state.untold for _, state in self.streams())


def _refusal(body: Audio) -> str:
    """Why audio cannot be taken ("" when it can)."""
    rate = body.sample_rate
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"sample rate {rate} Hz is not usable; send {MIN_RATE:,}-{MAX_RATE:,} Hz audio"
    seconds = body.samples.size / rate
    if seconds > MAX_MESSAGE_S:
        return (f"{seconds:.1f} s of audio in one message; send at most {MAX_MESSAGE_S:.0f} s "
                "per message (live producers send 20-100 ms)")  # fmt: skip
    samples = np.asarray(body.samples)
    if np.issubdtype(samples.dtype, np.floating) and not np.all(np.isfinite(samples)):
        return "audio contains NaN or infinite samples"
    return ""
