"""What a stage is, without sockets: its spec and capabilities, and its processors' faces.

A stage module defines a :class:`StageSpec`: what the stage accepts and emits, how it builds
the processor of a stream (a core behind :class:`~ser_stream.adapter.CoreStream`), and
what it can do (stateless, batches, resumable), each capability with the processor
protocol it needs. :class:`~ser_stream.stage_logic.StageLogic` runs a spec's processors
over envelopes; the process runtime wraps that with sockets and an event loop.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ser_stream.messages import Kind
from ser_stream.ordering import first_seq
from ser_stream.wire import Body

__all__ = [
    "ENDED_MEMORY",
    "MAX_OPEN_STREAMS",
    "STREAM_IDLE_S",
    "BatchProcessor",
    "ResumableProcessor",
    "StageContext",
    "StageSpec",
    "StreamProcessor",
    "SequenceNumbers",
    "give_back_memory",
]


@runtime_checkable
class StreamProcessor(Protocol):
    """The per-stream face of a core: messages in, messages out (see :mod:`ser_stream.adapter`)."""

    def push(self, body: Body) -> list[Body]:
        """Process one message of the stream."""
        ...

    def flush(self) -> list[Body]:
        """End of stream: return what is still held."""
        ...

    def close(self) -> None:
        """The stream ended: free what it holds outside Python (a Silero network)."""
        ...


@runtime_checkable
class BatchProcessor(StreamProcessor, Protocol):
    """What a stage with ``batch_calls`` builds: a run of messages answered in one call."""

    def push_batch(self, bodies: list[Body]) -> list[list[Body]]:
        """Process queued messages in one go; one list of outputs per input, in order."""
        ...


@runtime_checkable
class ResumableProcessor(StreamProcessor, Protocol):
    """What a ``resumable`` stage builds: it tells where its stream got to.

    A replacement goes on from where the predecessor that died got to.
    """

    @property
    def position_s(self) -> float | None:
        """Stream time reached so far (None before any input)."""
        ...

    def resume(self, position_s: float) -> None:
        """Go on from ``position_s``: what never comes after it is a gap, not the start."""
        ...


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
            thread): for stages of many small messages. Other stages take them one by one
            and send each result at once, so the next stage starts on it while this one
            goes on.
        batch_calls: a run of queued messages goes to the processor in one ``push_batch``
            call (the model classifies a batch at once); needs ``batches`` and a
            :class:`BatchProcessor`.
        resumable: the processor places its input on the stream's timeline, so it tells
            where each stream got to (the supervisor hears it in heartbeats) and a
            replacement goes on from there; needs a :class:`ResumableProcessor`.

    The capabilities are checked against what ``build`` makes when a
    :class:`~ser_stream.stage_logic.StageLogic` builds its first processor, never per message.
    """

    name: str
    accepts: frozenset[Kind]
    emits: frozenset[Kind]
    build: Callable[[StageContext], StreamProcessor]
    description: str = ""
    warm_up: Callable[[StageContext], None] | None = None
    stateless: bool = False
    batches: bool = False
    batch_calls: bool = False
    resumable: bool = False

    def __post_init__(self) -> None:
        if self.batch_calls and not self.batches:
            raise ValueError(f"stage {self.name}: batch_calls needs batches")
        if self.stateless and self.resumable:
            raise ValueError(f"stage {self.name}: a stateless stage has no stream to resume")

    def protocols(self) -> tuple[type, ...]:
        """The processor protocols this stage's capabilities need."""
        needed: list[type] = [StreamProcessor]
        if self.batch_calls:
            needed.append(BatchProcessor)
        if self.resumable:
            needed.append(ResumableProcessor)
        return tuple(needed)

    def check(self, processor: StreamProcessor) -> None:
        """Raise TypeError when ``processor`` lacks a method the capabilities need."""
        for protocol in self.protocols():
            if not isinstance(processor, protocol):
                raise TypeError(
                    f"stage {self.name} builds a {type(processor).__name__}, which is no "
                    f"{protocol.__name__} as its capabilities need"
                )


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


class SequenceNumbers:
    """The next sequence number of each open stream a process sends (stage or source).

    A process of a later generation (a restart) starts its numbers where no predecessor's
    can reach (see :func:`~ser_stream.ordering.first_seq`), so numbers never repeat.
    """

    def __init__(self, generation: int = 0) -> None:
        self._first = first_seq(generation)
        self._next: dict[str, int] = {}

    def take(self, stream: str) -> int:
        """The number of the stream's next message."""
        seq = self._next.get(stream, self._first)
        self._next[stream] = seq + 1
        return seq

    def forget(self, stream: str) -> None:
        """The stream ended: its numbers are not kept."""
        self._next.pop(stream, None)

    def __len__(self) -> int:
        return len(self._next)
