"""Limits of a real `ser-stream serve`: streams, pace, predictions at once, rate; the stop."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ser_stream.testing import SER_STREAM, noise, wait_for
from tests.web.conftest import hello, start_service, utterances, wait_for_free_slots

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def strict():
    running = start_service(
        "--max-streams", "2", "--max-speed", "2", "--max-predictions", "1",
        "--max-upload-mb", "16", "--max-upload-seconds", "150", "--no-stop-on-silence",
    )  # fmt: skip
    yield running
    running.stop()


def test_one_stream_too_many_is_told_to_retry(strict):
    first, started = hello(strict.ws_url)
    second, _ = hello(strict.ws_url)
    try:
        assert started["kind"] == "stream_start"
        third, refused = hello(strict.ws_url)
        assert refused["kind"] == "error" and "2 streams are open" in refused["reason"]
        with pytest.raises(ConnectionClosed):
            third.recv(timeout=10)
        assert third.close_code == 1013
    finally:
        first.close()
        second.close()
    wait_for_free_slots(strict)
    again, started = hello(strict.ws_url)  # a slot freed is a slot taken
    assert started["kind"] == "stream_start"
    again.close()


def test_clients_that_leave_right_after_their_hello_free_their_slots(strict):
    for _ in range(5):  # more than --max-streams of them
        socket = connect(strict.ws_url, legacy=True)
        socket.send(json.dumps({"sample_rate": 16_000}))
        socket.socket.close()  # gone before its stream_start could reach it
    wait_for_free_slots(strict)
    assert httpx.get(f"{strict.url}/healthz").json()["streams"] == 0
    socket, started = hello(strict.ws_url)
    assert started["kind"] == "stream_start"
    socket.close()
    wait_for_free_slots(strict)


def test_a_client_that_sends_no_audio_is_ended_with_the_reason(strict):
    socket, started = hello(strict.ws_url)
    socket.send(b"")  # nothing of audio: it does not count
    records = []
    with pytest.raises(ConnectionClosed):
        while True:
            records.append(json.loads(socket.recv(timeout=60)))
    assert socket.close_code == 1008
    assert "no audio for 10 s" in records[-1]["reason"]
    wait_for_free_slots(strict)


def test_a_message_of_more_than_ten_seconds_is_refused(strict):
    socket, _ = hello(strict.ws_url)
    socket.send(np.zeros(16_000 * 12, np.int16).tobytes())
    with pytest.raises(ConnectionClosed):
        refusal = json.loads(socket.recv(timeout=10))
        socket.recv(timeout=10)
    assert "a message of 12.0 s of audio" in refusal["reason"]
    assert socket.close_code == 1008
    wait_for_free_slots(strict)


def test_an_upload_longer_than_allowed_is_refused_before_it_is_decoded(strict, tmp_path):
    long = tmp_path / "long.flac"
    soundfile.write(long, np.zeros(16_000 * 200, np.int16), 16_000)  # small as FLAC, 200 s
    with long.open("rb") as handle:
        response = httpx.post(f"{strict.url}/v1/predict", files={"file": handle}, timeout=60)
    assert response.status_code == 413
    assert "long.flac holds 200 s of audio" in response.json()["error"]


def test_audio_faster_than_the_pace_ends_the_stream_with_the_reason(strict):
    socket, started = hello(strict.ws_url)
    audio = utterances(8, seed=6)  # about 28 s, sent at once: far over 2x real time
    records = []
    try:
        for start in range(0, audio.size, 16_000):
            socket.send(audio[start : start + 16_000].tobytes())
    except ConnectionClosed:
        pass  # closed while sending: what came before the close is still there to read
    with pytest.raises(ConnectionClosed):
        while True:
            records.append(json.loads(socket.recv(timeout=30)))
    assert socket.close_code == 1008
    refusal = [r for r in records if r["kind"] == "error" and r["stage"] == "gateway"]
    assert refusal and "faster than 2x real time" in refusal[-1]["reason"]
    assert refusal[-1]["stream"] == started["stream"]


class HeldUpload(io.BytesIO):
    """A file whose upload stops half way until ``go`` is set: its request stays in progress."""

    def __init__(self, data: bytes, go: threading.Event) -> None:
        super().__init__(data)
        self.half, self.go = len(data) // 2, go

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.half:
            assert self.go.wait(120), "the held upload was never let go"
        return super().read(size)


def test_predictions_past_the_limit_are_told_to_retry(strict, tmp_path):
    """While one prediction is in progress (its upload held half way), another gets 503."""
    talk, short = tmp_path / "talk.wav", tmp_path / "short.wav"
    soundfile.write(talk, utterances(2, seed=7), 16_000)
    soundfile.write(short, noise(0.5), 16_000)

    def post(path, upload=None) -> httpx.Response:
        with path.open("rb") as handle:
            files = {"file": (path.name, upload or handle)}
            return httpx.post(f"{strict.url}/v1/predict", files=files, timeout=120)

    def held_while_another_comes() -> tuple[httpx.Response, httpx.Response] | None:
        go, held = threading.Event(), []
        first = threading.Thread(
            target=lambda: held.append(post(talk, HeldUpload(talk.read_bytes(), go)))
        )
        first.start()
        other = post(short)
        go.set()
        first.join(120)
        # the held one holds the slot unless the other came first (then: another try)
        return (held[0], other) if other.status_code == 503 else None

    first, busy = wait_for(held_while_another_comes, 120, step_s=0.5)
    assert first.status_code == 200, first.text[:200]
    assert busy.headers["retry-after"] == "1"
    assert "in progress" in busy.json()["error"]


def test_a_port_in_use_is_one_clear_line(strict):
    port = strict.url.rsplit(":", 1)[1]
    done = subprocess.run([SER_STREAM, "serve", "--port", port], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"ser-stream: port {port} on 127.0.0.1 is in use; stop what holds it or choose --port"
    )


def test_sigterm_ends_open_streams_cleanly(strict):
    socket, started = hello(strict.ws_url)
    audio = utterances(1, seed=8)
    for start in range(0, audio.size, 1600):
        socket.send(audio[start : start + 1600].tobytes())
        time.sleep(0.06)  # a paced client: under --max-speed
    strict.process.send_signal(signal.SIGTERM)
    records = []
    with pytest.raises(ConnectionClosed):
        while True:
            records.append(json.loads(socket.recv(timeout=30)))
    assert [r["kind"] for r in records][-2:] == ["stream_end", "session_end"]
    assert socket.close_code == 1000
    assert records[-1]["reason"] == "signal"
    assert records[-1]["summary"]["ledger"] == "balanced"
    assert strict.process.wait(30) == 0


def test_requests_over_the_rate_get_429_and_health_stays_open():
    rated = start_service("--rate-limit", "5")
    try:
        codes = [httpx.get(f"{rated.url}/metrics").status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        response = httpx.get(f"{rated.url}/metrics")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert "5 requests a minute" in response.json()["error"]
        with connect(rated.ws_url) as socket:  # a WebSocket is a request too
            refused = json.loads(socket.recv(timeout=10))
            assert "requests a minute" in refused["reason"]
        assert httpx.get(f"{rated.url}/healthz").status_code == 200
    finally:
        assert rated.stop() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-streams", "0"], "--max-streams 0: give a positive whole number"),
        (
            ["--max-streams-per-client", "0"],
            "--max-streams-per-client 0: give a positive whole number",
        ),
        (["--max-speed", "-1"], "--max-speed -1.0: give a positive number"),
        (["--max-upload-mb", "nan"], "--max-upload-mb nan: give a positive number"),
        (["--port", "70000"], "--port 70000: give a port from 0 to 65535"),
        (["--tls-cert", "cert.pem"], "give both --tls-cert and --tls-key, or neither"),
        (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:0"),
    ],
)
def test_wrong_settings_are_one_line_before_anything_starts(flags, message):
    done = subprocess.run(
        [SER_STREAM, "serve", "--port", "0", *flags], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ser-stream: ") and message in last, done.stderr
