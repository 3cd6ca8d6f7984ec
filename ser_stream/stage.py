"""What every stage shares, without sockets: its spec, per-stream cores, and accounting.

A stage module defines a :class:`StageSpec`; :class:`StageLogic` turns incoming envelopes
into outgoing ones by routing each stream to its own processor (stateful stages keep state
per stream), passing through what the stage does not handle, flushing at end of stream,
and counting everything. The process runtime wraps this with sockets and an event loop.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ser_stream.errors import InputError
from ser_stream.messages import EndOfStream, ErrorMsg, Heartbeat, Kind
from ser_stream.ordering import first_seq
from ser_stream.wire import Body, Envelope

__all__ = ["StageContext", "StageLogic", "StageSpec", "StreamProcessor", "give_back_memory"]


class StreamProcessor(Protocol):
    """The per-stream face of a core: messages in, messages out."""

    def push(self, body: Body) -> list[Body]:
        """Process one message of the stream."""
        ...

    def flush(self) -> list[Body]:
        """End of stream: return what is still held."""
        ...

    # Optional: ``close()``, called once the stream ended, frees what the processor holds
    # outside Python (a Silero network goes back to its pool).


@dataclass(frozen=True)
class StageContext:
    """What a stage's processors are built from.

    Attributes:
        name: the stage name (as registered).
        options: stage settings from the config file and command line.
        artifact: the model artifact, for stages whose parameters come from it.
        shared: resources the stage's processors share (one ONNX session for all streams).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    artifact: Any = None
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    """A stage as the runtime sees it.

    Attributes:
        name: stage name = module = CLI name = log key.
        accepts: kinds handed to the processor; other kinds pass through unchanged.
        emits: kinds the processor may produce.
        build: makes the processor of one stream.
        description: one line for ``--help``.
        warm_up: run once before the stage reports ready, so the first window does not pay
            for lazy imports and compiled kernels.
        stateless: the stage keeps nothing per stream, so its replicas can share the load of
            one stream (PUSH/PULL). Such a stage has one processor for all streams, turns each
            accepted message into exactly one message, and keeps its sequence number, so the
            collector downstream can put the stream back in order. Stateful stages are
            sharded by stream id instead: a stream always reaches the same replica.
        batches: messages that queued up are handled in one go (one hop to the worker
            thread; the model classifies them in one ``push_batch`` call): for stages of many
            small messages. Other stages take them one by one and send each result at once,
            so the next stage starts on it while this one goes on.
    """

    name: str
    accepts: frozenset[Kind]
    emits: frozenset[Kind]
    build: Callable[[StageContext], StreamProcessor]
    description: str = ""
    warm_up: Callable[[StageContext], None] | None = None
    stateless: bool = False
    batches: bool = False


_SHARED = "*"  # the one processor of a stateless stage

MAX_OPEN_STREAMS = 256
"""Streams one stage process serves at once; a message of one more gets an error record
(end a stream first, or add replicas: a stateful stage shards streams among them)."""
STREAM_IDLE_S = 60.0
"""A stream that sent nothing this long is ended and its state freed (its source is gone:
every live source sends audio, silence included)."""
ENDED_MEMORY = 10_000
"""Ended streams remembered, so that a straggler of one opens no new state."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; elsewhere there is nothing to call
    except (OSError, AttributeError):
        return None


def give_back_memory() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; else nothing).

    Memory that ended streams freed on the heap stays with the process otherwise: glibc
    returns only the top of a heap, not free pages below live data. 2,000 streams, 250 at
    a time, left the VAD ~170 MB above its baseline that only this gave back (their Silero
    networks' buffers mapped apart; with those on the heap too, 1.5 GB). Takes 1-16 ms.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class StageLogic:
    """Per-stream routing and accounting for one stage process."""

    spec: StageSpec
    context: StageContext
    clock: Callable[[], int] = time.time_ns
    generation: int = 0  # restarts of this stage before this process: numbers never repeat
    resume: dict[str, float] = field(default_factory=dict)  # where a predecessor got to
    counters: Counter = field(default_factory=Counter)
    monotonic: Callable[[], float] = time.monotonic
    _processors: dict[str, StreamProcessor] = field(default_factory=dict)
    _seq: dict[str, int] = field(default_factory=dict)
    _ended: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _heard: dict[str, float] = field(default_factory=dict)  # last message of each open stream
    _ends_kept: int = 0  # streams ended since the memory was last given back

    @property
    def open_streams(self) -> list[str]:
        """Streams seen and not yet ended (a stateless stage holds none)."""
        return [] if self.spec.stateless else list(self._processors)

    def handle(self, envelope: Envelope) -> list[Envelope]:
        """Process one incoming envelope; return what to send downstream, in order."""
        self.counters[f"in_{envelope.kind.value}"] += 1
        if envelope.kind is Kind.END_OF_STREAM:
            self._ends_kept += 1
        if self.spec.stateless:
            return self._handle_stateless(envelope)
        stream = envelope.stream
        if stream in self._ended:
            # The stage ended this stream itself (stop-on-silence): the rest is not wanted.
            self.counters[f"ignored_after_end_{envelope.kind.value}"] += 1
            return []
        if envelope.kind is Kind.END_OF_STREAM:
            outputs = self._flush(stream, envelope)
            outputs.append(self._wrap(stream, envelope.body, envelope))
            self._end(stream)
            return outputs
        if envelope.kind not in self.spec.accepts:
            if envelope.kind is Kind.HEARTBEAT:
                return []  # heartbeats are per hop, not forwarded
            return [self._wrap(stream, envelope.body, envelope)]
        if stream not in self._processors and len(self._processors) >= MAX_OPEN_STREAMS:
            self.counters["dropped_too_many_streams"] += 1
            reason = (f"{self.spec.name} serves {MAX_OPEN_STREAMS} streams already; end one "
                      "first, or add replicas of this stage")  # fmt: skip
            return [self.error(envelope, reason)]
        self._heard[stream] = self.monotonic()
        processor = self._processor(stream)
        try:
            bodies = processor.push(envelope.body)
        except InputError as exc:
            self.counters["dropped_input_error"] += 1
            return [self.error(envelope, str(exc))]
        outputs = []
        for body in bodies:
            outputs.append(self._wrap(stream, body, envelope))
            if isinstance(body, EndOfStream):
                _close(self._processors.pop(stream, None))
                self._ends_kept += 1
                self._end(stream)
                break
        return outputs

    def _end(self, stream: str) -> None:
        """Forget the stream, remembering only that it ended."""
        self._seq.pop(stream, None)
        self._heard.pop(stream, None)
        self._ended[stream] = None
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def end_idle(self, idle_s: float = STREAM_IDLE_S, paused_s: float = 0.0) -> list[Envelope]:
        """End the streams that sent nothing for ``idle_s`` and free their state.

        Each gets an error record, what it still held, then an ``error`` end of stream
        (its source is gone).

        ``paused_s``: time the stage could not receive (blocked downstream) since the last
        call; it does not count as the streams' silence.
        """
        if paused_s:
            self._heard = {stream: at + paused_s for stream, at in self._heard.items()}
        now = self.monotonic()
        outputs: list[Envelope] = []
        for stream in [s for s, at in self._heard.items() if now - at > idle_s]:
            self.counters["streams_ended_idle"] += 1
            cause = Envelope(stream, 0, EndOfStream("error"))
            reason = f"stream {stream} sent nothing for {idle_s:.0f} s; its state was freed"
            outputs.append(self.error(cause, reason))
            outputs.extend(self.handle(cause))
        if self._ends_kept:
            # Streams ended since the last call: what they held goes back to the system.
            self._ends_kept = 0
            give_back_memory()
            self.counters["memory_given_back"] += 1
        return outputs

    def _handle_stateless(self, envelope: Envelope) -> list[Envelope]:
        """One message in, one out, same sequence number; no stream is opened or ended."""
        if envelope.kind is Kind.HEARTBEAT:
            return []
        if envelope.kind not in self.spec.accepts:
            return [self._wrap(envelope.stream, envelope.body, envelope)]
        try:
            bodies = self._processor(envelope.stream).push(envelope.body)
        except InputError as exc:
            self.counters["dropped_input_error"] += 1
            return [self.error(envelope, str(exc))]
        if len(bodies) != 1:
            raise RuntimeError(f"stateless stage {self.spec.name} gave {len(bodies)} messages")
        return [self._wrap(envelope.stream, bodies[0], envelope)]

    def handle_many(
        self,
        envelopes: list[Envelope],
        on_failure: Callable[[Envelope, Exception], None] | None = None,
    ) -> list[Envelope]:
        """Process envelopes that queued up; runs go to ``push_batch`` where it is offered.

        Gives the same outputs as :meth:`handle` on each in turn (the model stage classifies
        a run of windows in one call: of one stream, or of any streams when the stage is
        stateless). A message whose processing fails gives an error record instead of
        outputs (``on_failure`` hears of it); the others go through, each processed once.
        """
        outputs: list[Envelope] = []
        i = 0
        while i < len(envelopes):
            first = envelopes[i]
            j = i + 1
            while j < len(envelopes) and self._same_run(first, envelopes[j]):
                j += 1
            run = envelopes[i:j]
            batched = (
                len(run) > 1
                and first.kind in self.spec.accepts
                and first.stream not in self._ended
                and (self.spec.stateless or first.stream in self._processors)
                and hasattr(self._processor(first.stream), "push_batch")
            )
            results = None
            if batched:
                try:
                    results = self._processor(first.stream).push_batch([e.body for e in run])
                except Exception:  # a stateless batch: find the failing one on its own
                    results = None
            if results is not None:
                self.counters[f"in_{first.kind.value}"] += len(run)
                if not self.spec.stateless:
                    self._heard[first.stream] = self.monotonic()
                for cause, bodies in zip(run, results, strict=True):
                    outputs.extend(self._wrap(cause.stream, body, cause) for body in bodies)
            else:
                for envelope in run:
                    outputs.extend(self._guarded(envelope, on_failure))
            i = j
        return outputs

    def _same_run(self, first: Envelope, other: Envelope) -> bool:
        if self.spec.stateless:  # one processor serves every stream
            return other.kind is first.kind
        return (other.stream, other.kind) == (first.stream, first.kind)

    def _guarded(
        self, envelope: Envelope, on_failure: Callable[[Envelope, Exception], None] | None
    ) -> list[Envelope]:
        try:
            return self.handle(envelope)
        except Exception as exc:  # a failing message must not take the stage down
            self.counters[f"failed_{envelope.kind.value}"] += 1
            if on_failure is not None:
                on_failure(envelope, exc)
            return [self.error(envelope, f"{type(exc).__name__}: {exc}")]

    def end_all(self, reason: str) -> list[Envelope]:
        """Flush and end every open stream (shutdown): nothing held is lost silently."""
        outputs: list[Envelope] = []
        for stream in self.open_streams:
            marker = Envelope(stream, 0, EndOfStream(reason))
            outputs.extend(self.handle(marker))
        return outputs

    def error(self, cause: Envelope, reason: str) -> Envelope:
        """An error record about ``cause``, for downstream and the sinks."""
        return self._wrap(cause.stream, ErrorMsg(reason, self.spec.name), cause)

    def heartbeat(self) -> Envelope:
        """A heartbeat of this stage."""
        return Envelope("-", 0, Heartbeat(self.spec.name), {self.spec.name: self.clock()})

    def _flush(self, stream: str, cause: Envelope) -> list[Envelope]:
        processor = self._processors.pop(stream, None)
        if processor is None:
            return []
        try:
            return [self._wrap(stream, body, cause) for body in processor.flush()]
        finally:
            _close(processor)

    def _processor(self, stream: str) -> StreamProcessor:
        if self.spec.stateless:
            stream = _SHARED
        processor = self._processors.get(stream)
        if processor is None:
            processor = self.spec.build(self.context)
            if stream in self.resume and hasattr(processor, "resume"):
                # This process replaces one that died: the stream went on from there.
                processor.resume(self.resume.pop(stream))
            self._processors[stream] = processor
            self.counters["streams_opened"] += 1
        return processor

    def positions(self) -> dict[str, float]:
        """Stream time each open stream has reached, where its processor tells (the VAD)."""
        return {
            stream: float(processor.position_s)
            for stream, processor in list(self._processors.items())
            if getattr(processor, "position_s", None) is not None
        }

    def _wrap(self, stream: str, body: Body, cause: Envelope) -> Envelope:
        if self.spec.stateless:
            seq = cause.seq  # the collector restores the order replicas may have mixed
        else:
            seq = self._seq.get(stream, first_seq(self.generation))
            self._seq[stream] = seq + 1
        timestamps = dict(cause.timestamps)
        timestamps[self.spec.name] = self.clock()
        out = Envelope(stream, seq, body, timestamps)
        self.counters[f"out_{out.kind.value}"] += 1
        return out


def _close(processor: StreamProcessor | None) -> None:
    """Let an ended stream's processor free what it holds (when it has a ``close``)."""
    close = getattr(processor, "close", None)
    if close is not None:
        close()


def run_stage(spec: StageSpec, context: StageContext, inputs: Iterable[Envelope]) -> list[Envelope]:
    """Run a stage's logic in-process over ``inputs`` (tests, batch use)."""
    logic = StageLogic(spec, context)
    outputs: list[Envelope] = []
    for envelope in inputs:
        outputs.extend(logic.handle(envelope))
    return outputs
