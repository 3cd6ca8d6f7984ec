"""The stage runtime: a stage's logic between an inbox and an outbox, on one asyncio loop.

The transport (:mod:`ser_stream.transport`) carries the messages: a PULL connected to every
upstream replica, one output per shard of the next stage, acknowledgements of ends of stream
both ways, heartbeats to the supervisor. This module adds what a stage does with them:
batches of what queued up go to the worker thread (the cores never run on the loop), the
outputs go downstream (every window entered in the supervisor's ledger first), an idle stage
sends heartbeats downstream and ends the streams that went silent, and a stop finishes what
already arrived and ends every open stream. Receives never wait forever: every poll has a
timeout. A malformed message is counted, logged with its reason and skipped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ser_stream.errors import InputError, WireError
from ser_stream.logs import get_logger
from ser_stream.mailbox import Arrival, Inbox, Outbox
from ser_stream.messages import ErrorMsg, Event, Heartbeat, Window
from ser_stream.security import CurveKeys
from ser_stream.stage import StageContext, StageSpec
from ser_stream.stage_logic import StageLogic
from ser_stream.transport import RuntimeSettings, Transport
from ser_stream.wire import Envelope, Kind, decode, is_heartbeat

__all__ = [
    "LEDGER_EVENT",
    "RECEIVED",
    "Endpoints",
    "StageRuntime",
    "ledger_entry",
    "ledger_window",
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


LEDGER_EVENT = "window_emitted"
"""The event a stage sends the supervisor for every window it emits (see :func:`ledger_entry`)."""


def ledger_entry(window: Window) -> Event:
    """The supervisor's record of one emitted window: its span is its id in the stream."""
    return Event(LEDGER_EVENT, window.t_end, {"t_start": window.t_start, "t_end": window.t_end})


def window_id(t_start: float, t_end: float) -> tuple[float, float]:
    """A window's id in its stream: its span, rounded so that JSON round trips agree."""
    return round(t_start, 4), round(t_end, 4)


def ledger_window(envelope: Envelope) -> tuple[float, float] | None:
    """The id of the window a ledger entry enters (None: the message is no ledger entry)."""
    body = envelope.body
    if isinstance(body, Event) and body.name == LEDGER_EVENT:
        return window_id(body.data.get("t_start", 0.0), body.data.get("t_end", 0.0))
    return None


RECEIVED = ".in"
"""Suffix of the timestamp a stage records when a message arrives (``features.in``)."""


class StageRuntime:
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
        self.spec = spec
        self.endpoints = endpoints
        self.settings = settings or RuntimeSettings()
        self.logic = StageLogic(spec, context, generation=generation, resume=dict(resume or {}))
        self.log = get_logger(stage=spec.name)
        self.transport = Transport(self.settings, self.logic.counters, self.log, keys, listen_fds)
        self._swept_at = time.monotonic()
        self._queued = 0  # the deepest input queue seen since the last heartbeat

    @property
    def counters(self):
        """Counts of everything received, sent, dropped and skipped."""
        return self.logic.counters

    def stop(self) -> None:
        """Ask the stage to drain and exit (safe from signal handlers)."""
        self.transport.stop()

    def _heartbeat(self) -> Envelope:
        label = f"{self.spec.name}.{self.endpoints.replica}"
        queued, self._queued = self._queued, 0
        beat = Heartbeat(
            label,
            positions=self.logic.positions(),
            streams=len(self.logic.open_streams),
            queued=queued,
            **self.transport.progress.report(),
        )
        return Envelope("-", 0, beat)

    async def run(self) -> int:
        """Serve until stopped; return the process exit status."""
        transport = self.transport
        endpoints = self.endpoints
        transport.start()
        inbox = Inbox(transport, endpoints.inputs)
        inbox.watch()
        outbox = Outbox(
            transport,
            endpoints.outputs,
            publish=endpoints.publish,
            collect=endpoints.collect,
            control=endpoints.control,
        )
        try:
            if self.spec.warm_up is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, self.spec.warm_up, self.logic.context
                )
            self.log.info(
                "ready", inputs=endpoints.inputs, upstream=inbox.upstream, outputs=endpoints.outputs
            )
            transport.beat(outbox.control, self._heartbeat)
            outbox.listen()
            await self._serve(inbox, outbox)
            await inbox.drain(lambda batch: self._process(batch, inbox, outbox))
            await self._send_all(outbox, self.logic.end_all("signal"))
            await outbox.wait_acknowledged(self.settings.ack_timeout_s)
        finally:
            transport.finish()
            self.log.info("stopped", **dict(self.counters))
        return 0

    async def _serve(self, inbox: Inbox, outbox: Outbox) -> None:
        transport = self.transport
        timeout_ms = 100  # short: a stop request is noticed at once
        last_sent = time.monotonic()
        while not transport.stopping:
            await outbox.resend_overdue()
            if not await inbox.poll(timeout_ms):
                if time.monotonic() - last_sent >= self.settings.heartbeat_s:
                    # Never wait for a heartbeat: no receiver or a full queue skips it.
                    outbox.send_now_to_all(self.logic.heartbeat(), "heartbeats_skipped")
                    last_sent = time.monotonic()
                await self._sweep(outbox)
                continue
            # The asyncio integration is edge-triggered: drain everything that is ready, in
            # batches (the model stage classifies a batch of queued windows in one call).
            size = self.settings.max_batch if self.spec.batches else 1
            while True:
                waiting = await inbox.take_waiting(max(size, self.settings.hwm))
                if not waiting:
                    break
                # Queue depth: the messages waiting to be processed, not the heartbeats an
                # idle upstream sends (an idle pipeline's stages would each report 1).
                work = sum(not is_heartbeat(frames) for frames in waiting)
                self._queued = max(self._queued, work)
                transport.progress.took(len(waiting))
                while waiting:
                    # Stamped as each batch begins: before it, a message was still queued.
                    now = time.time_ns()
                    batch = [(waiting.popleft(), now) for _ in range(min(size, len(waiting)))]
                    await self._process(batch, inbox, outbox)
                    transport.progress.finished(len(batch))
                last_sent = time.monotonic()
                await self._sweep(outbox)

    async def _sweep(self, outbox: Outbox) -> None:
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
        await self._send_all(outbox, self.logic.end_idle(self.settings.idle_s, paused_s))

    async def _process(self, batch: list[Arrival], inbox: Inbox, outbox: Outbox) -> None:
        envelopes = []
        for frames, received in batch:
            try:
                envelope = decode(frames, max_payload=self.settings.max_payload)
            except WireError as exc:
                self.counters["malformed_skipped"] += 1
                self.log.warning("malformed message skipped", reason=str(exc))
                report = ErrorMsg(f"malformed message skipped: {exc}", self.spec.name)
                cause = Envelope("-", 0, report)
                await self._send(outbox, self.logic.error(cause, report.reason))
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
        await self._send_all(outbox, outputs)
        for envelope in envelopes:
            if envelope.kind is Kind.END_OF_STREAM:
                inbox.acknowledge(envelope)

    def _log_failure(self, envelope: Envelope, exc: Exception) -> None:
        self.log.error(
            "message failed", kind=envelope.kind.value, stream=envelope.stream, reason=repr(exc)
        )

    async def _send_all(self, outbox: Outbox, outputs: list[Envelope]) -> None:
        for out in outputs:
            await self._send(outbox, out)

    async def _send(self, outbox: Outbox, envelope: Envelope) -> None:
        """Send downstream, waiting as long as the receiver needs, except when draining.

        A window is entered in the supervisor's ledger before it leaves: what a stage that
        dies later loses is then measured, not guessed.
        """
        if envelope.kind is Kind.WINDOW and outbox.control is not None:
            entry = Envelope(envelope.stream, envelope.seq, ledger_entry(envelope.body))
            if not await self.transport.send_or_give_up(outbox.control, entry):
                self.counters["ledger_entries_lost_on_shutdown"] += 1
        await outbox.send(envelope)
