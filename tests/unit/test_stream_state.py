"""Per-stream state of a stateful stage: freed at end of stream or when idle, capped in number."""

from __future__ import annotations

from ser_stream.messages import EndOfStream, ErrorMsg, Event
from ser_stream.ordering import first_seq
from ser_stream.stage import ENDED_MEMORY, MAX_OPEN_STREAMS, StageContext, StageSpec
from ser_stream.stage_logic import StageLogic
from ser_stream.wire import Envelope, Kind


class Holder:
    """Keeps every event until the end of its stream."""

    def __init__(self) -> None:
        self.held: list[Event] = []

    def push(self, body):
        self.held.append(body)
        return []

    def flush(self):
        return list(self.held)

    def close(self):
        self.held.clear()


SPEC = StageSpec(
    name="hold",
    accepts=frozenset({Kind.EVENT}),
    emits=frozenset({Kind.EVENT}),
    build=lambda context: Holder(),
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logic(clock: Clock | None = None, generation: int = 0) -> StageLogic:
    return StageLogic(
        SPEC, StageContext("hold"), clock=lambda: 1, monotonic=clock or Clock(),
        generation=generation,
    )  # fmt: skip


def event(stream: str, t: float = 0.0) -> Envelope:
    return Envelope(stream, 0, Event("x", t))


def test_twenty_thousand_streams_leave_no_state_behind():
    stage = logic()
    for k in range(20_000):
        stage.handle(event(f"s{k}"))
        stage.handle(Envelope(f"s{k}", 1, EndOfStream("eof")))
    assert stage.open_streams == [] and not stage._seq and not stage._heard
    assert len(stage._ended) == ENDED_MEMORY


def test_an_idle_stream_is_ended_with_what_it_held_and_a_reason():
    clock = Clock()
    stage = logic(clock)
    stage.handle(event("gone", 1.0))
    stage.handle(event("alive", 1.0))
    clock.now = 50.0
    stage.handle(event("alive", 2.0))
    clock.now = 61.0
    out = stage.end_idle(60.0)
    assert [(e.stream, type(e.body).__name__) for e in out] == [
        ("gone", "ErrorMsg"), ("gone", "Event"), ("gone", "EndOfStream"),
    ]  # fmt: skip
    assert "sent nothing for 60 s" in out[0].body.reason
    assert out[-1].body == EndOfStream("error")
    assert stage.open_streams == ["alive"]
    assert stage.handle(event("gone")) == []  # a straggler opens nothing


def test_time_the_stage_itself_was_blocked_is_not_a_stream_s_silence():
    clock = Clock()
    stage = logic(clock)
    stage.handle(event("slow"))
    clock.now = 75.0  # the stage sat behind a full queue downstream for 70 s of it
    assert stage.end_idle(60.0, paused_s=70.0) == []
    assert stage.open_streams == ["slow"]


def test_one_stream_more_than_the_cap_gets_an_error_and_no_state():
    stage = logic()
    for k in range(MAX_OPEN_STREAMS):
        assert stage.handle(event(f"s{k}")) == []
    (refused,) = stage.handle(event("one-more"))
    assert isinstance(refused.body, ErrorMsg) and "add replicas" in refused.body.reason
    assert len(stage.open_streams) == MAX_OPEN_STREAMS
    assert stage.counters["dropped_too_many_streams"] == 1
    stage.handle(Envelope("s0", 1, EndOfStream("eof")))
    assert stage.handle(event("one-more")) == []  # room again


def test_a_restarted_stage_numbers_from_its_generation():
    stage = logic(generation=3)
    out = stage.handle(Envelope("s", 0, EndOfStream("eof")))
    assert [e.seq for e in out] == [first_seq(3)]
