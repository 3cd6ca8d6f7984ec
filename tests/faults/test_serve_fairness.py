"""One address cannot take every stream of `ser-stream serve`: each client has its share.

A real service with room for 3 streams and 2 per client address. The first client, at
127.0.0.1, holds its 2 and is refused a third, with the reason; a second client, at
127.0.0.2 (loopback too), still gets a stream and its predictions. However a stream ends,
its client gets its place back.
"""

from __future__ import annotations

import json
import socket as sockets

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from tests.web.conftest import hello, start_service, stream_through, utterances, wait_for_free_slots

pytestmark = pytest.mark.slow

OTHER = "127.0.0.2"
"""The second client's address: loopback, another address than the first's."""


def can_bind(address: str) -> bool:
    try:
        with sockets.socket() as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def fair():
    if not can_bind(OTHER):
        pytest.skip(f"{OTHER} is not a loopback address here")
    running = start_service(
        "--max-streams", "3", "--max-streams-per-client", "2", "--rate-limit", "100000"
    )
    yield running
    assert running.stop() == 0, "".join(running.stderr)


def refusals(service) -> dict[str, float]:
    text = httpx.get(f"{service.url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "ser_stream_refused":
            return {
                s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")
            }
    return {}


def assert_refused_over_its_share(service) -> None:
    socket, refused = hello(service.ws_url)
    assert refused["kind"] == "error" and refused["stream"] == "-"
    assert refused["reason"] == (
        "2 streams are open from this address, the most one client may hold; "
        "end one before starting another"
    )
    with pytest.raises(ConnectionClosed):
        socket.recv(timeout=10)
    assert socket.close_code == 1013


def test_a_client_at_its_share_is_refused_while_another_address_still_streams(fair):
    before = refusals(fair)
    first, started = hello(fair.ws_url)
    second, _ = hello(fair.ws_url)
    try:
        assert started["kind"] == "stream_start"
        assert_refused_over_its_share(fair)  # one slot is free, but not for this address
        records, code = stream_through(
            fair.ws_url, utterances(1, seed=40), source_address=(OTHER, 0)
        )
    finally:
        first.close()
        second.close()
    assert code == 1000
    assert records[0]["kind"] == "stream_start"
    assert any(record["kind"] == "prediction" for record in records)
    assert records[-1]["kind"] == "session_end"
    assert records[-1]["summary"]["ledger"] == "balanced"
    after = refusals(fair)
    assert after.get("client_streams", 0) - before.get("client_streams", 0) == 1
    assert after.get("streams", 0) == before.get("streams", 0)  # the service was never full


def read_to_the_close(socket) -> list[dict]:
    records = []
    with pytest.raises(ConnectionClosed):
        while True:
            records.append(json.loads(socket.recv(timeout=30)))
    return records


def disconnect(socket) -> None:
    socket.close()


def break_a_limit(socket) -> None:
    socket.send(np.zeros(16_000 * 12, np.int16).tobytes())  # over 10 s in one message
    records = read_to_the_close(socket)
    assert socket.close_code == 1008 and "a message of 12.0 s" in records[-1]["reason"]


def end_it(socket) -> None:
    audio = utterances(1, seed=41)  # about 3 s: within the 10 s a client may send ahead
    for start in range(0, audio.size, 8_000):
        socket.send(audio[start : start + 8_000].tobytes())
    socket.send(json.dumps({"type": "end"}))
    records = read_to_the_close(socket)
    assert socket.close_code == 1000 and records[-1]["kind"] == "session_end"


def fall_silent(socket) -> None:
    records = read_to_the_close(socket)
    assert socket.close_code == 1008 and "no audio for 10 s" in records[-1]["reason"]


@pytest.mark.parametrize("ending", [disconnect, break_a_limit, end_it, fall_silent])
def test_however_a_stream_ends_its_client_gets_its_place_back(fair, ending):
    wait_for_free_slots(fair)
    ending_one, started = hello(fair.ws_url)
    kept, _ = hello(fair.ws_url)
    try:
        assert started["kind"] == "stream_start"
        assert_refused_over_its_share(fair)
        ending(ending_one)
        wait_for_free_slots(fair, at_most=1)
        again, started = hello(fair.ws_url)
        assert started["kind"] == "stream_start", started
        again.close()
    finally:
        kept.close()
