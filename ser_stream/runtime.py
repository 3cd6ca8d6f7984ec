"""The one stage runtime: ZeroMQ sockets and an asyncio loop around a stage's logic.

Sockets (who binds: the stable upstream side binds, the scaling downstream side connects)::

    upstream PUSH (binds IN) ──▶ PULL (connects IN)   [stage]   PUSH or PUB (binds OUT) ──▶
    upstream ack PULL (binds ack(IN)) ◀── PUSH (connects ack(IN))   PULL (binds ack(OUT)) ◀──

End of stream is never lost: after forwarding an end-of-stream marker the stage expects an
acknowledgement on its ack socket from the stage below, and it does not close until every
marker it sent was acknowledged (or ``ack_timeout_s`` passed, which it logs as a loss).
Receives never wait forever: every poll has a timeout, and an idle stage sends heartbeats
downstream. A malformed message is counted, logged with its reason and skipped.
"""

from __future__ import annotations

import asyncio
import signal
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from ser_stream.errors import InputError, WireError
from ser_stream.liveness import Progress
from ser_stream.logs import get_logger
from ser_stream.messages import Audio, EndOfStream, ErrorMsg, Event, Heartbeat, Window
from ser_stream.ordering import first_seq
from ser_stream.security import CurveKeys, secure, stop_authenticators
from ser_stream.stage import STREAM_IDLE_S, StageContext, StageLogic, StageSpec
from ser_stream.wire import (
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    Body,
    Envelope,
    Kind,
    decode,
    encode,
)

SourceItem = Audio | Event | ErrorMsg | Heartbeat | tuple
"""What a source yields: a body of its own stream, or ``(stream, body)`` for one of many,
or ``(stream, body, timestamps)`` with a producer's own timestamps to keep."""

__all__ = [
    "Endpoints",
    "RuntimeSettings",
    "SourceRuntime",
    "StageRuntime",
    "ack_endpoint",
    "bind_endpoint",
    "ledger_entry",
    "shard_of",
    "window_id",
]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a stage reads and writes.

    Attributes:
        inputs: the upstream replicas' bound endpoints, all connected by this stage's PULL.
        outputs: the endpoints this stage binds its PUSH (or PUB) on: one per shard of the
            next stage; a stream always goes to the same one (see :func:`shard_of`).
        publish: PUB instead of PUSH: for a last stage whose subscribers may be slow.
        collect: connect the one output to a collector that binds it (the supervisor), which
            takes everything and acknowledges nothing.
        control: a supervisor's endpoint: the stage says it is ready and alive there.
        replica: which replica of the stage this is; the supervisor hears ``NAME.REPLICA``.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    publish: bool = False
    collect: bool = False
    control: str | None = None
    replica: int = 0

    def __post_init__(self) -> None:
        if not self.inputs or not self.outputs:
            raise InputError("a stage needs at least one --in and one --out endpoint")
        if (self.publish or self.collect) and len(self.outputs) != 1:
            raise InputError("a publishing or collected stage has exactly one --out endpoint")


def bind_endpoint(sock: zmq.Socket, endpoint: str) -> None:
    """Bind, or say in one line why not (a port another program holds, a bad address).

    Raises:
        InputError: the bind failed.
    """
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise InputError(
            f"cannot bind {endpoint} ({exc.strerror}); another program may hold it, or the "
            "address is wrong: pick another endpoint"
        ) from exc


def shard_of(stream: str, shards: int) -> int:
    """The shard (replica of a stateful stage) that serves ``stream``; the same everywhere."""
    return zlib.crc32(stream.encode()) % shards if shards > 1 else 0


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Flow control and liveness settings.

    Attributes:
        hwm: high-water mark of every socket, in messages (a full PUSH makes its sender wait).
        heartbeat_s: an idle stage sends a heartbeat this often; also the poll timeout.
        ack_timeout_s: how long closing waits for end-of-stream acknowledgements.
        linger_ms: bounded LINGER when closing sockets.
        max_payload: largest array accepted, in bytes.
        max_batch: most queued messages handled in one go (the model batches them).
        idle_s: a stream that sent nothing this long is ended and its state freed.
    """

    hwm: int = 64
    heartbeat_s: float = 1.0
    ack_timeout_s: float = 10.0
    linger_ms: int = 1000
    max_payload: int = MAX_PAYLOAD_BYTES
    max_batch: int = 32
    idle_s: float = STREAM_IDLE_S


LEDGER_EVENT = "window_emitted"
"""The event a stage sends the supervisor for every window it emits (see :func:`ledger_entry`)."""


def ledger_entry(window: Window) -> Event:
    """The supervisor's record of one emitted window: its span is its id in the stream."""
    return Event(LEDGER_EVENT, window.t_end, {"t_start": window.t_start, "t_end": window.t_end})


def window_id(t_start: float, t_end: float) -> tuple[float, float]:
    """A window's id in its stream: its span, rounded so that JSON round trips agree."""
    return round(t_start, 4), round(t_end, 4)


RECEIVED = ".in"
"""Suffix of the timestamp a stage records when a message arrives (``features.in``)."""


def ack_endpoint(endpoint: str) -> str:
    """The endpoint of the acknowledgement channel that goes with a data endpoint.

    ``ipc://PATH`` -> ``ipc://PATH.ack``; ``tcp://HOST:PORT`` -> ``tcp://HOST:PORT+1``.

    Raises:
        InputError: another transport, or a TCP endpoint without a numeric port.
    """
    parts = urlsplit(endpoint)
    if parts.scheme == "ipc":
        return f"{endpoint}.ack"
    if parts.scheme == "tcp" and parts.port:
        host = endpoint.rsplit(":", 1)[0]
        return f"{host}:{parts.port + 1}"
    raise InputError(f"endpoint {endpoint!r} is not ipc://PATH or tcp://HOST:PORT")


def _on_signals(stop) -> None:
    """Call ``stop`` on SIGTERM and SIGINT (Ctrl-C), from the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass


async def _send_or_give_up(
    sock: zmq.asyncio.Socket,
    envelope: Envelope,
    settings: RuntimeSettings,
    give_up_at: Callable[[], float],
) -> bool:
    """Send, waiting as long as the receiver needs (backpressure) until ``give_up_at()``.

    ``give_up_at`` is infinite until shutdown starts; returns False when the send was abandoned.
    """
    sending = asyncio.ensure_future(sock.send_multipart(encode(envelope)))
    while True:
        done, _ = await asyncio.wait({sending}, timeout=settings.heartbeat_s)
        if done:
            sending.result()
            return True
        if time.monotonic() > give_up_at():
            sending.cancel()
            return False


def _send_without_waiting(
    sock: zmq.asyncio.Socket, envelope: Envelope, counters: Counter, skipped: str
) -> None:
    """Send now or never: a message nobody takes now is counted under ``skipped``.

    An asyncio socket reports ``zmq.Again`` through the returned future, not by raising.
    """

    def count(future) -> None:
        if not future.cancelled() and isinstance(future.exception(), zmq.Again):
            counters[skipped] += 1

    try:
        sock.send_multipart(encode(envelope), zmq.NOBLOCK).add_done_callback(count)
    except zmq.Again:
        counters[skipped] += 1


async def _beat_to(
    sock: zmq.asyncio.Socket, beat: Callable[[], Envelope], every_s: float, counters: Counter
) -> None:
    """Tell the supervisor every ``every_s`` that this process lives (runs until cancelled).

    It runs on the event loop whatever the process is busy with (cores work in a thread,
    sends wait on the loop), so a silence means the process stopped or hung.
    """
    while True:
        _send_without_waiting(sock, beat(), counters, "control_heartbeats_skipped")
        await asyncio.sleep(every_s)


@dataclass
class _Sockets:
    """A stage's sockets; the ones for acknowledgements follow its data sockets."""

    inbox: zmq.asyncio.Socket
    outs: list[zmq.asyncio.Socket]
    acks_up: list[zmq.asyncio.Socket]  # one PUSH per upstream endpoint: an ack goes to all
    acks_down: zmq.asyncio.Socket | None  # PULL bound beside every output
    control: zmq.asyncio.Socket | None

    def out_for(self, stream: str) -> zmq.asyncio.Socket:
        """The output (shard of the next stage) that carries ``stream``."""
        return self.outs[shard_of(stream, len(self.outs))]

    def all(self) -> list[zmq.asyncio.Socket]:
        """Every socket, for closing."""
        extra = [s for s in (self.acks_down, self.control) if s is not None]
        return [self.inbox, *self.outs, *self.acks_up, *extra]


class _Unacknowledged:
    """Ends of stream sent and not yet acknowledged, to resend when one was lost.

    A stage that died holding an end of stream would leave its stream open for ever; the
    sender resends any end unacknowledged after the acknowledgement timeout (a repeat is
    harmless: a stage that already ended the stream ignores it and acknowledges again).
    """

    def __init__(self) -> None:
        self.sent: dict[str, tuple[Envelope, float]] = {}

    def add(self, envelope: Envelope) -> None:
        self.sent[envelope.stream] = (envelope, time.monotonic())

    def acknowledged(self, stream: str) -> None:
        self.sent.pop(stream, None)

    def overdue(self, after_s: float) -> list[Envelope]:
        """Ends to resend now (their clock starts again)."""
        now = time.monotonic()
        due = [envelope for envelope, at in self.sent.values() if now - at > after_s]
        for envelope in due:
            self.sent[envelope.stream] = (envelope, now)
        return due

    async def receive(self, sock: zmq.asyncio.Socket, log, poll_ms: int) -> None:
        """Take acknowledgements as they come (runs until cancelled)."""
        while True:
            if not await sock.poll(poll_ms, zmq.POLLIN):
                continue
            try:
                self.acknowledged(decode(await sock.recv_multipart()).stream)
            except WireError as exc:
                log.warning("malformed acknowledgement skipped", reason=str(exc))

    async def wait(self, timeout_s: float, counters: Counter, log) -> None:
        """At shutdown: wait for the last acknowledgements, then report what is missing."""
        deadline = time.monotonic() + timeout_s
        while self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.sent:
            counters["end_of_stream_unacknowledged"] += len(self.sent)
            log.error(
                "end of stream not acknowledged downstream",
                streams=sorted(self.sent),
                reason="the next stage is gone or stuck; its tail may be lost",
            )


class _Lifecycle:
    """What every process of a pipeline shares, stage or source.

    Start (signal handlers, a ZeroMQ context, CURVE on tcp:// endpoints), heartbeats to the
    supervisor, background tasks, stop (safe from a signal handler; from then on, sends give
    up on a neighbour that is gone after ``ack_timeout_s``) and the end (tasks cancelled,
    sockets closed with a bounded linger, the context ended).
    """

    def __init__(
        self,
        settings: RuntimeSettings | None,
        keys: CurveKeys | None,
        listen_fds: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings()
        self.keys = keys  # CURVE on tcp:// endpoints (see ser_stream.security)
        # tcp endpoints whose listening socket the supervisor chose and handed over
        self.listen_fds = dict(listen_fds or {})
        self._authenticators: dict = {}
        self._stopping: asyncio.Event | None = None
        self._give_up_at = float("inf")
        self._tasks: list[asyncio.Task] = []
        self.progress = Progress()  # what the heartbeats report (see ser_stream.liveness)

    def stop(self) -> None:
        """Ask the process to drain and exit (safe from signal handlers)."""
        if self._stopping is not None and not self._stopping.is_set():
            self._stopping.set()
            # Draining may wait for a slow receiver, but not forever for a gone one.
            self._give_up_at = time.monotonic() + self.settings.ack_timeout_s

    def _start(self) -> zmq.asyncio.Context:
        """Signals stop the process from now on; returns the process's ZeroMQ context.

        Blocking work (the cores, a source's reads) runs in one worker thread: it is done one
        piece at a time anyway, and the process keeps a fixed number of threads for hours.
        """
        self._stopping = asyncio.Event()
        _on_signals(self.stop)
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="core")
        )
        return zmq.asyncio.Context()

    def _socket(self, context: zmq.asyncio.Context, kind: int, *, linger_ms: int | None = None):
        sock = context.socket(kind)
        sock.set_hwm(self.settings.hwm)
        sock.setsockopt(zmq.LINGER, self.settings.linger_ms if linger_ms is None else linger_ms)
        return sock

    def _bind(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        secure(sock, endpoint, self.keys, server=True, authenticators=self._authenticators)
        handed = endpoint in self.listen_fds
        if handed:
            sock.setsockopt(zmq.USE_FD, self.listen_fds.pop(endpoint))
        bind_endpoint(sock, endpoint)
        if handed:
            sock.setsockopt(zmq.USE_FD, -1)  # the next bind of this socket allocates its own

    def _connect(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        secure(sock, endpoint, self.keys, server=False)
        sock.connect(endpoint)

    async def _send_counted(self, sock: zmq.asyncio.Socket, envelope: Envelope) -> bool:
        """Send with backpressure (see :func:`_send_or_give_up`); False if given up.

        The wait counts as held work in the heartbeats' progress.
        """
        self.progress.sending()
        sent = False
        try:
            sent = await _send_or_give_up(sock, envelope, self.settings, lambda: self._give_up_at)
        finally:
            self.progress.done_sending(sent)
        return sent

    def _in_background(self, coroutine) -> None:
        """Run ``coroutine`` beside the main loop until the end."""
        self._tasks.append(asyncio.create_task(coroutine))

    def _beat(self, control: zmq.asyncio.Socket | None, heartbeat: Callable[[], Envelope]):
        """Heartbeats to the supervisor every ``heartbeat_s`` (if there is one)."""
        if control is not None:
            counters = self.counters  # type: ignore[attr-defined]
            self._in_background(_beat_to(control, heartbeat, self.settings.heartbeat_s, counters))

    def _finish(self, context: zmq.asyncio.Context, sockets: list[zmq.asyncio.Socket]) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for sock in sockets:
            sock.close()  # each socket's own LINGER bounds it
        stop_authenticators(self._authenticators)
        context.term()


class StageRuntime(_Lifecycle):
    """Runs one stage in this process until SIGTERM/SIGINT or :meth:`stop`."""

    def __init__(
        self,
        spec: StageSpec,
        context: StageContext,
        endpoints: Endpoints,
        settings: RuntimeSettings | None = None,
        *,
        generation: int = 0,
        keys: CurveKeys | None = None,
        resume: dict[str, float] | None = None,
        listen_fds: dict[str, int] | None = None,
    ) -> None:
        super().__init__(settings, keys, listen_fds)
        self.spec = spec
        self.endpoints = endpoints
        self.logic = StageLogic(spec, context, generation=generation, resume=dict(resume or {}))
        self.log = get_logger(stage=spec.name)
        self._unacked = _Unacknowledged()
        self._swept_at = time.monotonic()
        self._queued = 0  # the deepest input queue seen since the last heartbeat

    @property
    def counters(self):
        """Counts of everything received, sent, dropped and skipped."""
        return self.logic.counters

    def _heartbeat(self) -> Envelope:
        label = f"{self.spec.name}.{self.endpoints.replica}"
        queued, self._queued = self._queued, 0
        beat = Heartbeat(
            label,
            positions=self.logic.positions(),
            streams=len(self.logic.open_streams),
            queued=queued,
            **self.progress.report(),
        )
        return Envelope("-", 0, beat)

    async def run(self) -> int:
        """Serve until stopped; return the process exit status."""
        context = self._start()
        sockets = self._open(context)
        try:
            if self.spec.warm_up is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, self.spec.warm_up, self.logic.context
                )
            self.log.info("ready", inputs=self.endpoints.inputs, outputs=self.endpoints.outputs)
            self._beat(sockets.control, self._heartbeat)
            if sockets.acks_down is not None:
                poll_ms = int(self.settings.heartbeat_s * 1000)
                self._in_background(self._unacked.receive(sockets.acks_down, self.log, poll_ms))
            await self._serve(sockets)
            await self._drain_input(sockets)
            await self._send_all(sockets, self.logic.end_all("signal"))
            await self._unacked.wait(self.settings.ack_timeout_s, self.counters, self.log)
        finally:
            self._finish(context, sockets.all())
            self.log.info("stopped", **dict(self.counters))
        return 0

    def _open(self, context: zmq.asyncio.Context) -> _Sockets:
        endpoints = self.endpoints
        inbox = self._socket(context, zmq.PULL)
        inbox.setsockopt(zmq.MAXMSGSIZE, max(MAX_HEADER_BYTES, self.settings.max_payload))
        acks_up = []
        for endpoint in endpoints.inputs:
            self._connect(inbox, endpoint)
            acks_up.append(self._socket(context, zmq.PUSH))
            self._connect(acks_up[-1], ack_endpoint(endpoint))
        outs, acks_down = [], None
        if endpoints.collect:
            outs.append(self._socket(context, zmq.PUSH))
            self._connect(outs[0], endpoints.outputs[0])
        else:
            if not endpoints.publish:
                acks_down = self._socket(context, zmq.PULL)
                acks_down.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)
            for endpoint in endpoints.outputs:
                outs.append(self._socket(context, zmq.PUB if endpoints.publish else zmq.PUSH))
                self._bind(outs[-1], endpoint)
                if acks_down is not None:
                    self._bind(acks_down, ack_endpoint(endpoint))
        control = None
        if endpoints.control:
            control = self._socket(context, zmq.PUSH, linger_ms=0)
            self._connect(control, endpoints.control)
        return _Sockets(inbox, outs, acks_up, acks_down, control)

    def _send_now(
        self, sock: zmq.asyncio.Socket, skipped: str, beat: Envelope | None = None
    ) -> None:
        """Send without waiting (a heartbeat unless told); one nobody takes now is counted."""
        _send_without_waiting(sock, beat or self.logic.heartbeat(), self.counters, skipped)

    async def _serve(self, sockets: _Sockets) -> None:
        assert self._stopping is not None
        timeout_ms = 100  # short: a stop request is noticed at once
        last_sent = time.monotonic()
        while not self._stopping.is_set():
            await self._resend_overdue(sockets)
            if not await sockets.inbox.poll(timeout_ms, zmq.POLLIN):
                if time.monotonic() - last_sent >= self.settings.heartbeat_s:
                    # Never wait for a heartbeat: no receiver or a full queue skips it.
                    for out in sockets.outs:
                        self._send_now(out, "heartbeats_skipped")
                    last_sent = time.monotonic()
                await self._sweep(sockets)
                continue
            # The asyncio integration is edge-triggered: drain everything that is ready, in
            # batches (the model stage classifies a batch of queued windows in one call).
            size = self.settings.max_batch if self.spec.batches else 1
            while True:
                waiting = await self._take_waiting(sockets.inbox, max(size, self.settings.hwm))
                if not waiting:
                    break
                self._queued = max(self._queued, len(waiting))
                self.progress.took(len(waiting))
                while waiting:
                    # Stamped as each batch begins: before it, a message was still queued.
                    now = time.time_ns()
                    batch = [(waiting.popleft(), now) for _ in range(min(size, len(waiting)))]
                    await self._process(batch, sockets)
                    self.progress.finished(len(batch))
                last_sent = time.monotonic()
                await self._sweep(sockets)

    async def _take_waiting(self, inbox: zmq.asyncio.Socket, most: int) -> deque[list[bytes]]:
        """The messages that have arrived, ``most`` at most: this stage's queue now."""
        waiting: deque[list[bytes]] = deque()
        while len(waiting) < most:
            try:
                waiting.append(await inbox.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return waiting

    async def _sweep(self, sockets: _Sockets) -> None:
        """Once a heartbeat period: end the streams that went idle, freeing their state.

        Time this stage itself could not look (blocked behind a full queue downstream) is
        not counted against its streams.
        """
        now = time.monotonic()
        since = now - self._swept_at
        if since < self.settings.heartbeat_s:
            return
        self._swept_at = now
        paused_s = max(0.0, since - 2 * self.settings.heartbeat_s)
        await self._send_all(sockets, self.logic.end_idle(self.settings.idle_s, paused_s))

    async def _resend_overdue(self, sockets: _Sockets) -> None:
        for envelope in self._unacked.overdue(self.settings.ack_timeout_s):
            self.counters["end_of_stream_resent"] += 1
            await self._send(sockets, envelope)

    async def _drain_input(self, sockets: _Sockets) -> None:
        """On shutdown, finish what already arrived (bounded by the ack timeout)."""
        deadline = time.monotonic() + self.settings.ack_timeout_s
        while time.monotonic() < deadline:
            try:
                frames = await sockets.inbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.progress.took()
            await self._process([(frames, time.time_ns())], sockets)
            self.progress.finished()

    async def _process(self, batch: list[tuple[list[bytes], int]], sockets: _Sockets) -> None:
        envelopes = []
        for frames, received in batch:
            try:
                envelope = decode(frames, max_payload=self.settings.max_payload)
            except WireError as exc:
                self.counters["malformed_skipped"] += 1
                self.log.warning("malformed message skipped", reason=str(exc))
                report = ErrorMsg(f"malformed message skipped: {exc}", self.spec.name)
                cause = Envelope("-", 0, report)
                await self._send(sockets, self.logic.error(cause, report.reason))
                continue
            # When it arrived: the time before it is the wait in the queue (and the hop).
            envelope.timestamps[f"{self.spec.name}{RECEIVED}"] = received
            envelopes.append(envelope)
        if not envelopes:
            return
        loop = asyncio.get_running_loop()
        # Cores do blocking numeric work: never on the loop.
        outputs = await loop.run_in_executor(
            None, self.logic.handle_many, envelopes, self._log_failure
        )
        await self._send_all(sockets, outputs)
        for envelope in envelopes:
            if envelope.kind is Kind.END_OF_STREAM:
                self._acknowledge(sockets, envelope)

    def _acknowledge(self, sockets: _Sockets, envelope: Envelope) -> None:
        """Tell every upstream replica (the one that sent it stops waiting); never blocks.

        An upstream that is gone or not reading cannot hold this stage up: a skipped
        acknowledgement is counted, and the sender resends its end of stream.
        """
        ack = Envelope(envelope.stream, envelope.seq, EndOfStream("ack"))
        for sock in sockets.acks_up:
            self._send_now(sock, "acks_skipped", ack)

    def _log_failure(self, envelope: Envelope, exc: Exception) -> None:
        self.log.error(
            "message failed", kind=envelope.kind.value, stream=envelope.stream, reason=repr(exc)
        )

    async def _send_all(self, sockets: _Sockets, outputs: list[Envelope]) -> None:
        for out in outputs:
            await self._send(sockets, out)

    async def _send(self, sockets: _Sockets, envelope: Envelope) -> None:
        """Send, waiting as long as the receiver needs (backpressure), except when draining.

        A window is entered in the supervisor's ledger before it leaves: what a stage that
        dies later loses is then measured, not guessed.
        """
        if envelope.kind is Kind.END_OF_STREAM and sockets.acks_down is not None:
            self._unacked.add(envelope)
        if envelope.kind is Kind.WINDOW and sockets.control is not None:
            entry = Envelope(envelope.stream, envelope.seq, ledger_entry(envelope.body))
            if not await _send_or_give_up(
                sockets.control, entry, self.settings, lambda: self._give_up_at
            ):
                self.counters["ledger_entries_lost_on_shutdown"] += 1
        sock = sockets.out_for(envelope.stream)
        if not await self._send_counted(sock, envelope):
            self.counters[f"lost_on_shutdown_{envelope.kind.value}"] += 1
            self.log.error(
                "message lost on shutdown",
                kind=envelope.kind.value,
                reason="the next stage stopped taking messages",
            )


class SourceRuntime(_Lifecycle):
    """Runs a source (capture): frames out with backpressure, then the end of stream.

    A file or stdin source never drops: when the next stage is behind, sending waits (a
    microphone drops in its own buffer instead, and says so with a ``gap`` event). A source
    that fails (:class:`InputError`) sends its reason and an ``error`` end of stream, so the
    session ends with the message, and the process exits with status 2. The process ends
    after its end-of-stream markers are acknowledged downstream.

    A source of one stream yields bodies; a source of many (``named_streams``: producers
    over ZeroMQ, each naming its stream) yields ``(stream, body)`` pairs, an
    :class:`EndOfStream` among them ending that stream, and reports that belong to no stream
    under ``-``. Each stream goes to the output of its shard of the next stage.
    """

    def __init__(
        self,
        stream: str,
        frames: Iterator[SourceItem],
        outputs: str | Sequence[str],
        *,
        realtime: bool,
        named_streams: bool = False,
        settings: RuntimeSettings | None = None,
        control: str | None = None,
        replica: int = 0,
        generation: int = 0,
        keys: CurveKeys | None = None,
        listen_fds: dict[str, int] | None = None,
    ) -> None:
        super().__init__(settings, keys, listen_fds)
        self.generation = generation
        self.stream = stream
        self.control = control
        self.replica = replica
        self.named_streams = named_streams
        self.frames = frames
        self.outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        self.realtime = realtime
        self.counters: Counter = Counter()
        self.log = get_logger(stage="capture", stream=stream)
        self._seq: dict[str, int] = {}
        self._unacked = _Unacknowledged()
        self._position_s = 0.0  # stream time sent so far (a one-stream source)
        self._open_streams: set[str] = set()
        self._first_t: float | None = None  # stream time of the first frame (pacing)

    def _heartbeat(self) -> Envelope:
        beat = Heartbeat(
            f"capture.{self.replica}",
            self._position_s,
            streams=len(self._open_streams),
            **self.progress.report(),
        )
        return Envelope("-", 0, beat)

    async def _send(
        self,
        outs: list[zmq.asyncio.Socket],
        stream: str,
        body: Body,
        stamps: dict[str, int] | None = None,
    ) -> None:
        """Wait for the next stage as long as it needs, unless stopping and it is gone."""
        seq = self._seq.get(stream, first_seq(self.generation))
        self._seq[stream] = seq + 1
        timestamps = {**(stamps or {}), "capture": time.time_ns()}
        await self._send_envelope(outs, Envelope(stream, seq, body, timestamps))

    async def _send_envelope(self, outs: list[zmq.asyncio.Socket], envelope: Envelope) -> None:
        if envelope.kind is Kind.END_OF_STREAM:
            self._unacked.add(envelope)
        sock = outs[shard_of(envelope.stream, len(outs))]
        if not await self._send_counted(sock, envelope):
            self.counters[f"lost_on_shutdown_{envelope.kind.value}"] += 1

    async def _forward(
        self,
        outs: list[zmq.asyncio.Socket],
        stream: str,
        frame: SourceItem,
        stamps: dict[str, int],
        started: float,
    ) -> None:
        """Send one item of the source on.

        Audio (paced at real time if asked), a report, or the end of one producer's stream.
        """
        if isinstance(frame, EndOfStream):  # one producer's stream is over
            self._open_streams.discard(stream)
            await self._send(outs, stream, frame)
            self._seq.pop(stream, None)
            return
        if stream != "-":  # "-": a report about no stream (a malformed message)
            self._open_streams.add(stream)
        if isinstance(frame, ErrorMsg | Event):  # skipped input, lost audio: say so
            self.counters[f"source_{type(frame).__name__.lower()}s"] += 1
            await self._send(outs, stream, frame)
            return
        t_end = frame.t_start + frame.samples.size / frame.sample_rate
        if self.realtime:
            # A frame is "captured" when its last sample would have been heard (from the
            # first frame: a resumed file starts later in its stream).
            if self._first_t is None:
                self._first_t = frame.t_start
            await asyncio.sleep(max(0.0, started + t_end - self._first_t - time.monotonic()))
        await self._send(outs, stream, frame, stamps)
        if stream == self.stream:
            self._position_s = t_end
        self.counters["out_audio"] += 1

    async def run(self) -> int:
        """Send every frame, then the end of each stream; return the exit status."""
        loop = asyncio.get_running_loop()
        context = self._start()
        outs = [self._socket(context, zmq.PUSH) for _ in self.outputs]
        acks = self._socket(context, zmq.PULL, linger_ms=0)
        acks.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)
        control = None
        if self.control is not None:
            control = self._socket(context, zmq.PUSH, linger_ms=0)
        sockets = [*outs, acks, *([control] if control is not None else [])]
        reason = "eof"
        status = 0
        open_streams = self._open_streams
        try:
            for sock, endpoint in zip(outs, self.outputs, strict=True):
                self._bind(sock, endpoint)
                self._bind(acks, ack_endpoint(endpoint))
            if control is not None:
                self._connect(control, self.control)
            self.log.info("ready", outputs=self.outputs, realtime=self.realtime)
            started = time.monotonic()
            poll_ms = int(self.settings.heartbeat_s * 1000)
            self._in_background(self._unacked.receive(acks, self.log, poll_ms))
            self._beat(control, self._heartbeat)
            while True:
                for envelope in self._unacked.overdue(self.settings.ack_timeout_s):
                    self.counters["end_of_stream_resent"] += 1
                    await self._send_envelope(outs, envelope)
                if self._stopping.is_set():
                    reason = "signal"
                    break
                try:
                    item = await loop.run_in_executor(None, next, self.frames, None)
                except InputError as exc:  # the source cannot go on: say why, then end
                    self.counters["source_failed"] += 1
                    await self._send(outs, self.stream, ErrorMsg(str(exc), "capture"))
                    reason, status = "error", 2
                    break
                if item is None:
                    break
                stamps: dict[str, int] = {}
                if isinstance(item, tuple):
                    stream, frame, *rest = item
                    stamps = dict(rest[0]) if rest else {}
                else:
                    stream, frame = self.stream, item
                if isinstance(frame, Heartbeat):  # an idle source: look at the stop flag again
                    continue
                self.progress.took()
                try:
                    await self._forward(outs, stream, frame, stamps, started)
                finally:
                    self.progress.finished()
            if not self.named_streams:  # its one stream ends, even if nothing was read
                open_streams.add(self.stream)
            for stream in sorted(open_streams):
                await self._send(outs, stream, EndOfStream(reason))
            wait_s = min(self.settings.ack_timeout_s, max(0.0, self._give_up_at - time.monotonic()))
            await self._unacked.wait(wait_s, self.counters, self.log)
        finally:
            self._finish(context, sockets)
            self.log.info("stopped", reason=reason, **dict(self.counters))
        return status
