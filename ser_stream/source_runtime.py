"""The source runtime: a stage without an inbox, sending what a source yields.

It shares the stage's transport (:mod:`ser_stream.transport`): outputs sharded by stream,
ends of stream resent until acknowledged, heartbeats to the supervisor. A source lives on the
process's one loop: it is given the transport, and opens any socket it reads through it (the
producers' source); a plain iterator (a file, stdin, a microphone) is read in the worker
thread (:func:`read_in_thread`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from ser_stream.errors import InputError
from ser_stream.logs import get_logger
from ser_stream.mailbox import Outbox
from ser_stream.messages import Audio, EndOfStream, ErrorMsg, Event, Heartbeat
from ser_stream.security import CurveKeys
from ser_stream.stage import SequenceNumbers
from ser_stream.transport import RuntimeSettings, Transport
from ser_stream.wire import Body, Envelope

__all__ = ["Source", "SourceItem", "SourceRuntime", "read_in_thread"]

SourceItem = Audio | Event | ErrorMsg | Heartbeat | tuple
"""What a source yields: a body of its own stream, or ``(stream, body)`` for one of many,
or ``(stream, body, timestamps)`` with a producer's own timestamps to keep."""

Source = Callable[[Transport], AsyncIterator[SourceItem]]
"""A source: given the process's transport, the items it yields on the process's loop."""


def read_in_thread(frames: Iterator[SourceItem]) -> Source:
    """A source of a blocking iterator: each item read in the worker thread, off the loop."""

    async def items(transport: Transport) -> AsyncIterator[SourceItem]:
        loop = asyncio.get_running_loop()
        while (item := await loop.run_in_executor(None, next, frames, None)) is not None:
            yield item

    return items


class SourceRuntime:
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
        source: Source,
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
        self.settings = settings or RuntimeSettings()
        self.generation = generation
        self.stream = stream
        self.control = control
        self.replica = replica
        self.named_streams = named_streams
        self.source = source
        self.outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        self.realtime = realtime
        self.counters: Counter = Counter()
        self.log = get_logger(stage="capture", stream=stream)
        self.transport = Transport(self.settings, self.counters, self.log, keys, listen_fds)
        self._seq = SequenceNumbers(generation)
        self._position_s = 0.0  # stream time sent so far (a one-stream source)
        self._open_streams: set[str] = set()
        self._first_t: float | None = None  # stream time of the first frame (pacing)

    def stop(self) -> None:
        """Ask the source to end its streams and exit (safe from signal handlers)."""
        self.transport.stop()

    def _heartbeat(self) -> Envelope:
        beat = Heartbeat(
            f"capture.{self.replica}",
            self._position_s,
            streams=len(self._open_streams),
            **self.transport.progress.report(),
        )
        return Envelope("-", 0, beat)

    async def _send(
        self, outbox: Outbox, stream: str, body: Body, stamps: dict[str, int] | None = None
    ) -> None:
        """Wait for the next stage as long as it needs, unless stopping and it is gone."""
        timestamps = {**(stamps or {}), "capture": time.time_ns()}
        await outbox.send(Envelope(stream, self._seq.take(stream), body, timestamps))

    async def _forward(
        self, outbox: Outbox, stream: str, frame: SourceItem, stamps: dict[str, int], started: float
    ) -> None:
        """Send one item of the source on.

        Audio (paced at real time if asked), a report, or the end of one producer's stream.
        """
        if isinstance(frame, EndOfStream):  # one producer's stream is over
            self._open_streams.discard(stream)
            await self._send(outbox, stream, frame)
            self._seq.forget(stream)
            return
        if stream != "-":  # "-": a report about no stream (a malformed message)
            self._open_streams.add(stream)
        if isinstance(frame, ErrorMsg | Event):  # skipped input, lost audio: say so
            self.counters[f"source_{type(frame).__name__.lower()}s"] += 1
            await self._send(outbox, stream, frame)
            return
        t_end = frame.t_start + frame.samples.size / frame.sample_rate
        if self.realtime:
            # A frame is "captured" when its last sample would have been heard (from the
            # first frame: a resumed file starts later in its stream).
            if self._first_t is None:
                self._first_t = frame.t_start
            await asyncio.sleep(max(0.0, started + t_end - self._first_t - time.monotonic()))
        await self._send(outbox, stream, frame, stamps)
        if stream == self.stream:
            self._position_s = t_end
        self.counters["out_audio"] += 1

    async def run(self) -> int:
        """Send every frame, then the end of each stream; return the exit status."""
        transport = self.transport
        transport.start()
        reason = "eof"
        status = 0
        try:
            outbox = Outbox(transport, self.outputs, control=self.control)
            self.log.info("ready", outputs=self.outputs, realtime=self.realtime)
            outbox.listen()
            transport.beat(outbox.control, self._heartbeat)
            reason, status = await self._send_frames(outbox)
            if not self.named_streams:  # its one stream ends, even if nothing was read
                self._open_streams.add(self.stream)
            for stream in sorted(self._open_streams):
                await self._send(outbox, stream, EndOfStream(reason))
            wait_s = min(self.settings.ack_timeout_s, transport.time_left_s())
            await outbox.wait_acknowledged(wait_s)
        finally:
            transport.finish()
            self.log.info("stopped", reason=reason, **dict(self.counters))
        return status

    async def _send_frames(self, outbox: Outbox) -> tuple[str, int]:
        """Send what the source yields until it ends, fails or a stop; why it ended."""
        started = time.monotonic()
        items = self.source(self.transport)
        try:
            while True:
                await outbox.resend_overdue()
                if self.transport.stopping:
                    return "signal", 0
                try:
                    item = await anext(items, None)
                except InputError as exc:  # the source cannot go on: say why, then end
                    self.counters["source_failed"] += 1
                    await self._send(outbox, self.stream, ErrorMsg(str(exc), "capture"))
                    return "error", 2
                if item is None:
                    return "eof", 0
                await self._item(outbox, item, started)
        finally:
            await items.aclose()  # a socket it reads closes now, not at the process's end

    async def _item(self, outbox: Outbox, item: SourceItem, started: float) -> None:
        """Send one item of the source on, unless it says the source is idle."""
        stamps: dict[str, int] = {}
        if isinstance(item, tuple):
            stream, frame, *rest = item
            stamps = dict(rest[0]) if rest else {}
        else:
            stream, frame = self.stream, item
        if isinstance(frame, Heartbeat):  # an idle source: look at the stop flag again
            return
        self.transport.progress.took()
        try:
            await self._forward(outbox, stream, frame, stamps, started)
        finally:
            self.transport.progress.finished()
