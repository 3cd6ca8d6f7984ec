"""A stateless stage: one processor for all streams, one message out per message in, same seq."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.messages import EndOfStream, ErrorMsg, Event, Heartbeat, Noise
from ser_stream.stage import StageContext, StageSpec
from ser_stream.stage_logic import StageLogic
from ser_stream.stages import STAGES
from ser_stream.wire import Envelope, Kind


class Doubler:
    built = 0

    def __init__(self) -> None:
        Doubler.built += 1

    def push(self, body):
        return [Event("doubled", body.t * 2)]

    def flush(self):
        return []

    def close(self):
        pass


SPEC = StageSpec(
    name="double",
    accepts=frozenset({Kind.EVENT}),
    emits=frozenset({Kind.EVENT}),
    build=lambda context: Doubler(),
    stateless=True,
)


def test_outputs_keep_the_sequence_numbers_of_their_inputs():
    logic = StageLogic(SPEC, StageContext("double"))
    inputs = [
        Envelope("a", 7, Event("x", 1.0)),
        Envelope("b", 3, Event("x", 2.0)),
        Envelope("a", 9, Noise(np.zeros(4, "float32"), 0.0, 0.1)),
        Envelope("a", 10, EndOfStream("eof")),
        Envelope("b", 4, Event("x", 3.0)),
    ]
    outputs = logic.handle_many(inputs)
    assert [(o.stream, o.seq) for o in outputs] == [(e.stream, e.seq) for e in inputs]
    assert outputs[0].body.t == 2.0 and outputs[4].body.t == 6.0
    assert isinstance(outputs[3].body, EndOfStream)


def test_one_processor_serves_every_stream_and_no_stream_state_is_kept():
    Doubler.built = 0
    logic = StageLogic(SPEC, StageContext("double"))
    for i in range(50):
        logic.handle(Envelope(f"s{i}", 0, Event("x", 1.0)))
        logic.handle(Envelope(f"s{i}", 1, EndOfStream("eof")))
    assert Doubler.built == 1
    assert logic.open_streams == [] and logic.end_all("signal") == []
    assert not logic._seq and not logic._ended


def test_heartbeats_are_not_forwarded_and_errors_keep_the_number():
    class Failing(Doubler):
        def push(self, body):
            from ser_stream.errors import InputError

            raise InputError("bad window")

    spec = StageSpec("fail", frozenset({Kind.EVENT}), frozenset(), lambda c: Failing(),
                     stateless=True)  # fmt: skip
    logic = StageLogic(spec, StageContext("fail"))
    assert logic.handle(Envelope("-", 0, Heartbeat("up"))) == []
    [out] = logic.handle(Envelope("a", 5, Event("x", 1.0)))
    assert isinstance(out.body, ErrorMsg) and out.seq == 5


def test_a_stateless_processor_that_gives_two_messages_is_a_bug_not_a_silent_reorder():
    class Twice(Doubler):
        def push(self, body):
            return [body, body]

    spec = StageSpec("twice", frozenset({Kind.EVENT}), frozenset(), lambda c: Twice(),
                     stateless=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="gave 2"):
        StageLogic(spec, StageContext("twice")).handle(Envelope("a", 0, Event("x", 1.0)))


def test_the_model_is_stateless_and_the_stages_of_small_messages_batch():
    assert [n for n, s in STAGES.items() if s.stateless] == ["model"]
    assert [n for n, s in STAGES.items() if s.batches] == ["vad", "model"]
    assert [n for n, s in STAGES.items() if s.batch_calls] == ["model"]
    assert [n for n, s in STAGES.items() if s.resumable] == ["vad"]


def test_a_processor_without_what_its_capabilities_need_is_refused_when_built():
    spec = StageSpec("batching", frozenset({Kind.EVENT}), frozenset(), lambda c: Doubler(),
                     stateless=True, batches=True, batch_calls=True)  # fmt: skip
    with pytest.raises(TypeError, match="BatchProcessor"):
        StageLogic(spec, StageContext("batching")).handle(Envelope("a", 0, Event("x", 1.0)))


def test_capabilities_that_contradict_each_other_are_refused():
    with pytest.raises(ValueError, match="batch_calls needs batches"):
        StageSpec("x", frozenset(), frozenset(), lambda c: Doubler(), batch_calls=True)
    with pytest.raises(ValueError, match="stateless"):
        StageSpec("x", frozenset(), frozenset(), lambda c: Doubler(), stateless=True,
                  resumable=True)  # fmt: skip
