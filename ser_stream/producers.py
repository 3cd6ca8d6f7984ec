"""The ``zmq:ENDPOINT`` source: audio pushed by other programs, each naming its streams.

A socket loop, so it lives beside the runtime, not among the stage cores: the capture
process runs it as its source (``ser-stream stage capture --source zmq:ENDPOINT``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.messages import Audio, EndOfStream, ErrorMsg, Heartbeat
from ser_stream.stage import MAX_OPEN_STREAMS

if TYPE_CHECKING:
    from ser_stream.security import CurveKeys

__all__ = ["PRODUCER_SILENT_S", "zmq_frames"]


PRODUCER_SILENT_S = 10.0
"""A producer's stream that sends nothing this long is ended (its producer is gone): a live
producer sends audio all the time, silence included."""


def _log_refusals(monitor, log) -> None:
    """Log each connection the CURVE server refused (never waits)."""
    from zmq.utils.monitor import recv_monitor_message

    while monitor.poll(0):
        event = recv_monitor_message(monitor)
        log.warning("connection refused: handshake failed", zmq_event=int(event["event"]),
                    endpoint=event["endpoint"].decode(errors="replace"))  # fmt: skip


def zmq_frames(
    endpoint: str,
    *,
    idle_timeout_s: float | None = None,
    silent_s: float = PRODUCER_SILENT_S,
    max_streams: int = MAX_OPEN_STREAMS,
    keys: CurveKeys | None = None,
) -> Iterator[Heartbeat | tuple]:
    """Streams from external producers that PUSH ``audio`` messages to ``endpoint``.

    The capture binds a PULL socket there; any number of producers connect, each naming its
    stream in the messages' ``stream`` field, and each stream keeps that id through the
    pipeline. Audio of any rate is resampled to 16 kHz as it flows; a producer's
    ``end_of_stream`` ends its stream (only), and so does ``silent_s`` without a message
    from it (reason ``error``, with an error record saying so). A malformed message is logged
    and skipped, and an :class:`ErrorMsg` saying why goes downstream under stream ``-`` for
    the accounting. The ``ts`` a producer puts on its audio travel on with it (the capture
    adds its own). At most ``max_streams`` streams are open at once: a message of one more
    is refused with an error record under ``-``. With ``keys``, a tcp:// endpoint takes
    only producers that hold an authorized CURVE key (see :mod:`ser_stream.security`). While
    no producer sends, a
    :class:`Heartbeat` comes every half second, so the caller can notice a stop request.
    """
    import soxr
    import zmq

    from ser_stream.errors import WireError
    from ser_stream.logs import get_logger
    from ser_stream.runtime import bind_endpoint
    from ser_stream.security import secure, stop_authenticators
    from ser_stream.wire import MAX_FRAME_BYTES, decode

    log = get_logger(stage="capture", source=endpoint)
    context = zmq.Context()
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    authenticators: dict = {}
    secure(sock, endpoint, keys, server=True, authenticators=authenticators)
    refusals = None
    if keys is not None and endpoint.startswith("tcp://"):
        # A NULL or PLAIN client fails the handshake before any key is asked for: only the
        # socket's own events tell of it.
        refusals = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
    bind_endpoint(sock, endpoint)
    resamplers: dict[tuple[str, int], soxr.ResampleStream] = {}
    positions: dict[str, int] = {}
    heard: dict[str, float] = {}  # when each open stream last sent something
    idle_since = time.monotonic()

    def close(stream: str, reason: str) -> Iterator[tuple[str, Audio | EndOfStream]]:
        """The end of one stream: the resamplers' last samples, then its end of stream."""
        heard.pop(stream, None)
        for key in [key for key in resamplers if key[0] == stream]:
            tail = resamplers.pop(key).resample_chunk(np.zeros(0, np.int16), last=True)
            if tail.size:
                yield stream, Audio(tail, SAMPLE_RATE, positions.get(stream, 0) / SAMPLE_RATE)
                positions[stream] = positions.get(stream, 0) + tail.size
        positions.pop(stream, None)
        yield stream, EndOfStream(reason)

    try:
        while True:
            for stream, at in list(heard.items()):
                if time.monotonic() - at > silent_s:
                    log.warning("producer went silent", stream=stream, seconds=silent_s)
                    message = f"the producer of stream {stream} sent nothing for {silent_s:.0f} s; "
                    yield stream, ErrorMsg(message + "its stream was ended", "capture")
                    yield from close(stream, "error")
            if refusals is not None:
                _log_refusals(refusals, log)
            if not sock.poll(500):
                if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    return
                yield Heartbeat("capture")
                continue
            idle_since = time.monotonic()
            try:
                envelope = decode(sock.recv_multipart())
            except WireError as exc:
                log.warning("malformed message skipped", reason=str(exc))
                yield (
                    "-",
                    ErrorMsg(f"producer message skipped: {exc}; follow docs/wire.md", "capture"),
                )
                continue
            stream, body = envelope.stream, envelope.body
            if stream == "-":
                yield (
                    "-",
                    ErrorMsg("stream id '-' is reserved; name your stream otherwise", "capture"),
                )
                continue
            if isinstance(body, EndOfStream):
                yield from close(stream, body.reason)
                continue
            if stream not in heard and len(heard) >= max_streams:
                reason = (f"producer stream {stream} refused: {max_streams} streams are open; "
                          "end one first")  # fmt: skip
                log.warning("message skipped", reason=reason)
                yield "-", ErrorMsg(reason, "capture")
                continue
            heard[stream] = time.monotonic()
            if not isinstance(body, Audio):
                reason = f"producer sent {envelope.kind.value}, not audio; send audio messages"
                log.warning("message skipped", reason=reason, stream=stream)
                yield stream, ErrorMsg(reason, "capture")
                continue
            samples = np.asarray(body.samples)
            if samples.dtype != np.int16:
                samples = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
            if body.sample_rate != SAMPLE_RATE:
                key = (stream, body.sample_rate)
                if key not in resamplers:
                    resamplers[key] = soxr.ResampleStream(body.sample_rate, SAMPLE_RATE, 1, "int16")
                samples = resamplers[key].resample_chunk(samples)
            if samples.size:
                position = positions.get(stream, 0)
                audio = Audio(samples, SAMPLE_RATE, position / SAMPLE_RATE)
                # the producer's own timestamps travel on (a producer's clock: "produced")
                # a producer's own timestamps ride along only when it sent some
                yield (stream, audio, envelope.timestamps) if envelope.timestamps else (
                    stream, audio)  # fmt: skip
                positions[stream] = position + samples.size
    finally:
        if refusals is not None:
            sock.disable_monitor()
            refusals.close(linger=0)
        sock.close(linger=0)
        stop_authenticators(authenticators)
        context.term()
