"""Per-stream routing and accounting of one stage, without sockets.

:class:`StageLogic` turns incoming envelopes into outgoing ones by routing each stream to
its own processor (stateful stages keep state per stream), passing through what the stage
does not handle, flushing at end of stream, and counting everything. The process runtime
(:mod:`ser_stream.runtime`) wraps it with sockets and an event loop; :func:`run_stage` runs
it in-process.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from ser_stream.errors import InputError
from ser_stream.messages import EndOfStream, ErrorMsg, Heartbeat, Kind
from ser_stream.stage import (
    ENDED_MEMORY,
    MAX_OPEN_STREAMS,
    STREAM_IDLE_S,
    BatchProcessor,
    ResumableProcessor,
    SequenceNumbers,
    StageContext,
    StageSpec,
    StreamProcessor,
    give_back_memory,
)
from ser_stream.wire import Body, Envelope

__all__ = ["StageLogic", "run_stage"]

_SHARED = "*"  # the one processor of a stateless stage


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
    _seq: SequenceNumbers = field(init=False)
    _ended: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _heard: dict[str, float] = field(default_factory=dict)  # last message of each open stream
    _ends_kept: int = 0  # streams ended since the memory was last given back
    _checked: bool = False  # the first processor was checked against the capabilities

    def __post_init__(self) -> None:
        self._seq = SequenceNumbers(self.generation)

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
        self._seq.forget(stream)
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
        """Process envelopes that queued up; runs go to ``push_batch`` (``batch_calls``).

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
                and self.spec.batch_calls
                and (self.spec.stateless or first.stream in self._processors)
            )
            results = None
            if batched:
                processor = cast(BatchProcessor, self._processor(first.stream))
                try:
                    results = processor.push_batch([e.body for e in run])
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
            if not self._checked:
                self.spec.check(processor)
                self._checked = True
            if stream in self.resume and self.spec.resumable:
                # This process replaces one that died: the stream went on from there.
                cast(ResumableProcessor, processor).resume(self.resume.pop(stream))
            self._processors[stream] = processor
            self.counters["streams_opened"] += 1
        return processor

    def positions(self) -> dict[str, float]:
        """Stream time each open stream has reached (a ``resumable`` stage: the VAD)."""
        if not self.spec.resumable:
            return {}
        reached = {
            stream: cast(ResumableProcessor, processor).position_s
            for stream, processor in list(self._processors.items())
        }
        return {stream: float(at) for stream, at in reached.items() if at is not None}

    def _wrap(self, stream: str, body: Body, cause: Envelope) -> Envelope:
        if self.spec.stateless:
            seq = cause.seq  # the collector restores the order replicas may have mixed
        else:
            seq = self._seq.take(stream)
        timestamps = dict(cause.timestamps)
        timestamps[self.spec.name] = self.clock()
        out = Envelope(stream, seq, body, timestamps)
        self.counters[f"out_{out.kind.value}"] += 1
        return out


def _close(processor: StreamProcessor | None) -> None:
    """Let an ended stream's processor free what it holds."""
    if processor is not None:
        processor.close()


def run_stage(spec: StageSpec, context: StageContext, inputs: Iterable[Envelope]) -> list[Envelope]:
    """Run a stage's logic in-process over ``inputs`` (tests, batch use)."""
    logic = StageLogic(spec, context)
    outputs: list[Envelope] = []
    for envelope in inputs:
        outputs.extend(logic.handle(envelope))
    return outputs
