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
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import machine, percentiles, stage_processes, write_report
from ser_stream.testing import noise, voiced

SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))
STAGES = ("capture", "vad", "denoise", "features", "model")


def talk(path: Path, seconds: float) -> Path:
    parts, total, k = [noise(0.5)], 0.5, 0
    while total < seconds:
        parts += [voiced(2.5, f0=120 + 10 * (k % 8), seed=k), noise(0.6, seed=100 + k)]
        total += 3.1
        k += 1
    soundfile.write(path, np.concatenate(parts), 16_000, subtype="PCM_16")
    return path


def wait_for_pid(parent: int, stage: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = stage_processes(parent).get(stage)
        if pid is not None:
            return pid
        time.sleep(0.02)
    raise TimeoutError(f"no {stage} process")


def session(source: Path, folder: Path, act) -> tuple[list[float], dict]:
    """Run `up` on ``source`` while ``act(up)`` does its harm; the downtimes and summary."""
    jsonl = folder / "s.jsonl"
    jsonl.unlink(missing_ok=True)
    up = subprocess.Popen(
        [SER_STREAM, "--log-level", "info", "up", "--vad", "webrtc", "--source",
         f"file:{source}", "--no-stop-on-silence", "--sink", f"jsonl:{jsonl}",
         "--publish", f"ipc://{folder}/pub"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and '"prediction"' not in (
        jsonl.read_text() if jsonl.exists() else ""
    ):
        time.sleep(0.1)
    act(up)
    _, stderr = up.communicate(timeout=300)
    downtimes = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"stage back"' in line:
            downtimes.append(json.loads(line)["down_s"] * 1000)
    summary = json.loads(jsonl.read_text().splitlines()[-1])["summary"]
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
                    os.kill(wait_for_pid(up.pid, stage), signal.SIGKILL)
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
            pid = wait_for_pid(up.pid, "denoise")
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
