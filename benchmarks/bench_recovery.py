"""Recovery: how long a stage is out of service when it dies (kill -9) or hangs (SIGSTOP).

Run: ``.venv/bin/python -m benchmarks.bench_recovery [--kills 5]``
Writes ``benchmarks/reports/recovery.json``. For each process of a ``ser-stream up`` on a
real-time file (capture, vad, denoise, features, model), it kills the process ``--kills``
times, 4 s apart, and reads the supervisor's ``stage back`` log lines: the time from the
failure (noticed at once for a dead process) to the replacement's first heartbeat, which is
the back-off, the start of a new process and its warm-up. Then it stops one stage with
SIGSTOP and times, from the signal, until its replacement beats (the three missed
heartbeats included). The sessions' ledgers must balance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, percentiles, stage_processes, write_report
from ser_stream import testing
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import records, stage_pid, start_up, wait_for_records

STAGES = ("capture", *CHAIN)


def talk(path: Path, seconds: float) -> Path:
    """Utterances of 2.5 s and their pauses (3.1 s each) for at least ``seconds``."""
    return testing.talk(path, math.ceil((seconds - 0.5) / 3.1))


def session(source: Path, folder: Path, act) -> tuple[list[float], dict]:
    """Run `up` on ``source`` while ``act(up)`` does its harm; the downtimes and summary."""
    jsonl = folder / "s.jsonl"
    jsonl.unlink(missing_ok=True)
    up = start_up("--vad", "webrtc", "--source", f"file:{source}", "--no-stop-on-silence",
                  jsonl=jsonl, log_level="info")  # fmt: skip
    wait_for_records(jsonl, kind="prediction")
    act(up)
    _, stderr = up.communicate(timeout=300)
    downtimes = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"stage back"' in line:
            downtimes.append(json.loads(line)["down_s"] * 1000)
    summary = records(jsonl)[-1]["summary"]
    return downtimes, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    report: dict = {"machine": machine(), "kills_per_stage": args.kills, "kill_9": {}}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        source = talk(folder / "talk.wav", 4.0 + 4.0 * args.kills + 4.0)
        for stage in STAGES:

            def kill(up, stage=stage):
                for _ in range(args.kills):
                    os.kill(stage_pid(up.pid, stage), signal.SIGKILL)
                    time.sleep(4.0)  # past the slowest stage's return

            downtimes, summary = session(source, folder, kill)
            report["kill_9"][stage] = {
                "back_in_service": percentiles(downtimes),
                "ledger": summary["ledger"],
                "windows": summary["windows"],
                "predicted": summary["predicted"],
                "dropped_reasons": summary["dropped_reasons"],
            }
        stopped_at: dict = {}

        def hang(up):
            pid = stage_pid(up.pid, "denoise")
            stopped_at["t"] = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            while stage_processes(up.pid).get("denoise") in (pid, None):
                time.sleep(0.01)
            stopped_at["replaced_s"] = time.monotonic() - stopped_at["t"]

        downtimes, summary = session(source, folder, hang)
        report["sigstop_denoise"] = {
            "replaced_after_s": round(stopped_at["replaced_s"], 3),
            "back_in_service_after_detection_ms": downtimes,
            "ledger": summary["ledger"],
        }
    worst = [row["back_in_service"].get("max_ms") for row in report["kill_9"].values()]
    report["worst_back_in_service_ms"] = max((w for w in worst if w is not None), default=None)
    write_report("recovery", report)


if __name__ == "__main__":
    main()
