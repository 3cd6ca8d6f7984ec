"""The two sides of a process on the transport: what it sends, and what a stage receives.

:class:`Outbox` is the sending side (one output per shard of the next stage, the
acknowledgements of its ends of stream, the supervisor's control); :class:`Inbox` the
receiving side of a stage (a source is a stage without one).

End of stream is never lost: after sending an end-of-stream marker a process expects an
acknowledgement from the stage below, resends it when none came within ``ack_timeout_s``, and
does not close until every marker was acknowledged (or the timeout passed, logged as a loss).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import zmq
import zmq.asyncio

from ser_stream.errors import WireError
from ser_stream.messages import EndOfStream, Kind
from ser_stream.peers import Peers
from ser_stream.transport import Transport, ack_endpoint, shard_of, take_waiting
from ser_stream.wire import MAX_HEADER_BYTES, Envelope, decode

__all__ = ["Arrival", "Inbox", "Outbox"]


class Outbox:
    """Where a process sends: one output per shard of the next stage, and the supervisor.

    Ends of stream wait for their acknowledgement from downstream (resent when overdue).
    """

    def __init__(
        self,
        transport: Transport,
        outputs: Sequence[str],
        *,
        publish: bool = False,
        collect: bool = False,
        control: str | None = None,
    ) -> None:
        self._transport = transport
        self.outs: list[zmq.asyncio.Socket] = []
        self.acks: zmq.asyncio.Socket | None = None  # PULL bound beside every output
        self.control: zmq.asyncio.Socket | None = None
        self._unacked: dict[str, tuple[Envelope, float]] = {}
        if collect:  # a collector binds, takes everything and acknowledges nothing
            self.outs.append(transport.socket(zmq.PUSH))
            transport.connect(self.outs[0], outputs[0])
        else:
            if not publish:
                self.acks = transport.socket(zmq.PULL, linger_ms=0, max_message=MAX_HEADER_BYTES)
            for endpoint in outputs:
                self.outs.append(transport.socket(zmq.PUB if publish else zmq.PUSH))
                transport.bind(self.outs[-1], endpoint)
                if self.acks is not None:
                    transport.bind(self.acks, ack_endpoint(endpoint))
        if control is not None:
            self.control = transport.socket(zmq.PUSH, linger_ms=0)
            transport.connect(self.control, control)

    @property
    def waiting_for(self) -> list[str]:
        """Streams whose end of stream was sent and not yet acknowledged."""
        return sorted(self._unacked)

    def listen(self) -> None:
        """Take acknowledgements in the background from now on."""
        if self.acks is not None:
            self._transport.in_background(self._receive_acks(self.acks))

    async def send(self, envelope: Envelope) -> None:
        """Send to the shard of its stream, waiting as long as the receiver needs."""
        transport = self._transport
        if envelope.kind is Kind.END_OF_STREAM and self.acks is not None:
            self._unacked[envelope.stream] = (envelope, time.monotonic())
        sock = self.outs[shard_of(envelope.stream, len(self.outs))]
        if not await transport.send(sock, envelope):
            transport.counters[f"lost_on_shutdown_{envelope.kind.value}"] += 1
            transport.log.error(
                "message lost on shutdown",
                kind=envelope.kind.value,
                reason="the next stage stopped taking messages",
            )

    async def send_all(self, envelopes: Sequence[Envelope]) -> None:
        """Send each in order."""
        for envelope in envelopes:
            await self.send(envelope)

    def send_now_to_all(self, envelope: Envelope, skipped: str) -> None:
        """Send to every output without waiting (a heartbeat): one not taken is counted."""
        for sock in self.outs:
            self._transport.send_now(sock, envelope, skipped)

    async def resend_overdue(self) -> None:
        """Resend the ends of stream not acknowledged within the timeout (their clock restarts).

        A stage that died holding an end of stream would leave its stream open for ever; a
        repeat is harmless: a stage that already ended the stream ignores it and acknowledges
        again.
        """
        now = time.monotonic()
        after_s = self._transport.settings.ack_timeout_s
        due = [envelope for envelope, at in self._unacked.values() if now - at > after_s]
        for envelope in due:
            self._unacked[envelope.stream] = (envelope, now)
        for envelope in due:
            self._transport.counters["end_of_stream_resent"] += 1
            await self.send(envelope)

    async def wait_acknowledged(self, timeout_s: float) -> None:
        """At shutdown: wait for the last acknowledgements, then report what is missing."""
        deadline = time.monotonic() + timeout_s
        while self._unacked and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._unacked:
            self._transport.counters["end_of_stream_unacknowledged"] += len(self._unacked)
            self._transport.log.error(
                "end of stream not acknowledged downstream",
                streams=sorted(self._unacked),
                reason="the next stage is gone or stuck; its tail may be lost",
            )

    async def _receive_acks(self, sock: zmq.asyncio.Socket) -> None:
        poll_ms = int(self._transport.settings.heartbeat_s * 1000)
        while True:
            if not await sock.poll(poll_ms, zmq.POLLIN):
                continue
            try:
                self._unacked.pop(decode(await sock.recv_multipart()).stream, None)
            except WireError as exc:
                self._transport.log.warning("malformed acknowledgement skipped", reason=str(exc))


Arrival = tuple[list[bytes], int]
"""A message as it arrived: its frames, and when it was taken (``time.time_ns``)."""


class Inbox:
    """What a stage receives: one PULL connected to every upstream replica.

    Each end of stream is acknowledged to every upstream replica once handled (the one that
    sent it stops waiting); an upstream that is gone or not reading cannot hold this stage
    up: a skipped acknowledgement is counted, and the sender resends its end of stream.
    Upstream replicas named by ``dns:`` or ``file:`` (see :mod:`ser_stream.peers`) are
    looked up again every ``PEERS_EVERY_S``: new ones are connected, gone ones let go.
    """

    PEERS_EVERY_S = 0.25

    def __init__(self, transport: Transport, inputs: Sequence[str]) -> None:
        self._transport = transport
        settings = transport.settings
        # Nothing to deliver, so nothing to linger for: an upstream whose listening socket is
        # held by someone who will not answer (a supervisor, a stage host: a restart takes
        # it over) would otherwise hold the exit for the whole linger.
        self.sock = transport.socket(
            zmq.PULL, linger_ms=0, max_message=max(MAX_HEADER_BYTES, settings.max_payload)
        )
        self.peers = Peers(inputs)
        self._acks: dict[str, zmq.asyncio.Socket] = {}  # one PUSH per upstream endpoint
        self._connect(self.peers.lookup(), changes=False)

    @property
    def upstream(self) -> list[str]:
        """The upstream endpoints connected now."""
        return list(self._acks)

    def watch(self) -> None:
        """Follow upstream replicas that move, from now on (nothing to do for fixed ones)."""
        if self.peers.moving:
            self._transport.in_background(self._follow())

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.PEERS_EVERY_S)
                self._connect(await loop.run_in_executor(self.peers.resolver(), self.peers.lookup))
        finally:
            self.peers.close()

    def _connect(self, endpoints: list[str], *, changes: bool = True) -> None:
        transport = self._transport
        for endpoint in endpoints:
            if endpoint not in self._acks:
                transport.connect(self.sock, endpoint)
                # An ack is sent now or never (an end of stream not acknowledged is resent),
                # so none may hold up the exit: its upstream may be gone already.
                self._acks[endpoint] = transport.socket(zmq.PUSH, linger_ms=0)
                transport.connect(self._acks[endpoint], ack_endpoint(endpoint))
                if changes:  # the first ones are in the "ready" line
                    transport.log.info("upstream connected", endpoint=endpoint)
        for endpoint in [known for known in self._acks if known not in endpoints]:
            self.sock.disconnect(endpoint)
            transport.close(self._acks.pop(endpoint))
            transport.log.info("upstream let go", endpoint=endpoint)

    async def poll(self, timeout_ms: int) -> bool:
        """Whether a message is waiting, within ``timeout_ms``."""
        return bool(await self.sock.poll(timeout_ms, zmq.POLLIN))

    async def take_waiting(self, most: int) -> deque[list[bytes]]:
        """The messages that have arrived, ``most`` at most: this stage's queue now."""
        return await take_waiting(self.sock, most)

    async def drain(self, process: Callable[[list[Arrival]], Awaitable[None]]) -> None:
        """On shutdown, finish what already arrived (bounded by the ack timeout)."""
        progress = self._transport.progress
        deadline = time.monotonic() + self._transport.settings.ack_timeout_s
        while time.monotonic() < deadline:
            try:
                frames = await self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            progress.took()
            await process([(frames, time.time_ns())])
            progress.finished()

    def acknowledge(self, envelope: Envelope) -> None:
        """Acknowledge an end of stream to every upstream replica; never blocks."""
        ack = Envelope(envelope.stream, envelope.seq, EndOfStream("ack"))
        for sock in self._acks.values():
            self._transport.send_now(sock, ack, "acks_skipped")
