"""The service's limits: token buckets per client and per stream, the token, the body limit."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ser_stream.web.limits import AudioPace, BodyLimit, ClientRates, token_matches, token_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_rate_and_waits_for_the_next_token():
    clock = Clock()
    rates = ClientRates(60, clock=clock)  # one a second, 60 at once
    assert all(rates.wait_s("a") == 0 for _ in range(60))
    assert rates.wait_s("a") == pytest.approx(1.0)
    assert rates.wait_s("b") == 0  # another client has its own bucket
    clock.now += 1.0
    assert rates.wait_s("a") == 0
    assert rates.wait_s("a") > 0


def test_full_buckets_are_forgotten_first_and_memory_stays_bounded():
    clock = Clock()
    rates = ClientRates(10, clock=clock, remember=3)
    for _ in range(10):
        rates.wait_s("busy")  # empty now
    rates.wait_s("x")
    clock.now += 60  # x is full again; busy would be too, but it keeps asking
    for _ in range(10):
        rates.wait_s("busy")
    rates.wait_s("y")
    rates.wait_s("z")  # over the memory: x (full) goes, busy (empty) stays
    assert "x" not in rates._buckets and rates.wait_s("busy") > 0
    for k in range(100):  # a flood of new addresses
        rates.wait_s(f"flood-{k}")
    assert len(rates._buckets) <= 3


@given(st.lists(st.floats(0.001, 2.0), min_size=1, max_size=200))
def test_audio_pace_never_lets_more_than_burst_plus_speed_times_time(chunks):
    clock = Clock()
    pace = AudioPace(max_speed=2.0, burst_s=5.0, clock=clock)
    allowed = 0.0
    for seconds in chunks:
        clock.now += 0.1
        if pace.allows(seconds):
            allowed += seconds
    assert allowed <= 5.0 + 2.0 * clock.now + 1e-9


def test_real_time_audio_always_passes():
    clock = Clock()
    pace = AudioPace(max_speed=1.5, burst_s=2.0, clock=clock)
    for _ in range(1000):
        clock.now += 0.085
        assert pace.allows(0.085)


@pytest.mark.parametrize(
    ("headers", "query", "token"),
    [
        ({"authorization": "Bearer abc"}, b"", "abc"),
        ({"authorization": "bearer  abc "}, b"", "abc"),
        ({}, b"token=abc&x=1", "abc"),
        ({"authorization": "Basic abc"}, b"", None),
        ({}, b"", None),
    ],
)
def test_token_of(headers, query, token):
    assert token_of(headers, query) == token


def test_token_matches():
    assert token_matches(None, None)  # no token configured: open
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cret", None)
    assert not token_matches("s3cret", "s3cre")
    assert not token_matches("s3cret", "ß3cret")


async def _call(app, headers, chunks):
    sent = []
    incoming = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    incoming.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    await app(scope, receive, send)
    return sent


async def _reader(scope, receive, send):
    """An application that reads the whole body, then answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client left")
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def test_body_limit_declared_too_large_is_refused_unread():
    sent = asyncio.run(_call(BodyLimit(_reader, 10), [(b"content-length", b"11")], [b"x" * 11]))
    assert sent[0]["status"] == 413
    assert "larger than" in json.loads(sent[1]["body"])["error"]


def test_body_limit_counts_an_undeclared_body():
    sent = asyncio.run(_call(BodyLimit(_reader, 10), [], [b"x" * 6, b"x" * 6]))
    assert [m.get("status") for m in sent if "status" in m] == [413]


def test_body_limit_lets_a_body_within_it_through():
    sent = asyncio.run(_call(BodyLimit(_reader, 12), [], [b"x" * 6, b"x" * 6]))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"12"
