"""The gateway: a client's stream into a real ZeroMQ socket, records back to the right one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import zmq

from ser_stream.messages import Audio, EndOfStream
from ser_stream.web import gateway as gateway_module
from ser_stream.web.gateway import Busy, ClientBusy, Gateway, GatewaySink
from ser_stream.wire import decode


def test_streams_go_out_as_wire_messages_of_their_own_id(tmp_path):
    endpoint = f"ipc://{tmp_path}/in"
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(endpoint)

    async def scenario():
        gateway = Gateway(endpoint, max_streams=2)
        gateway.attach()
        a = gateway.open(48_000)
        b = gateway.open(16_000)
        with pytest.raises(Busy):
            gateway.open(16_000)
        await gateway.send_audio(a, np.arange(4800, dtype=np.int16))
        await gateway.send_audio(a, np.arange(4800, dtype=np.int16))
        await gateway.send_audio(b, np.zeros(0, np.int16))  # nothing: nothing sent
        await gateway.end(a)
        await gateway.end(a)  # once only
        await gateway.send_audio(a, np.arange(10, dtype=np.int16))  # after the end: dropped
        gateway.release(a)
        gateway.open(16_000)  # its slot is free again
        gateway.detach()
        return a

    a = asyncio.run(scenario())
    received = []
    while pull.poll(500):
        received.append(decode(pull.recv_multipart()))
    context.destroy(linger=0)
    assert [e.stream for e in received] == [a.stream] * 3
    assert [e.seq for e in received] == [0, 1, 2]
    first, second, end = (e.body for e in received)
    assert isinstance(first, Audio) and first.sample_rate == 48_000 and first.t_start == 0
    assert second.t_start == pytest.approx(0.1)
    assert isinstance(end, EndOfStream) and end.reason == "eof"
    assert a.stream.startswith("ws-") and "gateway" in received[0].timestamps


def test_records_reach_their_client_only_and_a_client_that_does_not_read_is_marked(monkeypatch):
    monkeypatch.setattr(gateway_module, "RECORDS_HELD", 3)

    async def scenario():
        gateway = Gateway("ipc:///nonexistent", max_streams=4)
        gateway.attach()
        reader, idler = gateway.open(16_000), gateway.open(16_000)
        sink = GatewaySink(gateway)
        for k in range(5):
            gateway.deliver_threadsafe(idler.stream, {"kind": "event", "n": k})
        sink.stream_end(reader.stream, "eof", {"windows": 0})
        gateway.deliver_threadsafe("ws-unknown", {"kind": "event"})
        await asyncio.sleep(0.05)
        gateway.detach()
        return reader, idler

    reader, idler = asyncio.run(scenario())
    assert reader.records.qsize() == 1 and not reader.unread
    assert reader.records.get_nowait()["kind"] == "stream_end"
    assert idler.records.qsize() == 3 and idler.unread


def test_each_address_holds_at_most_its_share_and_gets_it_back_on_release():
    gateway = Gateway("ipc:///nonexistent", max_streams=3, max_per_client=2)
    a1, a2 = gateway.open(16_000, "10.0.0.1"), gateway.open(16_000, "10.0.0.1")
    with pytest.raises(ClientBusy, match="2 streams are open from this address"):
        gateway.open(16_000, "10.0.0.1")
    b = gateway.open(16_000, "10.0.0.2")  # another address: the last slot is its
    with pytest.raises(Busy) as refused:
        gateway.open(16_000, "10.0.0.3")
    assert not isinstance(refused.value, ClientBusy)  # the service is full, not the client
    assert (gateway.held_by("10.0.0.1"), gateway.held_by("10.0.0.2")) == (2, 1)
    gateway.release(a1)
    gateway.release(a1)  # twice: nothing more
    assert gateway.held_by("10.0.0.1") == 1
    gateway.open(16_000, "10.0.0.1")  # its place is back
    gateway.release(b)
    assert gateway.held_by("10.0.0.2") == 0 and a2.address == "10.0.0.1"


def test_without_a_share_one_address_may_take_every_stream():
    gateway = Gateway("ipc:///nonexistent", max_streams=2)
    gateway.open(16_000, "10.0.0.1")
    gateway.open(16_000, "10.0.0.1")
    with pytest.raises(Busy):
        gateway.open(16_000, "10.0.0.1")
