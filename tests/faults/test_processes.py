"""Processes that die, hang or never come up: real `ser-stream up` sessions, real signals."""

from __future__ import annotations

import os
import signal
import textwrap

import pytest

from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import (
    alive,
    children,
    finish,
    records,
    stage_pids,
    talk,
    wait_for,
    wait_for_log,
    wait_for_records,
)
from tests.faults.helpers import assert_ledger_holds, start_up

STAGES = ("capture", *CHAIN)
KILLS = 5


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_of_each_stage_five_times(tmp_path, stage):
    """Each kill: replaced and back in service, the other stages untouched, the ledger balanced."""
    # long enough that every kill and its replacement's return fall within the stream
    source, jsonl = talk(tmp_path / "talk.wav", 14), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=90)
        names = [name for name in STAGES if name != stage]
        others = {name: stage_pids(up.pid, name) for name in names}
        label = "capture.0" if stage == "capture" else stage
        for _ in range(KILLS):
            (victim,) = wait_for(lambda: stage_pids(up.pid, stage), 60)
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda v=victim: stage_pids(up.pid, stage) - {v}, 60)
            # the replacement's first heartbeat: it serves before the next kill
            wait_for_log(up, "stage back", stage=label)
        for name, pids in others.items():  # none replaced (one may have ended with its input)
            assert stage_pids(up.pid, name) <= pids, name
        stderr = finish(up)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    session = records(jsonl)
    end = session[-1]
    assert end["kind"] == "session_end" and end["reason"] == "eof"
    assert end["summary"]["restarts"] == {label: KILLS}
    assert_ledger_holds(end["summary"], [r for r in session if r["kind"] == "prediction"])
    assert end["summary"]["predicted"] >= 3, "the stream went on after the kills"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stopped_stage_is_found_and_replaced(tmp_path):
    """SIGSTOP of a stage: its heartbeats stop; the supervisor kills and replaces it."""
    source, jsonl = talk(tmp_path / "talk.wav", 5), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=90)
        (denoise,) = stage_pids(up.pid, "denoise")
        os.kill(denoise, signal.SIGSTOP)
        said = "".join(wait_for_log(up, "stage hung, replacing it", stage="denoise"))
        wait_for(lambda: stage_pids(up.pid, "denoise") - {denoise}, 60)
        stderr = said + finish(up)
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
    import os, sys
    argv = sys.orig_argv  # all of it: sys.argv is not complete yet
    if "stage" in argv and argv[argv.index("stage") + 1] == "features":
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
    up = start_up(f"file:{source}", jsonl, env=env)
    pids: set[int] = set()

    def ended() -> bool:
        pids.update(children(up.pid))
        return up.poll() is not None

    wait_for(ended, 90, step_s=0.2)
    stderr = finish(up, 10)
    assert up.returncode == 3
    lines = [line for line in stderr.splitlines() if line.startswith("ser-stream:")]
    assert lines == [
        "ser-stream: supervision failure: stage features failed 6 times within 60 s (last: exit "
        "70); the pipeline stopped. The input is not at fault: read the stage's log lines above "
        "for why it failed; `ser-stream --log-level debug up ...` shows more"
    ], stderr
    assert [pid for pid in pids if alive(pid)] == [], "orphans left behind"
