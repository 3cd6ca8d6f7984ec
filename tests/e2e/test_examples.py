"""The examples in examples/ work against a real pipeline: a producer in, two sinks out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.testing import (
    SER_STREAM,
    noise,
    records,
    start_up,
    unix_connections,
    voiced,
    wait_for,
    wait_ready,
)
from tests.fixtures import SYNTHETIC_SPEECH_VAD

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def c_sink() -> Path:
    if shutil.which("cc") is None or not Path("/usr/include/zmq.h").exists():
        pytest.skip("needs a C compiler and libzmq headers (make system-packages installs them)")
    subprocess.run(["make", "-s", "-C", str(EXAMPLES / "c_sink")], check=True, timeout=120)
    return EXAMPLES / "c_sink" / "sink"


def test_producer_feeds_up_and_both_sinks_print_every_prediction(tmp_path, c_sink):
    """python_producer -> up --source zmq: -> python_sink and the C sink see each prediction."""
    audio = np.concatenate(
        [noise(0.5), voiced(2.0, seed=1), noise(0.8, seed=2), voiced(3.0, seed=3), noise(0.8)]
    )
    recording = tmp_path / "talk_44k.wav"
    import soxr

    soundfile.write(recording, soxr.resample(audio, 16_000, 44_100), 44_100, subtype="PCM_16")
    audio_in = f"ipc://{tmp_path}/audio-in"
    published_path = tmp_path / "published"
    published = f"ipc://{published_path}"
    jsonl = tmp_path / "session.jsonl"
    pipeline = start_up(*SYNTHETIC_SPEECH_VAD, "--source", f"zmq:{audio_in}", "--streams", "1",
                        "--publish", published, "--no-stop-on-silence", jsonl=jsonl)  # fmt: skip
    sinks = []
    try:
        sinks.append(
            subprocess.Popen(
                [sys.executable, str(EXAMPLES / "python_sink.py"), published, "--count", "2"],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
        sinks.append(
            subprocess.Popen([str(c_sink), published, "2"], stdout=subprocess.PIPE, text=True)
        )
        wait_ready(pipeline)
        wait_for(lambda: unix_connections(published_path) == len(sinks), 60)  # both subscribed
        subprocess.run(
            [sys.executable, str(EXAMPLES / "python_producer.py"), audio_in, str(recording),
             "--fast"],
            check=True, timeout=120,
        )  # fmt: skip
        _, stderr = pipeline.communicate(timeout=180)
        assert pipeline.returncode == 0, stderr
        outputs = [sink.communicate(timeout=60)[0] for sink in sinks]
    finally:
        for process in [pipeline, *sinks]:
            if process.poll() is None:
                process.kill()
                process.wait()
    found = records(jsonl)
    predictions = records(jsonl, "prediction")
    assert len(predictions) >= 2 and found[-1]["reason"] == "eof"
    for output in outputs:
        lines = [line for line in output.splitlines() if line.startswith("producer ")]
        assert len(lines) == 2, output
        for line, record in zip(lines, predictions[:2], strict=True):
            assert record["label"] in line and f"{record['t_start']:.2f}" in line


def test_a_malformed_producer_message_is_skipped_reported_and_counted(tmp_path):
    """Garbage from someone's producer: one error record, the session goes on and counts it."""
    import zmq

    audio_in = f"ipc://{tmp_path}/audio-in"
    jsonl = tmp_path / "session.jsonl"
    pipeline = start_up(*SYNTHETIC_SPEECH_VAD, "--source", f"zmq:{audio_in}", "--streams", "1",
                        "--no-stop-on-silence", jsonl=jsonl)  # fmt: skip
    context = zmq.Context()
    try:
        wait_ready(pipeline)
        push = context.socket(zmq.PUSH)
        push.connect(audio_in)
        push.send_multipart([b'{"v": 1, "kind": "audio", "stream": "p"}', b"\x00\x01"])
        pcm = np.round(np.concatenate([noise(0.5), voiced(2.0), noise(0.5)]) * 32767).astype("<i2")
        header = {"v": 1, "kind": "audio", "stream": "p", "seq": 0, "ts": {}, "sample_rate": 16_000,
                  "t_start": 0.0, "dtype": "int16", "shape": [pcm.size]}  # fmt: skip
        push.send_multipart([json.dumps(header).encode(), pcm.tobytes()])
        end = {"v": 1, "kind": "end_of_stream", "stream": "p", "seq": 1, "ts": {}, "reason": "eof"}
        push.send_multipart([json.dumps(end).encode()])
        _, stderr = pipeline.communicate(timeout=180)
    finally:
        context.destroy(linger=2000)
        if pipeline.poll() is None:
            pipeline.kill()
    assert pipeline.returncode == 0, stderr
    found = records(jsonl)
    errors = records(jsonl, "error")
    assert len(errors) == 1 and errors[0]["stage"] == "capture" and "seq" in errors[0]["reason"]
    assert found[-1]["summary"]["errors"] == 1
    summary = found[-1]["summary"]
    assert summary["predicted"] == summary["windows"] >= 1 and summary["dropped"] == 0


def test_tap_prints_what_a_running_pipeline_publishes(tmp_path):
    """`ser-stream tap ENDPOINT --once` prints the records as JSON lines until the end of stream."""
    audio = np.concatenate([noise(0.5), voiced(2.0, seed=1), noise(0.6, seed=2)])
    source = tmp_path / "talk.wav"
    soundfile.write(source, audio, 16_000, subtype="PCM_16")
    published = f"ipc://{tmp_path}/pub"
    pipeline = start_up(*SYNTHETIC_SPEECH_VAD, "--source", f"file:{source}", "--publish",
                        published, "--sink", "console")  # fmt: skip
    tap = subprocess.Popen(
        [SER_STREAM, "tap", published, "--once"], stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = tap.communicate(timeout=180)
        pipeline.communicate(timeout=60)
    finally:
        for process in (pipeline, tap):
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    assert tap.returncode == 0
    # One utterance of about 2 s: judged on its first 0.8 s, then on more of it.
    spans = [(r["t_start"], r["t_end"]) for r in lines if r["kind"] == "prediction"]
    assert len(spans) >= 2 and len({start for start, _ in spans}) == 1
    assert spans[0][1] - spans[0][0] == pytest.approx(0.8, abs=0.01)
    assert [end for _, end in spans] == sorted({end for _, end in spans})
    assert lines[-1] == {"kind": "end_of_stream", "stream": "stream-1", "reason": "eof"}
    assert {"speech_start", "speech_end"} <= {r["event"] for r in lines if r["kind"] == "event"}
