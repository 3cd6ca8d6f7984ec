"""Liveness that means progress: what a process has done, and when it is stuck.

A heartbeat that merely arrives proves that a thread runs, not that the process works: a
process whose send can never complete, or whose core never returns, still heartbeats. So
every process counts what it has done (messages taken in, messages sent on) and how long it
has held work without doing any of it (:class:`Progress`), and says so in each heartbeat.
The supervisor replaces a process that has held work for :data:`STALLED_AFTER_S` without any
progress (:func:`stuck`), unless a process further down the chain is down or stuck too: then
its sends cannot complete until that one is back, and replacing it would lose what it holds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["STALLED_AFTER_S", "Progress", "stuck"]

STALLED_AFTER_S = 6.0
"""Seconds a process may hold work without finishing or sending anything before the
supervisor replaces it. Every stage finishes a message in milliseconds and a full queue
downstream drains within a second or two, so this is far beyond any healthy wait (a model
stopped 90% of the time still moves every second), and short enough that the streams behind
a stuck process lose seconds, not minutes."""


class Progress:
    """What one process has done, for the heartbeat.

    ``took(n)`` when messages are taken in, ``finished(n)`` when the oldest ``n`` held are
    done with (processed and their results sent); ``sending()`` before every send and
    ``done_sending(sent)`` after it. A send in progress is work held, also outside any
    message (a sweep's ends of stream, a resend): none can wait unseen.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.received = 0
        self.sent_count = 0
        self._clock = clock
        self._held: deque[float] = deque()  # when each held message was taken in
        self._sending = 0  # sends in progress
        self._moved_at = clock()

    def took(self, count: int = 1) -> None:
        """``count`` messages were taken in."""
        now = self._clock()
        self.received += count
        self._held.extend([now] * count)
        if len(self._held) == count and not self._sending:  # it was idle: the wait starts now
            self._moved_at = now

    def finished(self, count: int = 1) -> None:
        """The oldest ``count`` messages held are done with."""
        for _ in range(min(count, len(self._held))):
            self._held.popleft()
        self._moved_at = self._clock()

    def sending(self) -> None:
        """A send begins."""
        if not self._held and not self._sending:  # it was idle: the wait starts now
            self._moved_at = self._clock()
        self._sending += 1

    def done_sending(self, sent: bool) -> None:
        """The send ended: the message left (``sent``), or it was given up at shutdown."""
        self._sending = max(0, self._sending - 1)
        if sent:
            self.sent_count += 1
            self._moved_at = self._clock()

    @property
    def holding(self) -> int:
        """Messages taken in and not finished with, and sends in progress."""
        return len(self._held) + self._sending

    def oldest_s(self) -> float:
        """Age of the oldest message held (0 when none)."""
        return round(self._clock() - self._held[0], 3) if self._held else 0.0

    def stalled_s(self) -> float:
        """How long work has been held with no progress (0 when none is held)."""
        return round(self._clock() - self._moved_at, 3) if self.holding else 0.0

    def report(self) -> dict[str, float | int]:
        """The heartbeat fields: ``received``, ``sent``, ``oldest_s``, ``stalled_s``."""
        return {
            "received": self.received,
            "sent": self.sent_count,
            "oldest_s": self.oldest_s(),
            "stalled_s": self.stalled_s(),
        }


def stuck(stalled_s: float, downstream_blocked: bool, bound_s: float = STALLED_AFTER_S) -> bool:
    """Whether a process that reports ``stalled_s`` is to be replaced.

    ``downstream_blocked``: a process after it in the chain is down, starting, or stalled
    itself (the process waits on it; that one is replaced first).
    """
    return stalled_s > bound_s and not downstream_blocked
