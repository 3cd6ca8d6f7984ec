"""The one adapter from a core to the runtime, and the in-process chain of stages.

A core is numeric code of one stream (numpy in, messages out) that knows nothing of
envelopes: :class:`CoreStream` makes it a stage's :class:`~ser_stream.stage.StreamProcessor`.
Each message goes to the core method named for its type in ``routes``; what a method
returns (nothing, a message or a list of them) becomes the list of outputs. Audio can be
placed on the stream's timeline first (:class:`AudioTimeline`: the stage is then
resumable), a stream can end itself on an event of its core (stop on silence), and a core
of many small messages can answer a run of them in one call.

:func:`run_chain` runs stages' processors one after the other in this process, routed by
what each stage accepts as the runtime routes them: ``predict`` and training cut and
analyse a recording through the very processors the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream, Event
from ser_stream.stage import StageSpec, StreamProcessor
from ser_stream.wire import Body, Envelope

__all__ = ["AudioTimeline", "CoreStream", "PlacedCore", "run_chain"]

Answer = Body | Sequence[Body] | None
"""What a core method returns: nothing, one message, or messages in order."""

C = TypeVar("C")


class PlacedCore(Protocol):
    """A core of audio samples that can be told where on the stream's timeline they go."""

    def place(self, sample: int) -> None:
        """The next sample pushed is at stream time ``sample`` (in samples)."""
        ...


class AudioTimeline:
    """Stream time of one stream's audio, taken from the audio's own timestamps.

    Audio that overlaps what the stream already had is skipped (a restarted capture resends
    a little), a jump forward is audio lost upstream (a ``gap`` event with ``dropped_s``),
    and a processor restarted mid-stream goes on from where its predecessor got to.
    """

    def __init__(self, core: PlacedCore, sample_rate: int, stage: str) -> None:
        self._core = core
        self.sample_rate = sample_rate
        self._stage = stage
        self._next: int | None = None  # stream time of the next sample due, in samples
        self.repeated_s = 0.0
        """Audio that came twice and was skipped."""

    @property
    def position_s(self) -> float | None:
        """Stream time of the next sample due (None before any audio)."""
        return None if self._next is None else self._next / self.sample_rate

    def resume(self, position_s: float) -> None:
        """Go on from ``position_s``: audio after it that never comes is a gap."""
        self._next = round(position_s * self.sample_rate)
        self._core.place(self._next)

    def place(self, body: Audio) -> tuple[np.ndarray, list[Body]]:
        """The samples of ``body`` not heard yet, as float audio, and a ``gap`` before them.

        Raises:
            InputError: audio at another sample rate.
        """
        rate = self.sample_rate
        if body.sample_rate != rate:
            raise InputError(
                f"audio at {body.sample_rate} Hz reached the {self._stage}; capture must send "
                f"{rate} Hz (it converts any source)"
            )
        samples = np.asarray(body.samples)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        start = round(body.t_start * rate)
        if self._next is None:
            self._next = start
            self._core.place(start)
        before: list[Body] = []
        if start < self._next:
            skip = min(self._next - start, samples.size)
            self.repeated_s += skip / rate
            samples, start = samples[skip:], start + skip
            if not samples.size:
                return samples, before
        elif start > self._next:
            lost = start - self._next
            before.append(Event("gap", self._next / rate, {"dropped_s": lost / rate}))
            self._core.place(start)  # later times stay the audio's own
        self._next = start + samples.size
        return samples, before


class CoreStream(Generic[C]):
    """One stream's processor made of a core.

    Args:
        core: the stream's core (or the one core all streams share, for a stateless stage).
        routes: for each message type the stage accepts, the core method that takes it
            (with a ``timeline``, every routed message is audio, and arrives as its samples).
        flush: the core method that ends the stream and returns what it still held.
        close: the core method that frees what the core holds outside Python.
        batch: the core method that answers a run of messages in one call (one output each).
        timeline: place audio on the stream's timeline first (the stage is resumable).
        summary: the last message of every stream, after its flush or its own end.
        ends_on: names of the core's events that end the stream (stop on silence): the
            event, the summary, then an end of stream named after the event.
    """

    def __init__(
        self,
        core: C,
        routes: Mapping[type, Callable[[Any], Answer]],
        *,
        flush: Callable[[], Answer] | None = None,
        close: Callable[[], None] | None = None,
        batch: Callable[[list[Any]], Sequence[Body]] | None = None,
        timeline: AudioTimeline | None = None,
        summary: Callable[[], Body] | None = None,
        ends_on: frozenset[str] = frozenset(),
    ) -> None:
        self.core = core
        self._routes = dict(routes)
        self._flush = flush
        self._close = close
        self._batch = batch
        self._timeline = timeline
        self._summary = summary
        self._ends_on = ends_on

    def push(self, body: Body) -> list[Body]:
        """Hand one message to the core method of its type."""
        route = self._routes.get(type(body))
        if route is None:
            takes = ", ".join(sorted(kind.__name__ for kind in self._routes))
            raise InputError(f"{type(self.core).__name__} takes {takes}, not {type(body).__name__}")
        if self._timeline is None:
            return self._ended(_listed(route(body)))
        samples, before = self._timeline.place(body)
        if not samples.size:
            return before
        return self._ended([*before, *_listed(route(samples))])

    def push_batch(self, bodies: list[Body]) -> list[list[Body]]:
        """Answer a run of messages in one call of the core; one list of outputs per input."""
        if self._batch is None:
            raise TypeError(f"{type(self.core).__name__} answers no batch in one call")
        return [[out] for out in self._batch(bodies)]

    def flush(self) -> list[Body]:
        """End of stream: what the core still held, then the summary."""
        outputs = [] if self._flush is None else _listed(self._flush())
        if self._summary is not None:
            outputs.append(self._summary())
        return outputs

    def close(self) -> None:
        """The stream ended (flushed, or ended itself): free what the core holds."""
        if self._close is not None:
            self._close()

    @property
    def position_s(self) -> float | None:
        """Stream time reached (None before any audio, or without a timeline)."""
        return None if self._timeline is None else self._timeline.position_s

    @property
    def repeated_s(self) -> float:
        """Audio that came twice and was skipped."""
        return 0.0 if self._timeline is None else self._timeline.repeated_s

    def resume(self, position_s: float) -> None:
        """Go on from ``position_s``, where a processor that died got to."""
        if self._timeline is None:
            raise TypeError(f"{type(self.core).__name__} keeps no timeline to resume")
        self._timeline.resume(position_s)

    def _ended(self, outputs: list[Body]) -> list[Body]:
        if self._ends_on:
            for i, item in enumerate(outputs):
                if isinstance(item, Event) and item.name in self._ends_on:
                    summary = [] if self._summary is None else [self._summary()]
                    return [*outputs[: i + 1], *summary, EndOfStream(item.name)]
        return outputs


def _listed(answer: Answer) -> list[Body]:
    if answer is None:
        return []
    if isinstance(answer, list):
        return answer
    if isinstance(answer, tuple):
        return list(answer)
    return [answer]


def run_chain(
    stages: Sequence[tuple[StageSpec, StreamProcessor]], bodies: Iterable[Body]
) -> list[Body]:
    """Run one whole stream through stages' processors in this process; return what comes out.

    ``bodies`` is the stream without its end-of-stream marker: where it ends, each stage
    is flushed, what it still held going on to the stages after it.

    Each stage takes the kinds it accepts and passes the others on, as in the pipeline; at
    the end every processor is closed. Errors are raised, not turned into records.
    """
    outputs = list(bodies)
    try:
        for spec, processor in stages:
            # The whole stream passes a stage, then its end (the flush): what the stage still
            # held goes on behind its other outputs, as in the pipeline.
            outputs = _through(spec, processor, outputs) + processor.flush()
    finally:
        for _, processor in stages:
            processor.close()
    return outputs


def _through(spec: StageSpec, processor: StreamProcessor, bodies: list[Body]) -> list[Body]:
    outputs: list[Body] = []
    for body in bodies:
        if Envelope("-", 0, body).kind in spec.accepts:
            outputs.extend(processor.push(body))
        else:
            outputs.append(body)
    return outputs
