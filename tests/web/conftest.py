"""A real `ser-stream serve` on loopback, its stage processes included, for the web tests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from ser_stream.testing import SER_STREAM, noise, voiced, wait_for

TOKEN = "test-token-3f9a"


@dataclass
class Service:
    """A running `ser-stream serve` process and where it listens."""

    process: subprocess.Popen
    url: str = ""
    token: str | None = None
    stderr: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/stream"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def start_service(*args: str, token: str | None = None, timeout: float = 120) -> Service:
    """Start `ser-stream serve` on a free port; return once it says it is ready."""
    command = [SER_STREAM, "serve", "--port", "0", "--vad", "webrtc", *args]
    if token:
        command += ["--token", token]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    service = Service(process, token=token)
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            service.stderr.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                service.url = found.group(1)
            if "ready:" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            service.stop()
            pytest.fail("serve did not become ready:\n" + "".join(service.stderr))
    return service


@pytest.fixture(scope="session")
def service():
    """One service for most tests: a token, a 2 MB upload limit, room for 24 streams.

    Every test connects from 127.0.0.1: all 24 streams may be that one address's.
    """
    running = start_service(
        "--max-upload-mb", "2", "--max-streams", "24", "--max-streams-per-client", "24",
        "--rate-limit", "100000", token=TOKEN,
    )  # fmt: skip
    yield running
    assert running.stop() == 0, "".join(running.stderr)


def hello(url: str, **connect_options):
    """Open a stream held across a test: the socket, and the server's first record.

    ``connect_options`` go to ``websockets``' ``connect`` (``source_address=("127.0.0.2", 0)``
    connects from another loopback address).
    """
    from websockets.sync.client import connect

    socket = connect(url, legacy=True, **connect_options)  # held open across the test
    socket.send(json.dumps({"sample_rate": 16_000}))
    return socket, json.loads(socket.recv(timeout=10))


def wait_for_free_slots(service: Service, *, at_most: int = 0) -> None:
    """Wait until at most ``at_most`` streams are open (``/healthz``)."""
    import httpx

    wait_for(lambda: httpx.get(f"{service.url}/healthz").json()["streams"] <= at_most, 60, 0.1)


def utterances(count: int, *, seed: int = 0, gap_s: float = 0.8) -> np.ndarray:
    """``count`` synthetic utterances of 2-3 s over room tone, as 16-bit samples at 16 kHz."""
    pieces = [noise(0.5, seed=seed)]
    for k in range(count):
        pieces += [
            voiced(2.0 + 0.5 * (k % 3), f0=140 + 15 * (seed % 7) + 10 * k, seed=seed * 31 + k),
            noise(gap_s, seed=seed * 31 + k + 1),
        ]
    audio = np.concatenate(pieces)
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def stream_through(
    url: str,
    audio: np.ndarray,
    *,
    rate: int = 16_000,
    speed: float = 2.0,
    chunk_s: float = 0.1,
    end: bool = True,
    timeout: float = 120,
    **connect_options,
) -> tuple[list[dict], int | None]:
    """Stream ``audio`` over a WebSocket at ``speed`` x real time: its records, the close code.

    ``connect_options`` go to ``websockets``' ``connect``, as for :func:`hello`.
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    records: list[dict] = []
    with connect(url, open_timeout=30, close_timeout=10, **connect_options) as socket:
        socket.send(json.dumps({"sample_rate": rate}))
        step = int(rate * chunk_s)
        for start in range(0, audio.size, step):
            socket.send(audio[start : start + step].tobytes())
            time.sleep(chunk_s / speed)
        if end:
            socket.send(json.dumps({"type": "end"}))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                records.append(json.loads(socket.recv(timeout=deadline - time.monotonic())))
                if records[-1]["kind"] == "session_end":
                    break
            socket.recv(timeout=10)  # the server closes after the session_end
        except ConnectionClosed:
            pass
        code = socket.close_code
    return records, code
