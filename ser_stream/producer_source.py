"""The ``zmq:ENDPOINT`` source's socket: producers' messages read on the capture's own loop.

The capture process runs it as its source (``ser-stream stage capture --source
zmq:ENDPOINT``): a PULL socket of the process's transport (its context, CURVE and bind), read
between the sends of the source runtime on the one asyncio loop. What the messages may be,
and the turns the streams take, are :mod:`ser_stream.producers`. A round reads what waits,
and each stream's frames of it go on joined in hops of up to
:data:`~ser_stream.settings.CAPTURE_HOP_MS` (:class:`FrameHops`): a capture that falls
behind many live streams catches up with a few times fewer messages.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

import numpy as np
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import WireError
from ser_stream.logs import get_logger
from ser_stream.messages import Audio, Heartbeat
from ser_stream.producers import MAX_MESSAGE_S, PRODUCER_SILENT_S, READ_AHEAD_S, Producers
from ser_stream.settings import CAPTURE_HOLD_MS, CAPTURE_HOP_MS, FRAME_MS
from ser_stream.source_runtime import SourceItem
from ser_stream.stage import MAX_OPEN_STREAMS
from ser_stream.transport import Transport, take_waiting
from ser_stream.wire import MAX_FRAME_BYTES, decode

__all__ = ["PRODUCER_HWM", "FrameHops", "producer_frames"]

PRODUCER_HWM = 1000
"""Producers' messages the socket holds before their sends wait (ZeroMQ's own default): the
source reads whatever waits anyway, up to its read-ahead."""
IDLE_BEAT_S = 0.5
"""While no producer sends, a :class:`Heartbeat` this often (the runtime looks at its stop
flag between items)."""
READS_PER_TURN = 512
"""Most messages read before a round of the turns: a round takes what waited (up to the
read-ahead), so a capture that fell behind joins each stream's frames of the round."""
REFUSED_HANDSHAKES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


async def producer_frames(
    transport: Transport,
    endpoint: str,
    *,
    idle_timeout_s: float | None = None,
    silent_s: float = PRODUCER_SILENT_S,
    max_streams: int = MAX_OPEN_STREAMS,
) -> AsyncIterator[SourceItem]:
    """Streams from external producers that PUSH ``audio`` messages to ``endpoint``.

    The capture binds a PULL socket there through ``transport``; any number of producers
    connect, each naming its stream in the messages' ``stream`` field, and each stream keeps
    that id through the pipeline. Audio is checked, resampled to 16 kHz and cut into frames
    as :mod:`ser_stream.producers` says; a producer's ``end_of_stream`` ends its stream
    (only), and so does ``silent_s`` of listening without a message from it (reason
    ``error``, with an error record saying so). A malformed message is logged and skipped,
    and an :class:`~ser_stream.messages.ErrorMsg` saying why goes downstream under stream
    ``-`` for the accounting. The ``ts`` a producer puts on its audio travel on with every
    frame of it (the capture adds its own). At most ``max_streams`` streams are open at
    once: a message of one more is refused with an error record under ``-``. With the
    transport's CURVE keys, a tcp:// endpoint takes only producers that hold an authorized
    key (see :mod:`ser_stream.security`), and each refused handshake is logged. While no
    producer sends, a :class:`Heartbeat` comes every :data:`IDLE_BEAT_S`; with
    ``idle_timeout_s``, the source ends after that long without a message and nothing
    waiting.
    """
    log = get_logger(stage="capture", source=endpoint)
    sock = transport.socket(zmq.PULL, linger_ms=0, max_message=MAX_FRAME_BYTES, hwm=PRODUCER_HWM)
    if transport.keys is not None and endpoint.startswith("tcp://"):
        # A NULL or PLAIN client fails the handshake before any key is asked for: only the
        # socket's own events tell of it.
        transport.in_background(_log_refusals(transport.monitor(sock, REFUSED_HANDSHAKES), log))
    transport.bind(sock, endpoint)
    producers = Producers(SAMPLE_RATE * FRAME_MS // 1000, max_streams, log)
    read_ahead = int(READ_AHEAD_S * SAMPLE_RATE)
    longest = int(MAX_MESSAGE_S * SAMPLE_RATE)  # a message's audio at most, once at 16 kHz
    hops = FrameHops(SAMPLE_RATE * CAPTURE_HOP_MS // 1000, CAPTURE_HOLD_MS / 1000)
    loop = asyncio.get_running_loop()
    idle_since = time.monotonic()
    try:
        while True:
            producers.end_silent(silent_s)  # one line a stream at most: logged on the loop
            now = time.monotonic()
            waits = [w for w in (producers.wait_s(now), hops.wait_s(now)) if w is not None]
            timeout_s = min([*waits, IDLE_BEAT_S])
            room = read_ahead - producers.pending_samples
            messages: deque[list[bytes]] = deque()
            if room > 0:
                waited = time.monotonic()
                ready = await sock.poll(round(timeout_s * 1000), zmq.POLLIN)
                producers.listened += time.monotonic() - waited  # nothing there meanwhile
                if ready:  # what waits (no more than the read-ahead holds), then a round
                    messages = await _read_round(sock, room, longest)
            else:
                await asyncio.sleep(min(timeout_s, 0.05))  # the read-ahead is full: frames wait
            if messages:
                idle_since = time.monotonic()
            # The rules run in the worker thread, as a stage's core does: their logs (a flood
            # logs much, to a stderr that may be slow to read) and resampling never hold the
            # loop, its heartbeats and its sends.
            items = await loop.run_in_executor(None, _round, producers, messages)
            items = hops.take(items, time.monotonic())
            for item in items:
                yield item
            if items:
                continue
            if idle_timeout_s is not None and not producers.waiting and not hops:
                if time.monotonic() - idle_since > idle_timeout_s:
                    return
            yield Heartbeat("capture")  # nothing to send now: the runtime may look at its flags
    finally:
        sock.close(linger=0)  # the endpoint is free again once the source ends


async def _read_round(sock: zmq.asyncio.Socket, room: int, longest: int) -> deque[list[bytes]]:
    """The messages waiting on ``sock``, at most :data:`READS_PER_TURN` of them.

    No more audio than ``room`` samples: each message counts as ``longest`` until read.
    """
    messages: deque[list[bytes]] = deque()
    while room > 0 and len(messages) < READS_PER_TURN:
        most = min(READS_PER_TURN - len(messages), max(1, room // longest))
        batch = await take_waiting(sock, most)
        if not batch:
            break
        # A message's payload bytes bound its samples once at 16 kHz (int16 at 8 kHz, the
        # lowest rate taken, doubles to one sample per byte).
        room -= sum(min(longest, sum(len(part) for part in frames[1:])) for frames in batch)
        messages.extend(batch)
    return messages


def _round(producers: Producers, messages: Iterable[list[bytes]]) -> list[SourceItem]:
    """Take the messages read, then give this round of the turns."""
    for frames in messages:
        try:
            producers.take(decode(frames))
        except WireError as exc:
            reason = f"producer message skipped: {exc}; follow docs/wire.md"
            producers.report("-", producers.nobody, reason)
    return producers.turn(time.monotonic())


class FrameHops:
    """Each stream's frames joined into hops: messages of up to ``hop`` samples.

    A stream's audio is held until a hop of it waits, or until its first frame has waited
    ``hold_s`` (a producer that sends slowly or stops is not held up for longer); its other
    items (a report, its end) send what it held first, so each stream stays in order. A hop
    keeps the timestamps of its first part (a producer's ``produced`` stamp is then its
    earliest: a window it completes is never reported sooner than its audio was due). Parts
    not contiguous in stream time, or at another rate, are never joined.
    """

    def __init__(self, hop: int, hold_s: float) -> None:
        self.hop = hop
        self.hold_s = hold_s
        self._held: dict[str, list[tuple]] = {}  # stream -> its frames held, in order
        self._since: dict[str, float] = {}  # stream -> when its first held frame came

    def __len__(self) -> int:
        """Streams with audio held."""
        return len(self._held)

    def take(self, items: Iterable[SourceItem], now: float) -> list[SourceItem]:
        """Take a round's items; return what goes on now (the hops due included)."""
        out: list[SourceItem] = []
        for item in items:
            body = item[1] if isinstance(item, tuple) else None
            if not isinstance(body, Audio):
                if isinstance(item, tuple):
                    self._release(item[0], out)
                out.append(item)
                continue
            stream = item[0]
            held = self._held.get(stream)
            if held and not self._follows(held, body):
                self._release(stream, out)
                held = None
            if held is None:
                held = self._held[stream] = []
                self._since[stream] = now
            held.append(item)
            if sum(part[1].samples.size for part in held) >= self.hop:
                self._release(stream, out)
        out.extend(self.due(now))
        return out

    def due(self, now: float) -> list[SourceItem]:
        """The held audio whose first frame has waited ``hold_s``."""
        out: list[SourceItem] = []
        for stream in [s for s, since in self._since.items() if now - since >= self.hold_s]:
            self._release(stream, out)
        return out

    def wait_s(self, now: float) -> float | None:
        """Seconds until held audio is due (None: none held)."""
        if not self._since:
            return None
        return max(0.0, min(self._since.values()) + self.hold_s - now)

    def _follows(self, held: list[tuple], body: Audio) -> bool:
        first = held[0][1]
        size = sum(part[1].samples.size for part in held)
        return (
            body.sample_rate == first.sample_rate
            and round(body.t_start * body.sample_rate)
            == round(first.t_start * first.sample_rate) + size
            and size + body.samples.size <= self.hop
        )

    def _release(self, stream: str, out: list[SourceItem]) -> None:
        held = self._held.pop(stream, None)
        self._since.pop(stream, None)
        if not held:
            return
        if len(held) == 1:
            out.append(held[0])
            return
        _, first, *stamps = held[0]
        samples = np.concatenate([part[1].samples for part in held])
        out.append((stream, Audio(samples, first.sample_rate, first.t_start), *stamps))


async def _log_refusals(monitor: zmq.asyncio.Socket, log) -> None:
    """Log each connection the CURVE server refused, as it is refused."""
    while True:
        event = await recv_monitor_message(monitor)
        log.warning("connection refused: handshake failed", zmq_event=int(event["event"]),
                    endpoint=event["endpoint"].decode(errors="replace"))  # fmt: skip
