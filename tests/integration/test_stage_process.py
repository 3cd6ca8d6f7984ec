"""One stage as its own process over real ZeroMQ sockets: data, malformed input, acks, drain."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import zmq

from ser_stream.artifact import load_artifact
from ser_stream.messages import EndOfStream, ErrorMsg, Features, Heartbeat, Window
from ser_stream.testing import SER_STREAM, voiced
from ser_stream.transport import ack_endpoint
from ser_stream.wire import Envelope, decode, encode


@pytest.fixture
def endpoints(tmp_path):
    return f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out"


def start_stage(name: str, endpoint_in: str, endpoint_out: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            SER_STREAM,
            "--log-level",
            "info",
            "stage",
            name,
            "--in",
            endpoint_in,
            "--out",
            endpoint_out,
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )


def receive(sock: zmq.Socket, timeout_s: float = 30.0) -> Envelope:
    if not sock.poll(int(timeout_s * 1000)):
        raise TimeoutError("nothing arrived")
    return decode(sock.recv_multipart())


def log_records(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_features_stage_process_serves_skips_malformed_input_and_drains(endpoints, zctx):
    """Windows in, features out; a malformed message is counted and skipped; SIGTERM drains."""
    endpoint_in, endpoint_out = endpoints
    upstream = zctx.socket(zmq.PUSH)
    upstream.bind(endpoint_in)
    upstream_acks = zctx.socket(zmq.PULL)
    upstream_acks.bind(ack_endpoint(endpoint_in))
    process = start_stage("features", endpoint_in, endpoint_out)
    try:
        downstream = zctx.socket(zmq.PULL)
        downstream.connect(endpoint_out)
        downstream_acks = zctx.socket(zmq.PUSH)
        downstream_acks.connect(ack_endpoint(endpoint_out))

        upstream.send_multipart([b'{"v": 99, "kind": "window"}', b"junk"])
        upstream.send_multipart([b"not json at all"])
        features = load_artifact().analysis.features
        for i in range(3):
            window = Window(voiced(2.0, seed=i), i * 2.0, i * 2.0 + 2.0, 0, i)
            upstream.send_multipart(encode(Envelope("s1", i, window, {"capture": 1})))
        upstream.send_multipart(encode(Envelope("s1", 3, EndOfStream("eof"))))

        received = []
        while not received or not isinstance(received[-1].body, EndOfStream):
            envelope = receive(downstream)
            if not isinstance(envelope.body, Heartbeat):
                received.append(envelope)
        reports, received = received[:2], received[2:]
        assert all(isinstance(e.body, ErrorMsg) and e.body.stage == "features" for e in reports)
        assert "version" in reports[0].body.reason and "JSON" in reports[1].body.reason
        bodies = [e.body for e in received]
        assert [type(b) for b in bodies] == [Features, Features, Features, EndOfStream]
        assert all(b.matrix.shape == (features.n_frames, features.n_features) for b in bodies[:3])
        assert [e.seq for e in received] == [0, 1, 2, 3]
        assert all(
            e.timestamps["capture"] == 1 and "features" in e.timestamps for e in received[:3]
        )
        ack = receive(upstream_acks)
        assert ack.stream == "s1"

        downstream_acks.send_multipart(encode(Envelope("s1", 3, EndOfStream("ack"))))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        records = log_records(stderr)
        skipped = [r for r in records if r["event"] == "malformed message skipped"]
        assert len(skipped) == 2
        assert "version" in skipped[0]["reason"] and "JSON" in skipped[1]["reason"]
        stopped = next(r for r in records if r["event"] == "stopped")
        assert stopped["malformed_skipped"] == 2 and stopped["out_features"] == 3
        assert "end_of_stream_unacknowledged" not in stopped
    finally:
        if process.poll() is None:
            process.kill()


def test_idle_stage_sends_heartbeats(endpoints, zctx):
    """With no input a stage still shows it is alive, downstream."""
    endpoint_in, endpoint_out = endpoints
    upstream = zctx.socket(zmq.PUSH)
    upstream.bind(endpoint_in)
    process = start_stage("denoise", endpoint_in, endpoint_out)
    try:
        downstream = zctx.socket(zmq.PULL)
        downstream.connect(endpoint_out)
        envelope = receive(downstream)
        assert isinstance(envelope.body, Heartbeat) and envelope.body.stage == "denoise"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_unknown_stage_name_is_a_one_line_error():
    """A wrong stage name says which exist."""
    result = subprocess.run(
        [SER_STREAM, "stage", "nope", "--in", "ipc:///tmp/x", "--out", "ipc:///tmp/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "vad" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sigterm_loses_nothing_behind_a_slow_receiver(endpoints, zctx):
    """Terminated right after the end of stream, a stage still delivers it all to a slow reader."""
    endpoint_in, endpoint_out = endpoints
    upstream = zctx.socket(zmq.PUSH)
    upstream.bind(endpoint_in)
    upstream_acks = zctx.socket(zmq.PULL)
    upstream_acks.bind(ack_endpoint(endpoint_in))
    process = start_stage("denoise", endpoint_in, endpoint_out, "--hwm", "4")
    try:
        downstream = zctx.socket(zmq.PULL)
        downstream.set_hwm(4)
        downstream.connect(endpoint_out)
        downstream_acks = zctx.socket(zmq.PUSH)
        downstream_acks.connect(ack_endpoint(endpoint_out))
        assert "ready" in process.stderr.readline()
        count = 40
        for i in range(count):
            window = Window(voiced(0.5, seed=i), i * 0.5, i * 0.5 + 0.5, 0, i)
            upstream.send_multipart(encode(Envelope("slow", i, window)))
        upstream.send_multipart(encode(Envelope("slow", count, EndOfStream("eof"))))
        process.send_signal(signal.SIGTERM)
        time.sleep(2.0)  # the fault: the receiver stays behind while the stage stops
        windows, end = 0, None
        while end is None:
            envelope = receive(downstream)
            time.sleep(0.01)  # and reads slowly
            if isinstance(envelope.body, Window):
                windows += 1
            elif isinstance(envelope.body, EndOfStream):
                end = envelope
        assert windows == count and end.body.reason == "eof"
        downstream_acks.send_multipart(encode(Envelope("slow", end.seq, EndOfStream("ack"))))
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
        stopped = next(r for r in log_records(stderr) if r["event"] == "stopped")
        assert stopped["out_window"] == count and "end_of_stream_unacknowledged" not in stopped
    finally:
        if process.poll() is None:
            process.kill()


def test_an_idle_zmq_capture_stops_on_sigterm(tmp_path):
    """Waiting for a producer that never comes, with nobody downstream, SIGTERM still ends it."""
    process = subprocess.Popen(
        [SER_STREAM, "--log-level", "info", "stage", "capture", "--source", f"zmq:ipc://{tmp_path}/in",
         "--out", f"ipc://{tmp_path}/out"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "ready" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)  # it ends: no wait for a producer that never comes
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
