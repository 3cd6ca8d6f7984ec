"""WebSocket streams through a real `ser-stream serve`: each client one stream of the pipeline."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ser_stream.testing import wait_for
from tests.web.conftest import TOKEN, stream_through, utterances

pytestmark = pytest.mark.slow


def url_of(service) -> str:
    return f"{service.ws_url}?token={TOKEN}"


def kinds(records: list[dict]) -> list[str]:
    return [record["kind"] for record in records]


def test_a_multi_utterance_stream_gets_its_records_and_its_end(service):
    records, code = stream_through(url_of(service), utterances(3, seed=1))
    assert code == 1000
    assert records[0]["kind"] == "stream_start" and records[0]["sample_rate"] == 16_000
    stream = records[0]["stream"]
    assert all(record.get("stream", stream) == stream for record in records)
    assert kinds(records)[-2:] == ["stream_end", "session_end"]
    starts = [r for r in records if r["kind"] == "event" and r["event"] == "speech_start"]
    assert len(starts) == 3
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert {p["t_start"] for p in predictions} >= {round(s["t"], 3) for s in starts}
    for prediction in predictions:
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    end = records[-1]
    assert end["reason"] == "eof"
    summary = end["summary"]
    assert summary["streams"] == 1 and summary["ledger"] == "balanced"
    assert summary["windows"] == summary["predicted"] == len(predictions)
    assert summary["dominant"] in predictions[0]["probabilities"]


def test_another_rate_is_resampled(service):
    import numpy as np
    import soxr

    audio = utterances(1, seed=2).astype(np.float32) / 32768
    at_48k = np.round(soxr.resample(audio, 16_000, 48_000) * 32767).astype(np.int16)
    records, code = stream_through(url_of(service), at_48k, rate=48_000)
    assert code == 1000
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert predictions
    assert max(p["t_end"] for p in predictions) <= at_48k.size / 48_000 + 0.5


def test_a_bad_first_message_is_refused_with_the_reason(service):
    for hello in ["hello", json.dumps({"sample_rate": "16k"}), json.dumps({"sample_rate": 400})]:
        with connect(url_of(service)) as socket:
            socket.send(hello)
            record = json.loads(socket.recv(timeout=10))
            assert record["kind"] == "error" and "sample_rate" in record["reason"]
            with pytest.raises(ConnectionClosed):
                socket.recv(timeout=10)
            assert socket.close_code == 1003


def test_garbage_mid_stream_is_skipped_and_the_stream_goes_on(service):
    audio = utterances(1, seed=3)
    with connect(url_of(service)) as socket:
        socket.send(json.dumps({"sample_rate": 16_000}))
        stream = json.loads(socket.recv(timeout=10))["stream"]
        socket.send(audio[:8000].tobytes())
        socket.send(b"\x01\x02\x03")  # an odd number of bytes: not 16-bit samples
        socket.send("not json")
        for start in range(8000, audio.size, 1600):
            socket.send(audio[start : start + 1600].tobytes())
            time.sleep(0.03)  # a paced client
        socket.send(json.dumps({"type": "end"}))
        records = []
        while not records or records[-1]["kind"] != "session_end":
            records.append(json.loads(socket.recv(timeout=60)))
    errors = [r for r in records if r["kind"] == "error"]
    assert len(errors) == 2
    assert all(e["stream"] == stream and e["stage"] == "gateway" for e in errors)
    assert "odd number of bytes" in errors[0]["reason"]
    assert "binary messages" in errors[1]["reason"]
    assert any(r["kind"] == "prediction" for r in records)


def test_twenty_clients_at_once_each_get_their_own(service):
    clients = 20
    results: dict[int, tuple[list[dict], int | None]] = {}
    failures: list[BaseException] = []

    def client(k: int) -> None:
        try:
            audio = utterances(1 + k % 3, seed=10 + k)
            results[k] = stream_through(url_of(service), audio, speed=1.5, timeout=180)
        except BaseException as exc:  # reported below, with the client's number
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not failures, failures
    streams = set()
    for k, (records, code) in sorted(results.items()):
        assert code == 1000, k
        stream = records[0]["stream"]
        streams.add(stream)
        assert all(r.get("stream", stream) == stream for r in records), k
        starts = [r for r in records if r["kind"] == "event" and r["event"] == "speech_start"]
        assert len(starts) == 1 + k % 3, k
        summary = records[-1]["summary"]
        assert records[-1]["kind"] == "session_end" and summary["ledger"] == "balanced", k
        assert summary["predicted"] == summary["windows"] > 0, k
    assert len(streams) == clients


def open_streams(service) -> dict[str, float]:
    text = httpx.get(f"{service.url}/metrics", headers=service.auth).text
    for family in text_string_to_metric_families(text):
        if family.name == "ser_stream_stage_open_streams":
            return {s.labels["process"]: s.value for s in family.samples}
    return {}


def disconnects(service) -> float:
    text = httpx.get(f"{service.url}/metrics", headers=service.auth).text
    for family in text_string_to_metric_families(text):
        if family.name == "ser_stream_websocket_disconnects":
            return family.samples[0].value
    return 0.0


def test_a_client_that_leaves_mid_stream_frees_its_state_in_every_stage(service):
    before = disconnects(service)
    audio = utterances(3, seed=4, gap_s=0.3)
    socket = connect(url_of(service), legacy=True)
    socket.send(json.dumps({"sample_rate": 16_000}))
    socket.recv(timeout=10)
    for start in range(0, audio.size // 2, 1600):  # mid-utterance, then gone
        socket.send(audio[start : start + 1600].tobytes())
        time.sleep(0.05)  # a paced client
    stages = {"capture.0", "vad", "denoise", "features"}

    def holding() -> set[str]:
        return stages & {p for p, n in open_streams(service).items() if n}

    wait_for(lambda: holding() == stages, 60)  # every stage holds the stream's state
    socket.socket.close()  # no close handshake: the client just vanishes
    wait_for(lambda: not any(open_streams(service).values()) and disconnects(service) > before, 60)
    assert disconnects(service) == before + 1
    assert httpx.get(f"{service.url}/healthz").json()["streams"] == 0


def test_the_example_client_prints_the_session(service, tmp_path):
    import subprocess
    import sys

    import soundfile

    path = tmp_path / "talk.wav"
    soundfile.write(path, utterances(2, seed=9), 16_000)
    example = Path(__file__).parents[2] / "examples" / "web_client.py"
    done = subprocess.run(
        [sys.executable, str(example), str(path), "--url", service.ws_url, "--speed", "3"],
        env={**os.environ, "SER_STREAM_TOKEN": TOKEN},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records[0]["kind"] == "stream_start"
    assert records[-1]["kind"] == "session_end" and records[-1]["reason"] == "eof"
    assert any(record["kind"] == "prediction" for record in records)


def test_a_message_over_the_size_limit_closes_with_1009(service):
    with connect(url_of(service), max_size=None) as socket:
        socket.send(json.dumps({"sample_rate": 16_000}))
        socket.recv(timeout=10)
        try:
            socket.send(b"\0" * (1024 * 1024 + 2))
            socket.recv(timeout=10)
        except ConnectionClosed:
            pass
        else:
            pytest.fail("the server took a message over its limit")
    assert socket.close_code == 1009


@pytest.mark.parametrize(
    ("query", "headers", "reason"),
    [
        ("", {}, "missing or wrong token"),
        ("?token=wrong", {}, "missing or wrong token"),
        (f"?token={TOKEN}", {"Origin": "http://evil.example"}, "http://evil.example are refused"),
    ],
    ids=["no-token", "wrong-token", "foreign-page"],
)
def test_a_stream_without_the_right_to_one_is_refused(service, query, headers, reason):
    with connect(f"{service.ws_url}{query}", additional_headers=headers) as socket:
        record = json.loads(socket.recv(timeout=10))
        assert record["kind"] == "error" and reason in record["reason"]
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=10)
    assert socket.close_code == 1008


def test_the_servers_own_page_may_stream(service):
    host = service.url.split("://", 1)[1]
    origin = {"Origin": f"http://{host}"}
    with connect(url_of(service), additional_headers=origin) as socket:
        socket.send(json.dumps({"sample_rate": 16_000}))
        assert json.loads(socket.recv(timeout=10))["kind"] == "stream_start"
