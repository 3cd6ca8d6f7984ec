"""The one transport of a pipeline process: ZeroMQ sockets on an asyncio loop.

Sockets (who binds: the stable upstream side binds, the scaling downstream side connects)::

    upstream PUSH (binds IN) ──▶ PULL (connects IN)   [stage]   PUSH or PUB (binds OUT) ──▶
    upstream ack PULL (binds ack(IN)) ◀── PUSH (connects ack(IN))   PULL (binds ack(OUT)) ◀──

:class:`Transport` is what every process shares: the ZeroMQ context and its sockets
(high-water mark, bounded linger, CURVE on tcp://), signals that stop it, sends that wait
for a slow receiver but give up on a gone one once stopping, background tasks, heartbeats to
the supervisor, and the end. Its two sides are in :mod:`ser_stream.mailbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from ser_stream.errors import InputError
from ser_stream.liveness import Progress
from ser_stream.logs import get_logger
from ser_stream.messages import Heartbeat
from ser_stream.private import replace_file
from ser_stream.security import CurveKeys, secure, stop_authenticators
from ser_stream.settings import HEARTBEAT_S, HWM
from ser_stream.stage import STREAM_IDLE_S
from ser_stream.wire import MAX_PAYLOAD_BYTES, Envelope, encode

__all__ = [
    "RuntimeSettings",
    "Transport",
    "ack_endpoint",
    "bind_endpoint",
    "shard_of",
    "take_waiting",
    "write_health",
]


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
        health_file: where the process says, every heartbeat, that it lives and how its
            work goes (one JSON object, replaced at once; gone after a clean exit): what an
            orchestrator's probe reads where no supervisor listens (``ser-stream health``).
    """

    hwm: int = HWM
    heartbeat_s: float = HEARTBEAT_S
    ack_timeout_s: float = 10.0
    linger_ms: int = 1000
    max_payload: int = MAX_PAYLOAD_BYTES
    max_batch: int = 32
    idle_s: float = STREAM_IDLE_S
    health_file: str | None = None


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


async def take_waiting(sock: zmq.asyncio.Socket, most: int) -> deque[list[bytes]]:
    """The messages that have arrived on ``sock``, ``most`` at most (never waits)."""
    waiting: deque[list[bytes]] = deque()
    while len(waiting) < most:
        try:
            waiting.append(await sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return waiting


def shard_of(stream: str, shards: int) -> int:
    """The shard (replica of a stateful stage) that serves ``stream``; the same everywhere."""
    return zlib.crc32(stream.encode()) % shards if shards > 1 else 0


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


class Transport:
    """The ZeroMQ side of one process, from its start to its end.

    Start (signal handlers, a ZeroMQ context, one worker thread for blocking work), sockets,
    sends with backpressure, heartbeats to the supervisor, background tasks, stop (safe from
    a signal handler; from then on, sends give up on a neighbour that is gone after
    ``ack_timeout_s``) and the end (tasks cancelled, sockets closed with a bounded linger,
    the context ended).
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        counters: Counter,
        log: Any,
        keys: CurveKeys | None = None,
        listen_fds: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.log = log
        self.keys = keys  # CURVE on tcp:// endpoints (see ser_stream.security)
        # tcp endpoints whose listening socket the supervisor chose and handed over
        self.listen_fds = dict(listen_fds or {})
        self.progress = Progress()  # what the heartbeats report (see ser_stream.liveness)
        self._authenticators: dict = {}
        self._stopping: asyncio.Event | None = None
        self._give_up_at = float("inf")
        self._tasks: list[asyncio.Task] = []
        self._context: zmq.asyncio.Context | None = None
        self._sockets: list[zmq.asyncio.Socket] = []

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stopping is not None and self._stopping.is_set()

    def stop(self) -> None:
        """Ask the process to drain and exit (safe from signal handlers)."""
        if self._stopping is not None and not self._stopping.is_set():
            self._stopping.set()
            # Draining may wait for a slow receiver, but not forever for a gone one.
            self._give_up_at = time.monotonic() + self.settings.ack_timeout_s

    def time_left_s(self) -> float:
        """Time until sends give up (infinite until stopping)."""
        return max(0.0, self._give_up_at - time.monotonic())

    def start(self, *, signals: bool = True) -> None:
        """Signals stop the process from now on; the ZeroMQ context opens.

        ``signals=False`` leaves the signals to a program that handles its own (a source run
        without a pipeline). Blocking work (the cores, a source's reads) runs in one worker
        thread: it is done one piece at a time anyway, and the process keeps a fixed number of
        threads for hours.
        """
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if signals else ():
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="core"))
        self._context = zmq.asyncio.Context()

    def socket(
        self,
        kind: int,
        *,
        linger_ms: int | None = None,
        max_message: int | None = None,
        hwm: int | None = None,
    ) -> zmq.asyncio.Socket:
        """A socket of this process, closed at the end (``hwm``: other than the settings')."""
        assert self._context is not None, "start() first"
        sock = self._context.socket(kind)
        sock.set_hwm(self.settings.hwm if hwm is None else hwm)
        sock.setsockopt(zmq.LINGER, self.settings.linger_ms if linger_ms is None else linger_ms)
        if max_message is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._sockets.append(sock)
        return sock

    def close(self, sock: zmq.asyncio.Socket) -> None:
        """Close one socket of this process before the end (a peer that went away)."""
        self._sockets.remove(sock)
        sock.close(linger=0)

    def monitor(self, sock: zmq.asyncio.Socket, events: int) -> zmq.asyncio.Socket:
        """The socket that tells ``sock``'s ``events`` (refused handshakes), closed at the end."""
        monitor = sock.get_monitor_socket(events)
        self._sockets.append(monitor)
        return monitor

    def bind(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        """Bind (with CURVE on tcp://, and the listening socket handed over if there is one)."""
        secure(sock, endpoint, self.keys, server=True, authenticators=self._authenticators)
        handed = endpoint in self.listen_fds
        if handed:
            sock.setsockopt(zmq.USE_FD, self.listen_fds.pop(endpoint))
        bind_endpoint(sock, endpoint)
        if handed:
            sock.setsockopt(zmq.USE_FD, -1)  # the next bind of this socket allocates its own

    def connect(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        """Connect (with CURVE on tcp://)."""
        secure(sock, endpoint, self.keys, server=False)
        sock.connect(endpoint)

    async def send(self, sock: zmq.asyncio.Socket, envelope: Envelope) -> bool:
        """Send, waiting as long as the receiver needs (backpressure) until stopping gives up.

        The wait counts as held work in the heartbeats' progress; returns False when the send
        was abandoned.
        """
        self.progress.sending()
        sent = False
        try:
            sent = await self.send_or_give_up(sock, envelope)
        finally:
            self.progress.done_sending(sent)
        return sent

    async def send_or_give_up(self, sock: zmq.asyncio.Socket, envelope: Envelope) -> bool:
        """Send with backpressure; False when stopping and the receiver took nothing in time."""
        sending = asyncio.ensure_future(sock.send_multipart(encode(envelope)))
        while True:
            done, _ = await asyncio.wait({sending}, timeout=self.settings.heartbeat_s)
            if done:
                sending.result()
                return True
            if time.monotonic() > self._give_up_at:
                sending.cancel()
                return False

    def send_now(self, sock: zmq.asyncio.Socket, envelope: Envelope, skipped: str) -> None:
        """Send now or never: a message nobody takes now is counted under ``skipped``.

        An asyncio socket reports ``zmq.Again`` through the returned future, not by raising.
        """
        counters = self.counters

        def count(future) -> None:
            if not future.cancelled() and isinstance(future.exception(), zmq.Again):
                counters[skipped] += 1

        try:
            sock.send_multipart(encode(envelope), zmq.NOBLOCK).add_done_callback(count)
        except zmq.Again:
            counters[skipped] += 1

    def in_background(self, coroutine: Awaitable[None]) -> None:
        """Run ``coroutine`` beside the main loop until the end."""
        self._tasks.append(asyncio.ensure_future(coroutine))

    def beat(self, control: zmq.asyncio.Socket | None, heartbeat: Callable[[], Envelope]):
        """Say every ``heartbeat_s`` that this process lives (to a supervisor, a health file).

        It runs on the event loop whatever the process is busy with (cores work in a thread,
        sends wait on the loop), so a silence means the process stopped or hung.
        """
        health_file = self.settings.health_file
        if control is None and health_file is None:
            return

        async def beating() -> None:
            while True:
                envelope = heartbeat()
                if control is not None:
                    self.send_now(control, envelope, "control_heartbeats_skipped")
                if health_file is not None:
                    write_health(health_file, envelope.body)
                await asyncio.sleep(self.settings.heartbeat_s)

        self.in_background(beating())

    def finish(self) -> None:
        """The end: tasks cancelled, sockets closed (each one's LINGER bounds it)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        stop_authenticators(self._authenticators)
        if self._context is not None:
            self._context.term()
        if self.settings.health_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.health_file)


def write_health(path: str, beat: Heartbeat) -> None:
    """Replace the health file at ``path`` with this heartbeat's news, at once."""
    news = {
        "stage": beat.stage,
        "pid": os.getpid(),
        "at": time.time(),
        "stalled_s": round(beat.stalled_s, 3),
        "oldest_s": round(beat.oldest_s, 3),
        "streams": beat.streams,
        "queued": beat.queued,
    }
    try:
        replace_file(path, json.dumps(news))
    except OSError as exc:  # a full or read-only disk: the probe will say the process is down
        get_logger(component="health").warning(
            "health file not written", path=path, reason=str(exc)
        )
