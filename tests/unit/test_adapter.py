"""The one adapter from a core to a stage's processor, and the in-process chain of stages."""

from __future__ import annotations

import pytest

from ser_stream.adapter import CoreStream, run_chain
from ser_stream.errors import InputError
from ser_stream.messages import EndOfStream, ErrorMsg, Event, Noise
from ser_stream.stage import StageSpec
from ser_stream.wire import Kind


class Counting:
    """A core that answers each event with one of its own and keeps a count."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.seen = 0
        self.closed = False

    def take(self, event: Event) -> Event:
        self.seen += 1
        return Event(f"{self.tag}:{event.name}", event.t)

    def held(self) -> list[Event]:
        return [Event(f"{self.tag}:held", 9.0)]

    def summary(self) -> Event:
        return Event(f"{self.tag}:count", 0.0, {"count": self.seen})

    def close(self) -> None:
        self.closed = True


def stream(core: Counting, **options) -> CoreStream[Counting]:
    return CoreStream(core, {Event: core.take}, close=core.close, **options)


def spec(name: str) -> StageSpec:
    return StageSpec(name, frozenset({Kind.EVENT}), frozenset({Kind.EVENT}), lambda c: None)


def test_a_message_goes_to_the_core_method_of_its_type_and_others_are_refused():
    processor = stream(Counting("a"))
    assert processor.push(Event("x", 1.0)) == [Event("a:x", 1.0)]
    with pytest.raises(InputError, match="Counting takes Event, not Noise"):
        processor.push(Noise.__new__(Noise))


def test_an_ending_event_of_the_core_ends_the_stream_after_its_summary():
    core = Counting("a")
    processor = stream(core, summary=core.summary, ends_on=frozenset({"a:stop"}))
    out = processor.push(Event("stop", 2.0))
    assert out == [Event("a:stop", 2.0), Event("a:count", 0.0, {"count": 1}), EndOfStream("a:stop")]
    assert processor.flush() == [Event("a:count", 0.0, {"count": 1})]


def test_without_a_batch_method_or_a_timeline_a_processor_refuses_to_batch_or_resume():
    processor = stream(Counting("a"))
    assert processor.position_s is None
    with pytest.raises(TypeError, match="no batch"):
        processor.push_batch([Event("x", 1.0)])
    with pytest.raises(TypeError, match="no timeline"):
        processor.resume(1.0)


def test_the_chain_passes_on_what_a_stage_does_not_take_and_flushes_each_in_turn():
    first, second = Counting("a"), Counting("b")
    chain = [
        (spec("a"), stream(first, flush=first.held)),
        (spec("b"), stream(second, flush=second.held)),
    ]
    report = ErrorMsg("skipped", "capture")
    out = run_chain(chain, [Event("x", 1.0), report])
    assert out == [Event("b:a:x", 1.0), report, Event("b:a:held", 9.0), Event("b:held", 9.0)]
    assert first.closed and second.closed
