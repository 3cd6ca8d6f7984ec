"""The collector's reordering: any interleaving of replicas comes out in sequence order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ser_stream.ordering import Reorderer, first_seq


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(st.permutations(range(30)))
def test_any_arrival_order_is_released_in_sequence(order):
    reorderer = Reorderer(timeout_s=1.0, clock=Clock())
    released = []
    for seq in order:
        released += reorderer.push("s", seq, seq)
    assert released == list(range(30))
    assert reorderer.held == 0


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=60), st.randoms())
def test_streams_are_ordered_independently(streams, rnd):
    items = []
    counts: dict[str, int] = {}
    for stream in streams:
        items.append((stream, counts.get(stream, 0)))
        counts[stream] = counts.get(stream, 0) + 1
    rnd.shuffle(items)
    reorderer = Reorderer(clock=Clock())
    out: dict[str, list[int]] = {}
    for stream, seq in items:
        for got_stream, got_seq in reorderer.push(stream, seq, (stream, seq)):
            out.setdefault(got_stream, []).append(got_seq)
    assert out == {stream: list(range(n)) for stream, n in counts.items()}


def test_a_missing_number_holds_the_stream_only_until_the_timeout():
    clock = Clock()
    reorderer = Reorderer(timeout_s=1.0, clock=clock)
    assert reorderer.push("s", 0, "zero") == ["zero"]
    assert reorderer.push("s", 2, "two") == []
    assert reorderer.push("s", 3, "three") == []
    clock.now = 0.5
    assert reorderer.expire() == []
    clock.now = 1.2
    assert reorderer.expire() == ["two", "three"]
    assert reorderer.counters["gap"] == 1
    # the lost one comes after all: released at once, counted as late
    assert reorderer.push("s", 1, "one") == ["one"]
    assert reorderer.counters["late"] == 1


def test_an_upstream_that_restarts_numbers_anew_and_keeps_its_order():
    reorderer = Reorderer(clock=Clock())
    for seq in range(5):
        reorderer.push("s", seq, seq)
    restarted = first_seq(1)
    assert reorderer.push("s", restarted, "again") == ["again"]
    assert reorderer.push("s", restarted + 2, "two") == []
    assert reorderer.push("s", restarted + 1, "one") == ["one", "two"]
    assert reorderer.counters["renumbered"] == 1
    assert reorderer.push("s", 3, "old") == ["old"]  # a straggler of the dead process
    assert reorderer.counters["late"] == 1


def test_a_stream_that_begins_after_a_restart_is_not_a_renumbering():
    reorderer = Reorderer(clock=Clock())
    assert reorderer.push("s", first_seq(2) + 1, "one") == []  # waits for its first
    assert reorderer.push("s", first_seq(2), "zero") == ["zero", "one"]
    assert not reorderer.counters["renumbered"]


def test_a_busy_replica_is_waited_for_and_a_straggler_after_the_end_opens_nothing():
    clock = Clock()
    reorderer = Reorderer(clock=clock)
    reorderer.push("s", 1, "one")
    clock.now = 5.0  # a slow replica is not a dead one
    assert reorderer.expire() == []
    assert reorderer.push("s", 0, "zero") == ["zero", "one"]
    reorderer.forget("s")
    assert reorderer.push("s", 7, "straggler") == ["straggler"]
    assert reorderer.counters["after_end"] == 1 and reorderer.held == 0 and not reorderer._streams


def test_forget_releases_what_is_held_and_drops_the_stream():
    reorderer = Reorderer(clock=Clock())
    reorderer.push("s", 1, "one")
    reorderer.push("s", 3, "three")
    assert reorderer.forget("s") == ["one", "three"]
    assert reorderer.held == 0 and reorderer.forget("s") == []
