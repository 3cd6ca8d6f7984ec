"""`ser-stream up` under failure: a killed stage, a stalled model, a subscriber that never reads."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import soundfile
import zmq

from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import (
    alive,
    noise,
    records,
    stage_pid,
    talk,
    voiced,
    wait_for,
    wait_for_records,
)
from tests.faults.helpers import start_up


def session(jsonl: Path) -> tuple[list[dict], dict]:
    found = records(jsonl)
    assert found[-1]["kind"] == "session_end"
    return records(jsonl, "prediction"), found[-1]


def test_a_killed_stage_is_restarted_and_the_loss_is_accounted(tmp_path):
    """SIGKILL the features stage mid-stream: it is restarted, the session ends, losses count."""
    source, jsonl = talk(tmp_path / "long.wav", 6, f0_step=20), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=60)
        os.kill(stage_pid(up.pid, "features"), signal.SIGKILL)
        _, stderr = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    assert "stage died, restarting" in stderr
    predictions, end = session(jsonl)
    summary = end["summary"]
    assert end["reason"] == "eof" and summary["restarts"] == {"features": 1}
    assert summary["windows"] == summary["predicted"] + summary["dropped"] == 6
    assert summary["predicted"] == len(predictions)
    assert any(p["t_start"] > 10.0 for p in predictions), "predictions continue after the restart"
    if summary["dropped"]:
        assert summary["dropped_reasons"] == {"lost_in_stage_failure": summary["dropped"]}


def test_a_stalled_model_stage_loses_nothing_from_a_file(tmp_path):
    """The model stops for 1.5 s (under the 3 s that make it hung): the file source waits,
    every window is still predicted."""
    source, jsonl = talk(tmp_path / "talk.wav", 5, f0_step=20), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl, "--fast")
    try:
        model = stage_pid(up.pid, "model")
        wait_for_records(jsonl, kind="prediction", timeout_s=60)
        os.kill(model, signal.SIGSTOP)
        time.sleep(1.5)  # the fault's length, not a wait for anything
        os.kill(model, signal.SIGCONT)
        _, stderr = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    predictions, end = session(jsonl)
    assert end["summary"]["windows"] == len(predictions) == 5
    assert end["summary"]["dropped"] == 0 and end["summary"]["restarts"] == {}


def test_a_subscriber_that_never_reads_does_not_stall_the_pipeline(tmp_path):
    """A SUB with a tiny queue that never reads: the session still completes in full."""
    source, jsonl = talk(tmp_path / "talk.wav", 4, f0_step=20), tmp_path / "s.jsonl"
    published = f"ipc://{tmp_path}/pub"
    context = zmq.Context()
    lazy = context.socket(zmq.SUB)
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.setsockopt(zmq.SUBSCRIBE, b"")
    lazy.connect(published)
    try:
        up = start_up(f"file:{source}", jsonl, "--fast", "--publish", published)
        _, stderr = up.communicate(timeout=120)
    finally:
        context.destroy(linger=0)
    assert up.returncode == 0, stderr
    predictions, end = session(jsonl)
    assert end["summary"]["windows"] == len(predictions) == 4


def test_stages_end_when_the_supervisor_is_killed(tmp_path):
    """SIGKILL of `up` itself leaves no stage process behind."""
    source, jsonl = talk(tmp_path / "talk.wav", 4, f0_step=20), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    children = [stage_pid(up.pid, name) for name in CHAIN]
    up.kill()
    up.wait()
    wait_for(lambda: not any(alive(pid) for pid in children), 60)


def test_a_file_that_is_not_audio_is_refused_before_anything_starts(tmp_path):
    """One line that says what to do, status 2, and no stage process ever started."""
    source = tmp_path / "notes.wav"
    source.write_bytes(b"this is not audio at all" * 100)
    up = start_up(f"file:{source}", tmp_path / "s.jsonl", log_level=None)
    _, stderr = up.communicate(timeout=60)
    assert up.returncode == 2
    assert stderr.strip().splitlines() == [
        f"ser-stream: {source}: cannot decode audio (Error opening '{source}': Format not "
        "recognised.); pass a valid wav, flac, ogg or mp3 file"
    ]
    assert not (tmp_path / "s.jsonl").exists()


def test_a_file_that_fails_mid_way_is_refused_before_anything_starts(tmp_path):
    """NaN samples 2 s into a file: found by decoding it to its end first; one line, exit 2."""
    audio = np.concatenate([noise(2.0), voiced(2.0)]).astype(np.float32)
    audio[40_000:40_100] = np.nan
    source = tmp_path / "broken.wav"
    soundfile.write(source, audio, 16_000, subtype="FLOAT")
    jsonl = tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl, "--fast", log_level=None)
    _, stderr = up.communicate(timeout=120)
    assert up.returncode == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert "NaN or infinite samples" in line and "ready" not in stderr
    assert not jsonl.exists()  # no session began
