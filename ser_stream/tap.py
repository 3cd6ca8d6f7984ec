"""Read what a running pipeline publishes, as the JSON records of ``docs/records.md``.

``ser-stream tap`` prints them; a program of yours can iterate them::

    from ser_stream.tap import records

    for record in records():  # the default endpoint of this user's `ser-stream up`
        if record["kind"] == "prediction":
            print(record["label"])
"""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from ser_stream.errors import WireError
from ser_stream.labels import LABELS
from ser_stream.logs import get_logger
from ser_stream.security import CurveKeys, secure
from ser_stream.sinks import error_record, event_record, prediction_record
from ser_stream.wire import MAX_FRAME_BYTES, Kind, decode

__all__ = ["records"]


def records(endpoint: str | None = None, *, keys: CurveKeys | None = None) -> Iterator[dict]:
    """Predictions, events, errors and ends of stream as they are published, until closed.

    ``endpoint`` defaults to where this user's ``ser-stream up`` publishes; ``keys`` are
    needed for a tcp:// endpoint (CURVE). A malformed message is logged and skipped.
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
    sub.connect(endpoint)
    render = {
        Kind.PREDICTION: lambda e: prediction_record(e, LABELS),
        Kind.EVENT: event_record,
        Kind.ERROR: error_record,
        Kind.END_OF_STREAM: lambda e: {
            "kind": "end_of_stream", "stream": e.stream, "reason": e.body.reason
        },
    }  # fmt: skip
    try:
        while True:
            if not sub.poll(1000):
                continue
            try:
                envelope = decode(sub.recv_multipart())
            except WireError as exc:
                log.warning("malformed message skipped", reason=str(exc))
                continue
            if envelope.kind in render:
                yield render[envelope.kind](envelope)
    finally:
        context.destroy(linger=0)
