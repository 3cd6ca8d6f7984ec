"""The ``zmq:ENDPOINT`` source's socket: producers' messages read on the capture's own loop.

The capture process runs it as its source (``ser-stream stage capture --source
zmq:ENDPOINT``): a PULL socket of the process's transport (its context, CURVE and bind), read
between the sends of the source runtime on the one asyncio loop. What the messages may be,
and the turns the streams take, are :mod:`ser_stream.producers`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import WireError
from ser_stream.logs import get_logger
from ser_stream.messages import Heartbeat
from ser_stream.producers import MAX_MESSAGE_S, PRODUCER_SILENT_S, READ_AHEAD_S, Producers
from ser_stream.settings import FRAME_MS
from ser_stream.source_runtime import SourceItem
from ser_stream.stage import MAX_OPEN_STREAMS
from ser_stream.transport import Transport, take_waiting
from ser_stream.wire import MAX_FRAME_BYTES, decode

__all__ = ["PRODUCER_HWM", "producer_frames"]

PRODUCER_HWM = 1000
"""Producers' messages the socket holds before their sends wait (ZeroMQ's own default): the
source reads whatever waits anyway, up to its read-ahead."""
IDLE_BEAT_S = 0.5
"""While no producer sends, a :class:`Heartbeat` this often (the runtime looks at its stop
flag between items)."""
READS_PER_TURN = 32
"""Most messages read before a round of the turns."""
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
    loop = asyncio.get_running_loop()
    idle_since = time.monotonic()
    try:
        while True:
            producers.end_silent(silent_s)  # one line a stream at most: logged on the loop
            wait_s = producers.wait_s(time.monotonic())
            timeout_s = IDLE_BEAT_S if wait_s is None else min(wait_s, IDLE_BEAT_S)
            room = read_ahead - producers.pending_samples
            messages: deque[list[bytes]] = deque()
            if room > 0:
                waited = time.monotonic()
                ready = await sock.poll(round(timeout_s * 1000), zmq.POLLIN)
                producers.listened += time.monotonic() - waited  # nothing there meanwhile
                if ready:  # a few (no more than the read-ahead holds), then a round of turns
                    most = min(READS_PER_TURN, max(1, room // longest))
                    messages = await take_waiting(sock, most)
            else:
                await asyncio.sleep(min(timeout_s, 0.05))  # the read-ahead is full: frames wait
            if messages:
                idle_since = time.monotonic()
            # The rules run in the worker thread, as a stage's core does: their logs (a flood
            # logs much, to a stderr that may be slow to read) and resampling never hold the
            # loop, its heartbeats and its sends.
            items = await loop.run_in_executor(None, _round, producers, messages)
            for item in items:
                yield item
            if items:
                continue
            if idle_timeout_s is not None and not producers.waiting:
                if time.monotonic() - idle_since > idle_timeout_s:
                    return
            yield Heartbeat("capture")  # nothing to send now: the runtime may look at its flags
    finally:
        sock.close(linger=0)  # the endpoint is free again once the source ends


def _round(producers: Producers, messages: Iterable[list[bytes]]) -> list[SourceItem]:
    """Take the messages read, then give this round of the turns."""
    for frames in messages:
        try:
            producers.take(decode(frames))
        except WireError as exc:
            reason = f"producer message skipped: {exc}; follow docs/wire.md"
            producers.report("-", producers.nobody, reason)
    return producers.turn(time.monotonic())


async def _log_refusals(monitor: zmq.asyncio.Socket, log) -> None:
    """Log each connection the CURVE server refused, as it is refused."""
    while True:
        event = await recv_monitor_message(monitor)
        log.warning("connection refused: handshake failed", zmq_event=int(event["event"]),
                    endpoint=event["endpoint"].decode(errors="replace"))  # fmt: skip
