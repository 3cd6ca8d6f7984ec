"""How a session ends: SIGTERM, a reader that goes away, a supervisor that stalls."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.faults.helpers import (
    SER_STREAM,
    assert_ledger_holds,
    finish,
    records,
    start_up,
    talk,
    wait_for,
)
from tests.fixtures import SYNTHETIC_SPEECH_VAD


def first_prediction(jsonl):
    return wait_for(lambda: jsonl.exists() and '"prediction"' in jsonl.read_text(), 90)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_drains_and_ends_everything_within_5_s(tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 8), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    first_prediction(jsonl)
    up.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    stderr = finish(up, 30)
    assert time.monotonic() - sent <= 5.0
    assert up.returncode == 0, stderr
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
    """`up` itself stopped for 8 s (a console nobody reads, a swapped-out machine).

    The stages wait for it (backpressure); when it goes on it takes no live stage for a hung
    one, loses nothing, and the ledger balances.
    """
    source, jsonl = talk(tmp_path / "talk.wav", 6), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl)
    try:
        first_prediction(jsonl)
        os.kill(up.pid, signal.SIGSTOP)
        time.sleep(8)
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
