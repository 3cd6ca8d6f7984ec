"""The accounting of a session: what happened to each stream, and whether the ledger balances.

The VAD enters each window it sends on in the ledger (through the supervisor's control
socket); the collector records each prediction, error and end. A stream's summary says how
many windows were emitted, predicted and dropped (and why), and whether those add up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ser_stream.messages import Heartbeat, Prediction
from ser_stream.runtime import window_id

__all__ = ["Run", "Session", "lasting_predictions"]


@dataclass
class Session:
    """What happened to one stream: the facts behind its summary.

    Attributes:
        windows: the count in the VAD's ``windows`` event (its own count, since its start).
        emitted: the ledger: the id of every window the VAD entered before sending it on
            (None where no supervisor keeps one: a collector on its own).
        failed: error records of the stages after the VAD (a window they could not process).
    """

    reason: str = "signal"
    windows: int | None = None
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    audio_dropped_s: float = 0.0
    ended: bool = False
    emitted: set[tuple[float, float]] | None = None
    failed: int = 0
    tally: _Tally | None = None  # set when the stream ended: its records are let go

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The stream's summary: windows, dropped (and why), mean distribution.

        The mean leaves out early windows that a longer window of the same start superseded
        (a live utterance is judged on 0.8 s, then 1.6 s, then 3 s of it): they are there to
        answer fast, and are less accurate than the window that replaces them.
        """
        return self.counted().summary(labels, self.restarts, self.duration_s)

    def counted(self) -> _Tally:
        """What the summary is made of (kept alone once the stream ended)."""
        return self.tally or _Tally.of(self, self.restarts)

    def close(self) -> None:
        """The stream ended: keep its tally, let go of its predictions and ledger.

        A session of thousands of streams then holds numbers, not records.
        """
        self.tally = _Tally.of(self, self.restarts)
        self.predictions = []
        self.emitted = set() if self.emitted is not None else None


@dataclass
class Run:
    """One ``up``: every stream's session, the restarts, and what the processes used.

    Attributes:
        reason: why it ended: the stream's reason for one stream; for several, their common
            reason, else ``error`` if one failed, else ``eof``; ``signal`` on Ctrl-C.
        streams: the session of each stream, by stream id, in the order they appeared.
        ordering: the collector's reordering counts (``reordered``, ``gap``, ``late``).
        peak_rss_mb: peak resident memory of each process (Linux), ``supervisor`` included.
        pss_mb: proportional memory of each process at the end (shared pages split).
        cpu_s: CPU time of each process, taken at the end like the memory.
        heartbeats: the latest heartbeat of each running process by its label (``vad``,
            ``model.1``, ``capture.0``), with when it came (``time.monotonic()``); live
            while the session runs, for whoever watches it (``ser-stream serve``'s metrics).
    """

    reason: str = "signal"
    streams: dict[str, Session] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    ordering: Counter = field(default_factory=Counter)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    pss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    heartbeats: dict[str, tuple[Heartbeat, float]] = field(default_factory=dict)

    def session(self, stream: str) -> Session:
        """The session of ``stream``, opened on its first record."""
        if stream not in self.streams:
            self.streams[stream] = Session(restarts=self.restarts)
        return self.streams[stream]

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The ``session_end`` summary over every stream (``streams`` says how many)."""
        total = sum((session.counted() for session in self.streams.values()), _Tally())
        summary = total.summary(labels, self.restarts, self.duration_s)
        summary["errors"] += len(self.errors)
        summary["streams"] = len(self.streams)
        summary["sequence_gaps"] = self.ordering.get("gap", 0)
        return summary

    def end_reason(self, signalled: bool) -> str:
        """Why the run ended (see the class)."""
        reasons = {session.reason for session in self.streams.values()}
        if signalled or not reasons:
            return "signal"
        if len(reasons) == 1:
            return reasons.pop()
        return "error" if "error" in reasons else "eof"


@dataclass
class _Tally:
    """The numbers behind a summary, of one stream or added over many.

    Windows emitted, predicted and dropped come from the ledger where one was kept; its
    verdict is ``balanced`` when every prediction is of a window the VAD entered, none came
    twice, and emitted = predicted + dropped; else ``unbalanced`` (with the reasons), which
    the supervisor logs as an error. Without a ledger the VAD's ``windows`` count stands for
    emitted (``unverified``).
    """

    emitted: int = 0
    predicted: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    probability_sum: np.ndarray | None = None  # over the lasting predictions
    lasting: int = 0
    errors: int = 0
    audio_dropped_s: float = 0.0
    confident: int = 0  # windows predicted confidently (by the model's threshold)
    uncertain: int = 0  # windows predicted below it; neither when the model has none

    @classmethod
    def of(cls, session: Session, restarts: Counter) -> _Tally:
        tally = cls(errors=len(session.errors), audio_dropped_s=session.audio_dropped_s)
        spans = [window_id(p.t_start, p.t_end) for p in session.predictions]
        if session.emitted is None:  # no ledger: the VAD's own count
            tally.emitted = session.windows if session.windows is not None else len(spans)
            tally.predicted = len(spans)
            tally.problems["unverified"] += 1
        else:
            tally.emitted = len(session.emitted)
            tally.predicted = len(set(spans) & session.emitted)
            tally.problems["predicted_twice"] += len(spans) - len(set(spans))
            tally.problems["never_emitted"] += len(set(spans) - session.emitted)
            if session.windows is not None and session.windows > tally.emitted:
                tally.problems["vad_counted_more"] += session.windows - tally.emitted
        tally.dropped = max(0, tally.emitted - tally.predicted)
        failed = min(tally.dropped, session.failed)
        tally.reasons["failed"] += failed
        tally.reasons["lost_in_stage_failure" if restarts else "lost"] += tally.dropped - failed
        tally.reasons, tally.problems = +tally.reasons, +tally.problems
        flags = _confidence_by_window(session.predictions)
        tally.confident = sum(flag is True for flag in flags)
        tally.uncertain = sum(flag is False for flag in flags)
        lasting = lasting_predictions(session.predictions)
        if lasting:
            tally.probability_sum = np.sum([p.probabilities for p in lasting], axis=0)
            tally.lasting = len(lasting)
        return tally

    def __add__(self, other: _Tally) -> _Tally:
        sums = [s for s in (self.probability_sum, other.probability_sum) if s is not None]
        return _Tally(
            self.emitted + other.emitted,
            self.predicted + other.predicted,
            self.dropped + other.dropped,
            self.reasons + other.reasons,
            self.problems + other.problems,
            np.sum(sums, axis=0) if sums else None,
            self.lasting + other.lasting,
            self.errors + other.errors,
            self.audio_dropped_s + other.audio_dropped_s,
            self.confident + other.confident,
            self.uncertain + other.uncertain,
        )

    def verdict(self) -> str:
        problems = Counter(self.problems)
        if set(problems) == {"unverified"}:
            return "unverified"
        problems.pop("unverified", None)
        if problems or self.predicted + sum(self.reasons.values()) != self.emitted:
            return "unbalanced: " + ", ".join(f"{k} {v}" for k, v in problems.items())
        return "balanced"

    def summary(self, labels: tuple[str, ...], restarts: Counter, duration_s: float) -> dict:
        if self.probability_sum is not None:
            mean = self.probability_sum / self.lasting
        else:
            mean = np.zeros(len(labels))
        return {
            "dominant": labels[int(np.argmax(mean))] if self.predicted or self.lasting else None,
            "windows": self.emitted,
            "predicted": self.predicted,
            "dropped": self.dropped,
            "dropped_reasons": dict(self.reasons),
            "ledger": self.verdict(),
            "errors": self.errors,
            "restarts": dict(restarts),
            "mean_probabilities": {
                k: round(float(v), 6) for k, v in zip(labels, mean, strict=True)
            },
            "duration_s": round(duration_s, 3),
            "audio_dropped_s": round(self.audio_dropped_s, 3),
            "confident": self.confident,
            "uncertain": self.uncertain,
        }


def _confidence_by_window(predictions: list[Prediction]) -> list[bool | None]:
    """The ``confident`` flag of each window predicted (a window predicted twice counts once)."""
    flags: dict[tuple[float, float], bool | None] = {}
    for p in predictions:
        flags.setdefault(window_id(p.t_start, p.t_end), p.confident)
    return list(flags.values())


def lasting_predictions(predictions: list[Prediction]) -> list[Prediction]:
    """The predictions no later, longer window of the same start replaced, in order."""
    longest: dict[float, float] = {}
    for p in predictions:
        longest[p.t_start] = max(longest.get(p.t_start, p.t_end), p.t_end)
    kept, seen = [], set()
    for p in predictions:
        if p.t_end == longest[p.t_start] and p.t_start not in seen:
            kept.append(p)
            seen.add(p.t_start)
    return kept
