"""Per-stream order after replicas: hold what came early, release in sequence order.

Replicas of a stateless stage share a stream's messages and may finish them out of order;
they keep each message's sequence number, so whoever collects their outputs can put every
stream back in order. A message that never comes (its replica died) holds the stream only
for ``timeout_s``; then the stream moves on and the skipped numbers are counted as a gap. The
timeout is long (10 s): a replica that is merely busy must not be taken for a dead one.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["GENERATION_SHIFT", "Reorderer", "first_seq"]

T = TypeVar("T")


GENERATION_SHIFT = 32
"""A process numbers its messages from ``generation << GENERATION_SHIFT``, its generation
being how many times its stage was restarted: numbers never repeat across a restart."""


def first_seq(generation: int) -> int:
    """The first sequence number of a process of this generation."""
    return generation << GENERATION_SHIFT


@dataclass
class _Stream(Generic[T]):
    expected: int = 0
    held: dict[int, tuple[T, float]] = field(default_factory=dict)


class Reorderer(Generic[T]):
    """Releases each stream's items in sequence order, waiting at most ``timeout_s`` for one.

    Attributes:
        counters: ``reordered`` (items that waited for an earlier one), ``gap`` (sequence
            numbers given up on), ``late`` (items that came after their number was skipped;
            released at once), ``renumbered`` (the upstream restarted its numbering at 0),
            ``after_end`` (items of a stream that had already ended; released at once).
    """

    ENDED_MEMORY = 10_000  # streams remembered as ended, so a straggler opens no new state

    def __init__(self, timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self.clock = clock
        self.counters: Counter = Counter()
        self._streams: dict[str, _Stream[T]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    @property
    def held(self) -> int:
        """Items waiting for an earlier one, over all streams."""
        return sum(len(state.held) for state in self._streams.values())

    def push(self, stream: str, seq: int, item: T) -> list[T]:
        """Take one item; return the items now due, in order."""
        if stream in self._ended:
            self.counters["after_end"] += 1
            return [item]
        state = self._streams.setdefault(stream, _Stream())
        released: list[T] = []
        if seq >> GENERATION_SHIFT > state.expected >> GENERATION_SHIFT:
            # The upstream restarted (or this stream began after it did): a new numbering.
            if state.expected or state.held:
                self.counters["renumbered"] += 1
            released = [state.held[n][0] for n in sorted(state.held)]
            state.held.clear()
            state.expected = first_seq(seq >> GENERATION_SHIFT)
        if seq < state.expected or seq in state.held:
            self.counters["late"] += 1
            return [*released, item]
        if seq > state.expected:
            self.counters["reordered"] += 1
        state.held[seq] = (item, self.clock())
        return [*released, *self._release(state)]

    def expire(self) -> list[T]:
        """Give up waiting where an item is overdue; return what that releases."""
        released: list[T] = []
        now = self.clock()
        for state in self._streams.values():
            if state.held and now - min(t for _, t in state.held.values()) > self.timeout_s:
                first = min(state.held)
                self.counters["gap"] += first - state.expected
                state.expected = first
                released.extend(self._release(state))
        return released

    def forget(self, stream: str) -> list[T]:
        """The stream ended: release whatever it still holds, in order, and drop its state."""
        self._ended[stream] = None
        while len(self._ended) > self.ENDED_MEMORY:
            self._ended.popitem(last=False)
        state = self._streams.pop(stream, None)
        if state is None:
            return []
        return [state.held[seq][0] for seq in sorted(state.held)]

    def flush_all(self) -> list[T]:
        """Release everything held, stream by stream, in order (shutdown)."""
        return [item for stream in list(self._streams) for item in self.forget(stream)]

    @staticmethod
    def _release(state: _Stream[T]) -> list[T]:
        released = []
        while state.expected in state.held:
            released.append(state.held.pop(state.expected)[0])
            state.expected += 1
        return released
