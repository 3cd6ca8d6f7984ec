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
from pathlib import Path

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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
        wait_for(lambda: jsonl.exists() and '"prediction"' in jsonl.read_text(), 60)

        def throttle() -> None:
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
        while up.poll() is None:
            for pid in [*children(up.pid), up.pid]:
                try:
                    now = rss_mb(pid)
                except OSError:
                    continue
                first.setdefault(pid, now)
                peaks[pid] = max(peaks.get(pid, 0.0), now)
            time.sleep(0.5)
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
