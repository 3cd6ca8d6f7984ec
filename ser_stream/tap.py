"""Read what a running pipeline publishes, as the JSON records of ``docs/records.md``.

``ser-stream tap`` prints them; a program of yours can iterate them::

    from ser_stream.tap import records

    for record in records():  # the default endpoint of this user's `ser-stream up`
        if record["kind"] == "prediction":
            print(record["label"])

The iteration ends with the session: once the publisher it was connected to has closed
(``up`` or ``serve`` ended, however), what had arrived is read and the iterator stops.
"""

from __future__ import annotations

from collections.abc import Iterator

import zmq
from zmq.utils.monitor import recv_monitor_message

from ser_stream.errors import WireError
from ser_stream.labels import LABELS
from ser_stream.logs import get_logger
from ser_stream.security import CurveKeys, secure
from ser_stream.sinks import error_record, event_record, prediction_record
from ser_stream.wire import MAX_FRAME_BYTES, Envelope, Kind, decode

__all__ = ["records"]


def _end_of_stream_record(envelope: Envelope) -> dict:
    return {"kind": "end_of_stream", "stream": envelope.stream, "reason": envelope.body.reason}  # type: ignore[union-attr]


_RENDER = {
    Kind.PREDICTION: lambda e: prediction_record(e, LABELS),
    Kind.EVENT: event_record,
    Kind.ERROR: error_record,
    Kind.END_OF_STREAM: _end_of_stream_record,
}


def records(endpoint: str | None = None, *, keys: CurveKeys | None = None) -> Iterator[dict]:
    """Predictions, events, errors and ends of stream as they are published, to the session's end.

    ``endpoint`` defaults to where this user's ``ser-stream up`` publishes; ``keys`` are
    needed for a tcp:// endpoint (CURVE). Started before the session, it waits for it. A
    malformed message is logged and skipped. The session's end is known by its publisher
    closing the connection (logged as ``session ended``).
    """
    from ser_stream.supervisor.folder import default_publish_endpoint

    endpoint = endpoint or default_publish_endpoint()
    log = get_logger(component="tap", endpoint=endpoint)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    secure(sub, endpoint, keys, server=False)
    # The connection's own events say when the publisher is gone: a SUB socket reconnects
    # silently otherwise, and would wait for ever. A session counts once its handshake
    # succeeded (a connection refused for its keys is no session that ended).
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    sub.connect(endpoint)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    connected = False
    try:
        while True:
            ready = dict(poller.poll(1000))
            if sub in ready:
                yield from _take(sub, log)
            if monitor not in ready:
                continue
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                connected = True
            elif event == zmq.EVENT_DISCONNECTED and connected:
                yield from _take(sub, log)  # what arrived before it closed
                log.info("session ended: the publisher closed; tap stops")
                return
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)
        context.destroy(linger=0)


def _take(sub: zmq.Socket, log) -> Iterator[dict]:
    """Every record waiting on ``sub`` now."""
    while True:
        try:
            frames = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            envelope = decode(frames)
        except WireError as exc:
            log.warning("malformed message skipped", reason=str(exc))
            continue
        if envelope.kind in _RENDER:
            yield _RENDER[envelope.kind](envelope)
