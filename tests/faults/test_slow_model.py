"""A model slower than its input: queues stay bounded, the file waits, nothing is lost unsaid.

The model stage runs 2% of the time (stopped 0.9 s of each 0.92 s, under the 3 s that make
it hung) while a 4-minute file goes in as fast as the stages allow: the model becomes the
slowest stage by far, at a fraction of the input rate.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ser_stream.testing import (
    children,
    finish,
    records,
    stage_pids,
    status_mb,
    talk,
    wait_for,
    wait_for_records,
)
from tests.faults.helpers import assert_ledger_holds, start_up


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_slow_model_backs_up_the_pipeline_without_growing_it(tmp_path):
    source, jsonl = talk(tmp_path / "long.wav", 80), tmp_path / "s.jsonl"  # 4 min, 80 windows
    up = start_up(f"file:{source}", jsonl, "--fast")
    stop = threading.Event()
    peaks: dict[int, float] = {}
    first: dict[int, float] = {}
    try:
        (model,) = wait_for(lambda: stage_pids(up.pid, "model"), 60)
        wait_for_records(jsonl, kind="prediction", timeout_s=60)

        def throttle() -> None:  # the fault itself: stopped 0.9 s of each 0.92 s
            try:
                while not stop.is_set():
                    os.kill(model, signal.SIGSTOP)
                    time.sleep(0.9)
                    os.kill(model, signal.SIGCONT)
                    time.sleep(0.02)
            except ProcessLookupError:  # the session ended
                pass

        throttler = threading.Thread(target=throttle)
        throttler.start()

        def sample_until_the_end() -> bool:
            for pid in [*children(up.pid), up.pid]:
                now = status_mb(pid)
                if now is not None:
                    first.setdefault(pid, now)
                    peaks[pid] = max(peaks.get(pid, 0.0), now)
            return up.poll() is not None

        wait_for(sample_until_the_end, 230, step_s=0.5)
        stop.set()
        throttler.join()
        stderr = finish(up)
    finally:
        stop.set()
        try:
            os.kill(model, signal.SIGCONT)
        except (ProcessLookupError, NameError):
            pass
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    session = records(jsonl)
    summary = session[-1]["summary"]
    assert summary["restarts"] == {}, "a slow stage is not a hung one"
    assert summary["dropped"] == 0 and summary["windows"] == 80, summary
    assert_ledger_holds(summary, [r for r in session if r["kind"] == "prediction"])
    growth = {pid: round(peaks[pid] - first[pid], 1) for pid in peaks}
    assert max(growth.values()) < 60, growth  # queues bounded by their high-water marks
