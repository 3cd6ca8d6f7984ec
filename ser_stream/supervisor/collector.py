"""The end of the pipeline: the model replicas' results, in order per stream, to every sink.

The collector puts every stream back in order (the model's replicas share the load), feeds
the sinks and the ledger (:mod:`ser_stream.supervisor.ledger`), and republishes each record
on the PUB endpoint for anyone's subscribers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator

import zmq

from ser_stream.errors import WireError
from ser_stream.messages import EndOfStream, ErrorMsg, Event, Heartbeat, Prediction
from ser_stream.ordering import Reorderer
from ser_stream.security import CurveKeys, secure
from ser_stream.sinks import Sink
from ser_stream.supervisor.ledger import Run, Session
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.transport import bind_endpoint
from ser_stream.wire import MAX_FRAME_BYTES, MAX_HEADER_BYTES, Envelope, decode

__all__ = ["Collector", "bind_end", "drain", "end_sockets", "waiting_envelopes"]


class Collector:
    """The end of the pipeline: results in order per stream, to the sinks and subscribers."""

    def __init__(
        self,
        run: Run,
        sinks: list[Sink],
        labels: tuple[str, ...],
        publisher: zmq.Socket,
        expected: set[str] = frozenset(),  # type: ignore[assignment]
        *,
        keeps_ledger: bool = False,
    ) -> None:
        self.keeps_ledger = keeps_ledger  # the supervisor feeds window_emitted
        self.run = run
        self.sinks = sinks
        self.labels = labels
        self.publisher = publisher
        self.expected = expected  # streams that start with the session (not producers')
        self.ready_at = time.monotonic()
        self.order: Reorderer[tuple[Envelope, list[bytes]]] = Reorderer()
        run.ordering = self.order.counters
        self.ended: list[str] = []
        self._opened_at: dict[str, float] = {}
        self.before_end: Callable[[], None] = lambda: None  # take the ledger's last entries

    def window_emitted(self, stream: str, span: tuple[float, float]) -> None:
        """The ledger: the VAD entered a window of ``stream`` before sending it on."""
        session = self._session(stream)
        if not session.ended:
            session.emitted = (session.emitted or set()) | {span}

    def _session(self, stream: str) -> Session:
        if stream not in self.run.streams:
            self._opened_at[stream] = time.monotonic()
        session = self.run.session(stream)
        if self.keeps_ledger and session.emitted is None:
            session.emitted = set()
        return session

    def end_the_rest(self, reason: str) -> None:
        """At the end of the session: release what is held and end every open stream."""
        for item in self.order.flush_all():
            self._deliver(*item)
        for stream, session in list(self.run.streams.items()):
            if not session.ended:
                self._end(stream, session, reason)

    def _end(self, stream: str, session: Session, reason: str) -> None:
        self.before_end()
        session.reason = reason
        session.ended = True
        opened = self.ready_at if stream in self.expected else self._opened_at.pop(stream, None)
        session.duration_s = time.monotonic() - (opened or self.ready_at)
        self.ended.append(stream)
        for item in self.order.forget(stream):
            self._deliver(*item)
        summary = session.summary(self.labels)
        session.close()
        for sink in self.sinks:
            sink.stream_end(stream, reason, summary)

    def take(self, frames: list[bytes]) -> None:
        """One message from the model replicas."""
        try:
            envelope = decode(frames)
        except WireError as exc:
            self.run.errors.append(str(exc))
            return
        if isinstance(envelope.body, Heartbeat):
            return
        if envelope.stream == "-":  # a stage's report about a message it could not read
            if isinstance(envelope.body, ErrorMsg):
                self.run.errors.append(envelope.body.reason)
                self._publish(frames)
                for sink in self.sinks:
                    sink.error(envelope)
            return
        for item in self.order.push(envelope.stream, envelope.seq, (envelope, frames)):
            self._deliver(*item)

    def expire(self) -> None:
        """Move on where a record is overdue (its replica died)."""
        for item in self.order.expire():
            self._deliver(*item)

    def _publish(self, frames: list[bytes]) -> None:
        try:
            self.publisher.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:  # a PUB never blocks; a full subscriber misses it, as designed
            pass

    def _deliver(self, envelope: Envelope, frames: list[bytes]) -> None:
        self._publish(frames)
        session = self._session(envelope.stream)
        body = envelope.body
        if isinstance(body, Prediction):
            session.predictions.append(body)
            for sink in self.sinks:
                sink.prediction(envelope, self.labels)
        elif isinstance(body, Event):
            if body.name == "windows":
                session.windows = int(body.data.get("count", 0))
            elif body.name == "gap":
                session.audio_dropped_s += float(body.data.get("dropped_s", 0.0))
            for sink in self.sinks:
                sink.event(envelope)
        elif isinstance(body, ErrorMsg):
            session.errors.append(body.reason)
            session.failed += body.stage in CHAIN[1:]
            for sink in self.sinks:
                sink.error(envelope)
        elif isinstance(body, EndOfStream) and not session.ended:
            self._end(envelope.stream, session, body.reason)


def drain(results: zmq.Socket, collector: Collector) -> None:
    """Deliver what is already waiting (the stages' last words on their way out)."""
    while results.poll(20):
        for _ in range(256):
            try:
                collector.take(results.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break


def waiting_envelopes(sock: zmq.Socket, most: int = 1024) -> Iterator[Envelope]:
    """The messages waiting on ``sock`` (``most`` at most), decoded; never waits.

    A malformed one is skipped: on a control socket only stages speak, and one that cannot be
    read says nothing the supervisor could act on.
    """
    for _ in range(most):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            yield decode(frames)
        except WireError:
            continue


def end_sockets(context: zmq.Context) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
    """The sockets of a pipeline's end, not yet bound: control, results (PULL), publisher (PUB).

    None lingers: what is still queued at the end has no one left to take it.
    """
    control = context.socket(zmq.PULL)
    control.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)
    results = context.socket(zmq.PULL)
    results.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    publisher = context.socket(zmq.PUB)
    for sock in (control, results, publisher):
        sock.setsockopt(zmq.LINGER, 0)
    return control, results, publisher


def bind_end(
    sockets: tuple[zmq.Socket, ...],
    endpoints: tuple[str, ...],
    keys: CurveKeys | None,
    authenticators: dict,
    listening: dict[str, socket.socket] | None = None,
) -> None:
    """Bind each socket of :func:`end_sockets` to its endpoint, a CURVE server on tcp://.

    ``listening``: sockets already listening on tcp endpoints (``up`` chose the ports),
    taken over instead of binding anew.

    Raises:
        InputError: an endpoint cannot be bound.
    """
    for sock, endpoint in zip(sockets, endpoints, strict=True):
        secure(sock, endpoint, keys, server=True, authenticators=authenticators)
        if listening and endpoint in listening:
            sock.setsockopt(zmq.USE_FD, os.dup(listening[endpoint].fileno()))
        bind_endpoint(sock, endpoint)
