"""A stage process whose upstream moves (file: listing, dns: name) and that tells its health.

Where an engine places processes on machines (Ray, Kubernetes), an upstream replica that
is restarted elsewhere comes back on another address: the stage below follows it without a
restart of its own. An orchestrator without a supervisor reads the health file.
"""

from __future__ import annotations

import json
import signal

import zmq

from ser_stream.messages import EndOfStream, Features, Heartbeat, Window
from ser_stream.peers import write_listing
from ser_stream.testing import voiced, wait_for
from ser_stream.transport import ack_endpoint
from ser_stream.wire import Envelope, decode, encode
from tests.integration.test_stage_process import log_records, receive, start_stage


class Upstream:
    """An upstream replica: the data PUSH and the acknowledgement PULL it binds."""

    def __init__(self, endpoint: str, data: zmq.Socket, acks: zmq.Socket) -> None:
        self.endpoint, self.data, self.acks = endpoint, data, acks

    @classmethod
    def bound(cls, zctx: zmq.Context, endpoint: str) -> Upstream:
        data = zctx.socket(zmq.PUSH)
        data.bind(endpoint)
        acks = zctx.socket(zmq.PULL)
        acks.bind(ack_endpoint(endpoint))
        return cls(endpoint, data, acks)

    def send(self, seq: int, body) -> None:
        self.data.send_multipart(encode(Envelope("s1", seq, body, {"capture": 1})))

    def close(self) -> None:
        self.data.close()
        self.acks.close()


def loopback_upstream(zctx: zmq.Context) -> Upstream:
    """An upstream on two adjacent free loopback ports (data, acknowledgements)."""
    for _ in range(50):
        data = zctx.socket(zmq.PUSH)
        port = data.bind_to_random_port("tcp://127.0.0.1", min_port=20000, max_port=60000)
        acks = zctx.socket(zmq.PULL)
        try:
            acks.bind(f"tcp://127.0.0.1:{port + 1}")
        except zmq.ZMQError:
            data.close()
            acks.close()
            continue
        return Upstream(f"tcp://127.0.0.1:{port}", data, acks)
    raise RuntimeError("no two adjacent free loopback ports")


def window(i: int) -> Window:
    return Window(voiced(2.0, seed=i), i * 2.0, i * 2.0 + 2.0, 0, i)


def test_a_stage_follows_its_upstream_to_a_new_address_and_tells_its_health(tmp_path, zctx):
    listing, health = tmp_path / "upstream", tmp_path / "health.json"
    first = Upstream.bound(zctx, f"ipc://{tmp_path}/first")
    write_listing(str(listing), [first.endpoint])
    out = f"ipc://{tmp_path}/out"
    process = start_stage("features", f"file:{listing}", out, "--health-file", str(health))
    try:
        downstream = zctx.socket(zmq.PULL)
        downstream.connect(out)
        downstream_acks = zctx.socket(zmq.PUSH)
        downstream_acks.connect(ack_endpoint(out))
        news = wait_for(lambda: health.exists() and json.loads(health.read_text()), 60)
        assert news["stage"] == "features.0" and news["pid"] == process.pid
        assert news["stalled_s"] == 0 and news["streams"] == 0

        def next_features() -> Envelope:
            while True:
                envelope = receive(downstream)
                if not isinstance(envelope.body, Heartbeat):
                    return envelope

        first.send(0, window(0))
        assert isinstance(next_features().body, Features)

        # The upstream replica dies and comes back elsewhere; the listing says where.
        first.close()
        second = Upstream.bound(zctx, f"ipc://{tmp_path}/second")
        write_listing(str(listing), [second.endpoint])
        second.send(1, window(1))
        second.send(2, EndOfStream("eof"))
        moved = next_features()
        assert isinstance(moved.body, Features) and moved.seq == 1
        assert isinstance(next_features().body, EndOfStream)
        ack = decode(second.acks.recv_multipart())  # the new upstream hears the ack
        assert ack.stream == "s1" and isinstance(ack.body, EndOfStream)
        downstream_acks.send_multipart(encode(Envelope("s1", 2, EndOfStream("ack"))))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        events = [(r["event"], r.get("endpoint")) for r in log_records(stderr)]
        assert ("upstream let go", first.endpoint) in events
        assert ("upstream connected", second.endpoint) in events
        assert not health.exists()  # a clean exit takes its health file away
    finally:
        if process.poll() is None:
            process.kill()


def test_a_dns_name_connects_to_every_address_of_it(tmp_path, zctx):
    """``dns:localhost:PORT`` reaches an upstream bound on loopback (a Service's pods)."""
    upstream = loopback_upstream(zctx)
    port = int(upstream.endpoint.rsplit(":", 1)[1])
    out = f"ipc://{tmp_path}/out"
    process = start_stage("features", f"dns:localhost:{port}", out)
    try:
        downstream = zctx.socket(zmq.PULL)
        downstream.connect(out)
        upstream.send(0, window(0))
        while isinstance((envelope := receive(downstream)).body, Heartbeat):
            pass
        assert isinstance(envelope.body, Features)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_an_input_that_names_no_endpoint_stops_the_stage_with_one_line(tmp_path):
    process = start_stage("features", "features:5555", f"ipc://{tmp_path}/out")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "dns:HOST:PORT" in stderr.strip().splitlines()[-1]
