"""Producers are strangers: none of their messages may stop, starve or end another's stream.

`up` takes audio on a `zmq:` source while a careless or hostile producer sends beside a
well-behaved real-time one: a rate the pipeline cannot use, a message too long to carry,
minutes of audio as fast as the socket takes it, floods of garbage, a second producer on
the same stream id. The well-behaved stream must get every window predicted and end as its
producer ended it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from ser_stream.messages import Audio, EndOfStream, Prediction
from ser_stream.testing import finish, noise, records, voiced, wait_for, wait_for_records
from ser_stream.wire import Envelope, decode, encode
from tests.faults.helpers import assert_ledger_holds, start_up

SPEECH = (np.concatenate([noise(0.5), voiced(2.5), noise(0.8), voiced(2.5), noise(1.0)])
          * 32767).astype(np.int16)  # fmt: skip


def speak_in_real_time(
    endpoint: str, stream: str, pcm: np.ndarray = SPEECH, started: list | None = None
) -> None:
    """A well-behaved producer: 20 ms of audio every 20 ms, then the end of its stream."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    start = time.monotonic()
    if started is not None:
        started.append(start)
    chunk = 320
    for k, at in enumerate(range(0, pcm.size, chunk)):
        piece = pcm[at : at + chunk]
        due = start + (at + piece.size) / 16_000
        time.sleep(max(0.0, due - time.monotonic()))  # pacing: this producer is real time
        body = Audio(piece, 16_000, at / 16_000)
        push.send_multipart(encode(Envelope(stream, k, body, {"produced": time.time_ns()})))
    push.send_multipart(encode(Envelope(stream, k + 1, EndOfStream("eof"))))
    push.close(linger=30_000)
    context.term()


def raw(stream: str, seq: int, rate: int, pcm: np.ndarray) -> list[bytes]:
    header = {"v": 1, "kind": "audio", "stream": stream, "seq": seq, "ts": {},
              "sample_rate": rate, "t_start": 0, "dtype": "int16", "shape": [pcm.size]}  # fmt: skip
    return [json.dumps(header).encode(), pcm.astype("<i2").tobytes()]


def of_stream(found: list[dict], stream: str, kind: str) -> list[dict]:
    return [r for r in found if r.get("stream") == stream and r["kind"] == kind]


def end_of(found: list[dict], stream: str) -> dict:
    (end,) = of_stream(found, stream, "stream_end")
    return end


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_message_too_big_to_carry_is_refused_and_the_next_producer_is_served(tmp_path):
    """Case 1: once resampled, these would exceed what the VAD takes; the capture hung."""
    endpoint = f"ipc://{tmp_path}/in"
    jsonl = tmp_path / "s.jsonl"
    up = start_up(f"zmq:{endpoint}", jsonl, "--streams", "1")
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.connect(endpoint)
        push.send_multipart(raw("one-hertz", 0, 1, np.zeros(1100, np.int16)))
        push.send_multipart(raw("ten-mb", 0, 8_000, np.zeros(5_000_000, np.int16)))
        push.close(linger=30_000)
        speak_in_real_time(endpoint, "good")
        stderr = finish(up, 120)
    finally:
        context.destroy(linger=0)
    assert up.returncode == 0, stderr
    found = records(jsonl)
    reasons = [r["reason"] for r in found if r["kind"] == "error"]
    assert any("one-hertz refused: sample rate 1 Hz is not usable" in r for r in reasons)
    assert any("ten-mb refused: 625.0 s of audio in one message" in r for r in reasons)
    assert end_of(found, "good")["reason"] == "eof"
    summary = end_of(found, "good")["summary"]
    assert summary["predicted"] >= 2 and summary["dropped"] == 0, summary
    assert "Traceback" not in stderr


FLOOD = """
import json, sys, numpy as np, zmq
push = zmq.Context().socket(zmq.PUSH)
push.connect(sys.argv[1])
ten_s = (np.sin(np.arange(160_000) / 7.0) * 3000).astype("<i2").tobytes()
seq = garbage = 0
try:
    while True:
        header = {"v": 1, "kind": "audio", "stream": "flood", "seq": seq, "ts": {},
                  "sample_rate": 16000, "t_start": 0, "dtype": "int16", "shape": [160_000]}
        push.send_multipart([json.dumps(header).encode(), ten_s])
        seq += 1
        for junk in ([b"\\xff not json"], [b'{"v": 1, "kind": "audio"}']):
            push.send_multipart(junk)
            garbage += 1
        if seq % 100 == 0:
            print(seq, garbage, flush=True)
except KeyboardInterrupt:
    pass
"""


def flood(endpoint: str) -> subprocess.Popen:
    """A careless producer, another program: 10 s messages and garbage, as fast as taken.

    It prints how many of each it has sent, every 100 audio messages.
    """
    return subprocess.Popen([sys.executable, "-c", FLOOD, endpoint], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_flooding_producer_cannot_starve_or_end_a_real_time_one(tmp_path):
    """Case 2: a real-time stream beside minutes of audio and garbage sent at once."""
    endpoint = f"ipc://{tmp_path}/in"
    jsonl = tmp_path / "s.jsonl"
    up = start_up(f"zmq:{endpoint}", jsonl, "--streams", "1", "--vad", "webrtc")
    started, seen = [], []
    watcher = threading.Thread(target=watch, args=(f"ipc://{tmp_path}/pub", up, seen))
    flooder = None
    try:
        wait_for(jsonl.exists, 60)  # the sinks open once every stage is up
        watcher.start()
        flooder = flood(endpoint)
        speak_in_real_time(endpoint, "good", started=started)
        stderr = finish(up, 150)
    finally:
        if flooder is not None:
            flooder.send_signal(signal.SIGINT)
            counts = flooder.communicate(timeout=30)[0].split()
        watcher.join()
    assert up.returncode == 0, stderr
    found = records(jsonl)
    good = end_of(found, "good")
    assert good["reason"] == "eof", good  # never ended as silent
    assert_ledger_holds(good["summary"], of_stream(found, "good", "prediction"))
    assert good["summary"]["predicted"] >= 2 and good["summary"]["dropped"] == 0
    assert not [r for r in of_stream(found, "good", "error")]
    sent, garbage = int(counts[-2]), int(counts[-1])
    assert sent * 10 >= 1000 and garbage >= 200, counts  # it did flood: 1,000 s of audio at least
    # The figure for the report: how long after its producer spoke each emotion came.
    delays = [at - started[0] - t_end for at, stream, t_end in seen if stream == "good"]
    print(f"\ngood stream beside a flood: emotions {', '.join(f'{d:.2f}' for d in delays)} s "
          "after the window's last sample was sent")  # fmt: skip


def watch(endpoint: str, up, seen: list) -> None:
    """Note when each prediction reaches a subscriber: (monotonic time, stream, t_end)."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    while up.poll() is None:
        if not sub.poll(200):
            continue
        envelope = decode(sub.recv_multipart())
        if isinstance(envelope.body, Prediction):
            seen.append((time.monotonic(), envelope.stream, envelope.body.t_end))
    sub.close(linger=0)
    context.term()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_second_producer_on_one_stream_id_is_refused_not_merged(tmp_path):
    endpoint = f"ipc://{tmp_path}/in"
    jsonl = tmp_path / "s.jsonl"
    up = start_up(f"zmq:{endpoint}", jsonl, "--streams", "1")
    intruder = threading.Thread(
        target=speak_in_real_time, args=(endpoint, "shared", SPEECH[: 16_000 * 2])
    )
    try:
        first = threading.Thread(target=speak_in_real_time, args=(endpoint, "shared"))
        first.start()
        # the second producer arrives mid-stream: once the first has its first emotion
        wait_for_records(jsonl, kind="prediction", timeout_s=60)
        intruder.start()
        first.join()
        stderr = finish(up, 120)
    finally:
        intruder.join()
    assert up.returncode == 0, stderr
    found = records(jsonl)
    refusals = [r["reason"] for r in of_stream(found, "shared", "error")]
    assert refusals and all("another producer using this stream id" in r for r in refusals)
    summary = end_of(found, "shared")["summary"]
    assert summary["predicted"] >= 2 and summary["ledger"] == "balanced"
