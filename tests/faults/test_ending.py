"""How a session ends: SIGTERM, a reader that goes away, a supervisor that stalls."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from ser_stream.testing import (
    SER_STREAM,
    alive,
    children,
    finish,
    records,
    talk,
    wait_for_records,
)
from tests.faults.helpers import assert_ledger_holds, start_up
from tests.fixtures import SYNTHETIC_SPEECH_VAD

STALL_S = 8.0
"""How long the supervisor stays stopped: more than twice the 3 s after which a silent stage
counts as hung, so a supervisor that judged by the clock alone would replace them all."""


def first_prediction(jsonl):
    return wait_for_records(jsonl, kind="prediction", timeout_s=90)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_drains_and_ends_everything(tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 8), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    first_prediction(jsonl)
    stages = children(up.pid)
    up.send_signal(signal.SIGTERM)
    stderr = finish(up, 60)
    assert up.returncode == 0, stderr
    assert [pid for pid in stages if alive(pid)] == [], "a stage outlived the session"
    session = records(jsonl)
    assert session[-1]["kind"] == "session_end" and session[-1]["reason"] == "signal"
    assert_ledger_holds(session[-1]["summary"], [r for r in session if r["kind"] == "prediction"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_up_piped_into_head_ends_quietly(tmp_path):
    """`ser-stream up | head -2`: no traceback, no complaint, status 0, nothing left running."""
    source = talk(tmp_path / "talk.wav", 6)
    command = (
        f"{SER_STREAM} up {' '.join(SYNTHETIC_SPEECH_VAD)} --source file:{source} --fast "
        f"--publish ipc://{tmp_path}/pub | head -2; echo status=${{PIPESTATUS[0]}} >&2"
    )
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=90, check=True
    )
    assert len(done.stdout.splitlines()) == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("ser-stream: ready")]
    assert lines == ["status=0"], done.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stalled_supervisor_neither_hangs_nor_lies(tmp_path):
    """`up` itself stopped for ``STALL_S`` (a console nobody reads, a swapped-out machine).

    The stages wait for it (backpressure); when it goes on it takes no live stage for a hung
    one, loses nothing, and the ledger balances.
    """
    source, jsonl = talk(tmp_path / "talk.wav", 6), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        first_prediction(jsonl)
        os.kill(up.pid, signal.SIGSTOP)
        time.sleep(STALL_S)  # the fault's length, not a wait for anything
        os.kill(up.pid, signal.SIGCONT)
        stderr = finish(up)
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGCONT)
            up.kill()
    assert up.returncode == 0, stderr
    assert "hung" not in stderr
    session = records(jsonl)
    summary = session[-1]["summary"]
    assert session[-1]["reason"] == "eof" and summary["restarts"] == {}
    assert summary["dropped"] == 0 and summary["windows"] == 6
    assert_ledger_holds(summary, [r for r in session if r["kind"] == "prediction"])
