"""Processes that die, hang or never come up: real `ser-stream up` sessions, real signals."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pytest

from tests.faults.helpers import (
    assert_ledger_holds,
    children,
    finish,
    records,
    stage_pids,
    start_up,
    talk,
    wait_for,
)

STAGES = ("capture", "vad", "denoise", "features", "model")
KILLS = 5
RESTART_WITHIN_S = 2.0


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_of_each_stage_five_times(tmp_path, stage):
    """Each kill: replaced within 2 s, the other stages untouched, the ledger balanced."""
    source, jsonl = talk(tmp_path / "talk.wav", 7), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        wait_for(lambda: jsonl.exists() and '"prediction"' in jsonl.read_text(), 90)
        names = [name for name in STAGES if name != stage]
        others = {name: stage_pids(up.pid, name) for name in names}
        for _ in range(KILLS):
            (victim,) = wait_for(lambda: stage_pids(up.pid, stage), 10)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda v=victim: stage_pids(up.pid, stage) - {v}, RESTART_WITHIN_S, 0.01)
            assert time.monotonic() - killed <= RESTART_WITHIN_S
            time.sleep(1.0)  # let it serve a little before the next kill
        assert {name: stage_pids(up.pid, name) for name in others} == others
        stderr = finish(up)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    session = records(jsonl)
    end = session[-1]
    assert end["kind"] == "session_end" and end["reason"] == "eof"
    label = "capture.0" if stage == "capture" else stage
    assert end["summary"]["restarts"] == {label: KILLS}
    assert_ledger_holds(end["summary"], [r for r in session if r["kind"] == "prediction"])
    assert end["summary"]["predicted"] >= 3, "the stream went on after the kills"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stopped_stage_is_found_and_replaced_within_5_s(tmp_path):
    """SIGSTOP of a stage: its heartbeats stop; the supervisor kills and replaces it."""
    source, jsonl = talk(tmp_path / "talk.wav", 5), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        wait_for(lambda: jsonl.exists() and '"prediction"' in jsonl.read_text(), 90)
        (denoise,) = stage_pids(up.pid, "denoise")
        os.kill(denoise, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(lambda: stage_pids(up.pid, "denoise") - {denoise}, 5.0, 0.02)
        assert time.monotonic() - stopped <= 5.0
        stderr = finish(up)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    assert "stage hung, replacing it" in stderr
    session = records(jsonl)
    end = session[-1]
    assert end["summary"]["restarts"] == {"denoise": 1}
    assert_ledger_holds(end["summary"], [r for r in session if r["kind"] == "prediction"])


CRASH_AT_START = """
    import os
    with open("/proc/self/cmdline", "rb") as handle:
        argv = handle.read().split(b"\\0")
    if b"stage" in argv and argv[argv.index(b"stage") + 1] == b"features":
        os._exit(70)  # a stage that breaks before it can say anything
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stage_that_crashes_at_start_up_stops_the_pipeline_cleanly(tmp_path):
    """Restarted with back-off until the intensity limit; one clear message; no orphans."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(CRASH_AT_START))
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    source, jsonl = talk(tmp_path / "talk.wav", 2), tmp_path / "s.jsonl"
    started = time.monotonic()
    up = start_up(f"file:{source}", jsonl, env=env)
    pids: set[int] = set()
    while up.poll() is None and time.monotonic() - started < 90:
        pids |= set(children(up.pid))
        time.sleep(0.2)
    stderr = finish(up, 10)
    assert up.returncode == 3
    lines = [line for line in stderr.splitlines() if line.startswith("ser-stream:")]
    assert lines == [
        "ser-stream: supervision failure: stage features failed 6 times within 60 s (last: exit "
        "70); the pipeline stopped. The input is not at fault: read the stage's log lines above "
        "for why it failed; `ser-stream --log-level debug up ...` shows more"
    ], stderr
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")
             and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]  # fmt: skip
    assert alive == [], "orphans left behind"
