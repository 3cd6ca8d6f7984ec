"""WebSocket clients as streams of the pipeline: their audio in, their records back.

The pipeline runs as under ``ser-stream up`` with one ``zmq:`` source; the gateway is one
more producer of it (``docs/wire.md``), naming a stream per client. The collector's records
come back through :class:`GatewaySink`, called on the supervisor's thread, and are handed
to the web server's event loop, where each client's handler reads its own.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq
import zmq.asyncio

from ser_stream.logs import get_logger
from ser_stream.messages import Audio, EndOfStream
from ser_stream.settings import HWM
from ser_stream.sinks import Sink, error_record, event_record, prediction_record
from ser_stream.wire import Envelope, encode

__all__ = ["Busy", "ClientBusy", "ClientStream", "Gateway", "GatewaySink", "gateway_error"]

RECORDS_HELD = 1024
"""Records a client may leave unread before its stream is closed (it is not reading)."""

END_WITHIN_S = 2.0
"""How long an end of stream may wait for the capture (gone, when the service stops)."""


def gateway_error(stream: str, reason: str) -> dict:
    """An ``error`` record of the gateway itself (``stream`` ``-``: before a stream began)."""
    return {"kind": "error", "stream": stream, "stage": "gateway", "reason": reason}


class Busy(Exception):
    """Every stream the service allows is open."""


class ClientBusy(Busy):
    """The client's address holds as many streams as one client may."""


@dataclass
class ClientStream:
    """One client's stream: its id, its audio so far and the records waiting for it."""

    stream: str
    sample_rate: int
    address: str = "-"  # the client's, as the connection gives it
    records: asyncio.Queue = field(default_factory=asyncio.Queue)
    seq: int = 0
    samples_sent: int = 0
    ended: bool = False  # its end of stream went to the pipeline
    unread: bool = False  # it left more than RECORDS_HELD records unread

    @property
    def seconds_sent(self) -> float:
        """Seconds of this client's audio sent into the pipeline."""
        return self.samples_sent / self.sample_rate


class Gateway:
    """Streams of WebSocket clients into the pipeline's ``zmq:`` source, records back out.

    :meth:`mark_ready`, :meth:`mark_stopping`, :meth:`notify_all` and
    :meth:`deliver_threadsafe` may be called from any thread; the others run on the web
    server's event loop.
    """

    def __init__(
        self, endpoint: str, *, max_streams: int, max_per_client: int | None = None
    ) -> None:
        self.endpoint = endpoint
        self.max_streams = max_streams
        self.max_per_client = max_per_client  # None: as many as max_streams
        self.ready = threading.Event()  # every stage is up
        self.stopping = threading.Event()  # the pipeline is ending
        self.clients: dict[str, ClientStream] = {}
        self.log = get_logger(component="gateway")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: zmq.asyncio.Context | None = None
        self._push: zmq.asyncio.Socket | None = None

    def attach(self) -> None:
        """Connect to the capture from the running event loop (the server's start)."""
        self._loop = asyncio.get_running_loop()
        self._context = zmq.asyncio.Context()
        self._push = self._context.socket(zmq.PUSH)
        self._push.set_hwm(HWM)  # backpressure as between stages: past it, sending waits
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(self.endpoint)

    def detach(self) -> None:
        """Close the connection to the capture (the server's end)."""
        self._loop = None
        if self._context is not None:
            # What is still queued goes out if the capture takes it within a second.
            self._context.destroy(linger=1000)
            self._context = None

    def mark_ready(self) -> None:
        """Every stage is up: streams may start (called from the supervisor's thread)."""
        self.ready.set()

    def mark_stopping(self) -> None:
        """The pipeline is ending: no stream may start (from the supervisor's thread)."""
        self.stopping.set()

    @property
    def serving(self) -> bool:
        """Streams may start now."""
        return self.ready.is_set() and not self.stopping.is_set()

    def open(self, sample_rate: int, address: str = "-") -> ClientStream:
        """A new stream for the client at ``address``.

        A client's streams are counted from :attr:`clients`, so whatever ends a stream
        (:meth:`release`) frees its place in both counts.

        Raises:
            ClientBusy: ``address`` holds ``max_per_client`` streams.
            Busy: ``max_streams`` streams are open.
        """
        if self.max_per_client is not None and self.held_by(address) >= self.max_per_client:
            raise ClientBusy(
                f"{self.max_per_client} streams are open from this address, "
                "the most one client may hold"
            )
        if len(self.clients) >= self.max_streams:
            raise Busy(f"{self.max_streams} streams are open, the most this service takes")
        client = ClientStream(f"ws-{secrets.token_hex(6)}", sample_rate, address)
        self.clients[client.stream] = client
        return client

    def held_by(self, address: str) -> int:
        """Streams open now for the client at ``address``."""
        return sum(1 for client in self.clients.values() if client.address == address)

    async def send_audio(self, client: ClientStream, samples: np.ndarray) -> None:
        """Send 16-bit samples of ``client`` on; waits while the pipeline is behind."""
        if client.ended or samples.size == 0:
            return
        audio = Audio(samples, client.sample_rate, client.seconds_sent)
        await self._send(Envelope(client.stream, client.seq, audio, {"gateway": time.time_ns()}))
        client.seq += 1
        client.samples_sent += samples.size

    async def end(self, client: ClientStream, reason: str = "eof") -> None:
        """End ``client``'s stream in every stage (once): each frees its state for it.

        The end goes out even if the caller is cancelled meanwhile; it waits at most
        :data:`END_WITHIN_S` for a capture that takes nothing (the service is stopping).
        """
        if client.ended:
            return
        client.ended = True
        marker = Envelope(client.stream, client.seq, EndOfStream(reason))
        client.seq += 1
        sending = asyncio.ensure_future(self._send(marker))
        try:
            await asyncio.wait_for(asyncio.shield(sending), END_WITHIN_S)
        except asyncio.TimeoutError:
            sending.cancel()
            self.log.warning("end of stream not taken by the capture", stream=client.stream)

    def release(self, client: ClientStream) -> None:
        """Forget ``client``: records that still come for its stream are not kept."""
        self.clients.pop(client.stream, None)

    async def _send(self, envelope: Envelope) -> None:
        if self._push is None:
            raise RuntimeError("the gateway is not attached to an event loop")
        await self._push.send_multipart(encode(envelope))

    def notify_all(self, reason: str) -> None:
        """Tell every open client ``reason`` in an error record (from any thread)."""
        for stream in list(self.clients):
            self.deliver_threadsafe(stream, gateway_error(stream, reason))

    def deliver_threadsafe(self, stream: str, record: dict) -> None:
        """Hand ``record`` to the client of ``stream`` (from any thread)."""
        loop = self._loop
        if loop is not None and stream in self.clients:
            try:
                loop.call_soon_threadsafe(self._deliver, stream, record)
            except RuntimeError:  # the loop closed meanwhile: the server is ending
                pass

    def _deliver(self, stream: str, record: dict) -> None:
        client = self.clients.get(stream)
        if client is None:
            return
        if client.records.qsize() >= RECORDS_HELD:
            if not client.unread:
                self.log.warning("client is not reading its records", stream=stream)
            client.unread = True
            return
        client.records.put_nowait(record)


class GatewaySink(Sink):
    """The collector's records of each client's stream, to that client."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Pass a prediction on."""
        self.gateway.deliver_threadsafe(envelope.stream, prediction_record(envelope, labels))

    def event(self, envelope: Envelope) -> None:
        """Pass an event on."""
        self.gateway.deliver_threadsafe(envelope.stream, event_record(envelope))

    def error(self, envelope: Envelope) -> None:
        """Pass an error about a client's stream on."""
        self.gateway.deliver_threadsafe(envelope.stream, error_record(envelope))

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Pass the end of a client's stream on, with its summary."""
        record = {"kind": "stream_end", "stream": stream, "reason": reason, "summary": summary}
        self.gateway.deliver_threadsafe(stream, record)
