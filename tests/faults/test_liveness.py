"""Liveness means progress, and no stage outlives its supervisor.

A stage whose core never returns keeps heartbeating (the heartbeat runs on the event loop,
the core in a worker thread); it must be found by what it has done, not by its heartbeat,
and replaced. A supervisor killed with SIGKILL must take every stage with it, a stopped
(SIGSTOP) one included, and what its session left in the runtime folder is swept by the next.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from ser_stream import testing
from ser_stream.artifact import default_artifact_dir, load_artifact
from ser_stream.messages import Heartbeat
from ser_stream.testing import alive, children, finish, records, stage_pids, talk, wait_for
from tests.faults.helpers import start_up

onnx = pytest.importorskip("onnx")


def hanging_artifact(folder: Path) -> Path:
    """The shipped artifact with a model that never returns on a real window.

    Its ONNX graph loops 2**62 times when the frames of a window differ (any real window),
    and not at all on the warm-up's constant input, so the stage starts and reports ready.
    """
    from onnx import TensorProto, helper

    shutil.copytree(default_artifact_dir(), folder)
    features = load_artifact(None).analysis.features
    frames, width = features.n_frames, features.n_features
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Identity", ["acc"], ["acc_out"])],
        "spin",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])],
    )  # fmt: skip
    const = helper.make_tensor
    nodes = [
        helper.make_node("ReduceMax", ["features"], ["high"], axes=[1], keepdims=0),
        helper.make_node("ReduceMin", ["features"], ["low"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["high", "low"], ["spread"]),
        helper.make_node("ReduceSum", ["spread"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["varies"]),
        helper.make_node("Cast", ["varies"], ["spin"], to=TensorProto.INT64),
        helper.make_node("Mul", ["spin", "forever"], ["trips"]),
        helper.make_node("Loop", ["trips", "", "zero"], ["acc"], body=body),
        helper.make_node("ReduceMean", ["features"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Slice", ["mean", "starts", "ends", "axes"], ["logits"]),
        helper.make_node("Add", ["logits", "acc"], ["shifted"]),
        helper.make_node("Softmax", ["shifted"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hangs",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", frames, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 8])],
        [const("zero", TensorProto.FLOAT, [], [0.0]),
         const("forever", TensorProto.INT64, [], [2**62]),
         const("starts", TensorProto.INT64, [1], [0]),
         const("ends", TensorProto.INT64, [1], [8]),
         const("axes", TensorProto.INT64, [1], [1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    return folder


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stage_that_heartbeats_but_never_finishes_is_replaced(tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 30), tmp_path / "s.jsonl"
    model = hanging_artifact(tmp_path / "hangs")
    up = start_up(f"file:{source}", jsonl, "--fast", "--model", str(model))
    try:
        (first,) = wait_for(lambda: stage_pids(up.pid, "model"), 60)
        # replaced: another model process, while the first never stopped heartbeating
        wait_for(lambda: stage_pids(up.pid, "model") - {first}, 60)
        up.send_signal(signal.SIGINT)
        stderr = finish(up, 60)
    finally:
        if up.poll() is None:
            up.kill()
    assert "stage hung, replacing it" in stderr and "no progress for" in stderr, stderr
    assert "no heartbeat" not in stderr  # found by its progress, not by its heartbeat
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    stalled = next(e["reason"] for e in events if e["event"] == "stage hung, replacing it")
    back = next((e["down_s"] for e in events if e["event"] == "stage back"), None)
    print(f"\nstuck model found: {stalled}; serving again {back} s later")
    summary = records(jsonl)[-1]["summary"]
    assert summary["restarts"].get("model", 0) >= 1
    assert summary["ledger"] == "balanced", summary  # what it held is counted as lost


def test_heartbeats_say_what_was_done_and_how_long_work_waits():
    from ser_stream.liveness import Progress, stuck

    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    assert progress.report() == {"received": 0, "sent": 0, "oldest_s": 0.0, "stalled_s": 0.0}
    progress.took(3)
    now[0] += 2.0
    progress.sending()
    progress.done_sending(sent=True)
    now[0] += 7.0
    report = progress.report()
    assert report == {"received": 3, "sent": 1, "oldest_s": 9.0, "stalled_s": 7.0}
    assert stuck(report["stalled_s"], downstream_blocked=False)
    assert not stuck(report["stalled_s"], downstream_blocked=True)  # it waits on another
    progress.finished(3)
    assert progress.report()["stalled_s"] == 0.0  # holds nothing: idle is not stuck
    progress.sending()  # a send outside any message (an end of stream at a sweep)
    now[0] += 8.0
    assert progress.report()["stalled_s"] == 8.0
    progress.done_sending(sent=False)  # given up at shutdown: no progress, nothing held
    assert progress.report() == {"received": 3, "sent": 1, "oldest_s": 0.0, "stalled_s": 0.0}
    beat = Heartbeat("vad.0", **report)
    assert beat.stalled_s == 7.0 and beat.received == 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_no_stage_outlives_a_killed_supervisor_and_the_next_sweeps_its_folder(tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 30), tmp_path / "s.jsonl"
    runtime = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: ipc paths are
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    up = start_up(f"file:{source}", jsonl, env=env)
    try:
        testing.wait_for_records(jsonl, kind="prediction", timeout_s=60)
        stages = children(up.pid)
        vad = next(iter(stage_pids(up.pid, "vad")))
        os.kill(vad, signal.SIGSTOP)  # a stopped stage never acts on SIGTERM
        up.kill()
        wait_for(lambda: not any(alive(pid) for pid in stages), 60)
    finally:
        if up.poll() is None:
            up.kill()
        up.wait()
    left = [p.name for p in (runtime / "ser-stream").iterdir() if p.name.startswith("up-")]
    assert left, "the killed session's folder should be there to sweep"
    again = start_up(f"file:{talk(tmp_path / 'short.wav', 1)}", tmp_path / "2.jsonl", env=env)
    finish(again, 90)
    assert again.returncode == 0
    assert not [p for p in (runtime / "ser-stream").iterdir() if p.name in left]
    shutil.rmtree(runtime)
