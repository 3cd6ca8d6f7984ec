"""The whole chain as separate processes over ipc:// gives the in-process predictions."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zmq

from ser_stream.artifact import load_artifact
from ser_stream.messages import EndOfStream, Heartbeat, Prediction
from ser_stream.predict import Predictor, with_vad_engine
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import SER_STREAM, noise, voiced
from ser_stream.wire import decode


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [SER_STREAM, "--log-level", "info", "stage", *args], stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def recording(tmp_path) -> Path:
    audio = np.concatenate(
        [
            noise(0.6),
            voiced(2.0, seed=1),
            noise(0.9, seed=2),
            voiced(4.5, f0=210, seed=3),
            noise(0.7, seed=4),
        ]
    )
    path = tmp_path / "talk.wav"
    soundfile.write(path, audio, 16_000, subtype="PCM_16")
    return path


def test_capture_to_model_processes_match_the_batch_path(tmp_path, recording):
    """file -> capture -> vad -> denoise -> features -> model, each a process: same windows."""
    endpoint = {name: f"ipc://{tmp_path}/{name}" for name in ("capture", *CHAIN)}
    processes = []
    context = zmq.Context()
    try:
        upstream = "capture"
        for name in CHAIN:
            extra = ["--publish"] if name == "model" else []
            vad = ["--set", "stop_on_silence_s=null", "--set", 'engine="webrtc"',
                   "--set", "first_window_s=0"]  # fmt: skip
            extra += vad if name == "vad" else []
            processes.append(
                start(name, "--in", endpoint[upstream], "--out", endpoint[name], *extra)
            )
            upstream = name
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint["model"])
        assert sub.poll(60_000), "the model stage published nothing (not even a heartbeat)"
        assert isinstance(decode(sub.recv_multipart()).body, Heartbeat)
        capture = start(
            "capture",
            "--source",
            f"file:{recording}",
            "--fast",
            "--stream",
            "t1",
            "--out",
            endpoint["capture"],
        )
        processes.append(capture)

        predictions = []
        while True:
            assert sub.poll(60_000), "no end of stream from the model stage"
            envelope = decode(sub.recv_multipart())
            if isinstance(envelope.body, Prediction):
                assert envelope.stream == "t1"
                assert {"capture", *CHAIN} <= set(envelope.timestamps)
                predictions.append(envelope.body)
            elif isinstance(envelope.body, EndOfStream):
                assert envelope.body.reason == "eof"
                break
        assert capture.wait(timeout=60) == 0

        audio, _ = soundfile.read(recording, dtype="int16")
        artifact = with_vad_engine(load_artifact(), "webrtc")  # as the VAD process was told
        expected = Predictor(artifact).predict_samples(audio.astype(np.float32) / 32768).windows
        assert len(predictions) == len(expected) >= 3
        for got, want in zip(predictions, expected, strict=True):
            assert got.label == want["label"]
            assert np.allclose(got.probabilities, list(want["probabilities"].values()), atol=1e-5)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        context.destroy(linger=0)
    assert [p.returncode for p in processes] == [0] * len(processes), [
        p.stderr.read() for p in processes
    ]
