"""The rules a `zmq:` source applies to producers' messages (no sockets: its core state)."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.logs import get_logger
from ser_stream.messages import Audio, EndOfStream, ErrorMsg
from ser_stream.producers import BURST_S, MAX_AHEAD_S, MAX_SPEED, Producers
from ser_stream.wire import Envelope


@pytest.fixture
def producers() -> Producers:
    return Producers(480, max_streams=4, log=get_logger(stage="test"))


def audio(stream: str, seq: int, seconds: float, rate: int = 16_000) -> Envelope:
    samples = (np.sin(np.arange(int(seconds * rate)) / 9.0) * 8000).astype(np.int16)
    return Envelope(stream, seq, Audio(samples, rate, 0.0))


def drain(producers: Producers, now: float = 0.0) -> list[tuple]:
    out = []
    while items := producers.turn(now):
        out += items
    return out


def reasons(items: list[tuple]) -> list[str]:
    return [item[1].reason for item in items if isinstance(item[1], ErrorMsg)]


def test_an_ended_stream_id_is_not_opened_again(producers):
    producers.take(audio("a", 0, 0.1))
    producers.take(Envelope("a", 1, EndOfStream("eof")))
    producers.take(audio("a", 0, 0.1))  # a new producer reusing the id
    items = drain(producers)
    assert [type(item[1]).__name__ for item in items if item[0] == "a"] == [
        "Audio", "Audio", "Audio", "Audio", "EndOfStream"
    ]  # fmt: skip
    (refusal,) = reasons(items)
    assert "that stream has ended; give each new stream an id of its own" in refusal
    assert not producers.open and not producers.closing


def test_a_rate_change_keeps_the_audio_in_order(producers):
    producers.take(audio("a", 0, 0.5, rate=8_000))
    producers.take(audio("a", 1, 0.5, rate=16_000))
    producers.take(audio("a", 2, 0.5, rate=44_100))
    producers.take(Envelope("a", 3, EndOfStream("eof")))
    frames = [item[1] for item in drain(producers) if isinstance(item[1], Audio)]
    starts = [frame.t_start for frame in frames]
    assert starts == sorted(starts)
    assert all(frame.samples.size <= 480 for frame in frames)
    total = sum(frame.samples.size for frame in frames)
    assert abs(total - 3 * 8_000) < 200  # 1.5 s at 16 kHz, resamplers' edges aside


def test_a_seq_that_does_not_increase_is_another_producer(producers):
    producers.take(audio("a", 5, 0.1))
    producers.take(audio("a", 3, 0.1))
    producers.take(audio("a", 9, 0.1))  # a jump: a loss, not a stranger
    (refusal,) = reasons(drain(producers))
    assert "message 3 does not follow 5; is another producer using this stream id?" in refusal


def seconds_of(items: list[tuple]) -> float:
    return sum(item[1].samples.size for item in items if isinstance(item[1], Audio)) / 16_000


def test_a_stream_is_paced_after_its_burst_and_its_credit_is_capped(producers):
    for seq in range(4):
        producers.take(audio("a", seq, 5.0))  # 20 s: all it may have waiting
    producers.take(audio("a", 4, 1.0))
    state = producers.open["a"]
    assert any("already waits to go on" in reason for reason in reasons(list(state.pending)))
    assert MAX_AHEAD_S == 20.0
    assert seconds_of(drain(producers, now=0.0)) == pytest.approx(BURST_S, abs=0.05)
    assert producers.due_in(state, 0.0) > 0  # the burst is spent
    assert seconds_of(drain(producers, now=0.25)) == pytest.approx(0.25 * MAX_SPEED, abs=0.05)
    drain(producers, now=1000.0)  # the rest, then a long idle: the credit is capped
    for seq in range(5, 9):
        producers.take(audio("a", seq, 5.0))
    assert seconds_of(drain(producers, now=2000.0)) == pytest.approx(BURST_S, abs=0.05)
