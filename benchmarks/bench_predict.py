"""Throughput of ``ser-stream predict`` on many 3 s files, start-up included.

Run: ``.venv/bin/python -m benchmarks.bench_predict [--files 1000] [--model DIR]``
Writes ``benchmarks/reports/predict.json``. The files are speech-like synthetic audio
(3 s each: room tone, voiced signal, room tone) written to a temporary folder. The one-file
figure is the median of ``--single-runs`` runs: a single run swings by 0.1-0.3 s on a
machine with other work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import machine, write_report
from ser_stream.testing import noise, voiced

# The console script installed beside this interpreter, as a user runs it.
SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))


def make_files(folder: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        audio = np.concatenate(
            [noise(0.4, seed=i), voiced(2.2, f0=100 + (i % 9) * 20, seed=i), noise(0.4, seed=i + 7)]
        )
        path = folder / f"clip{i:04d}.wav"
        soundfile.write(path, audio, 16_000, subtype="PCM_16")
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--ser-stream", default=SER_STREAM, help="the command to measure (default: this venv's)"
    )
    parser.add_argument(
        "--single-runs", type=int, default=5, help="runs on one file (the median is reported)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), args.files)
        command = [args.ser_stream, "predict", "--json"]
        if args.model:
            command += ["--model", args.model]
        started = time.perf_counter()
        result = subprocess.run(command + paths, capture_output=True, text=True)
        wall = time.perf_counter() - started
        one_file = []
        for _ in range(args.single_runs):
            one_started = time.perf_counter()
            subprocess.run(command + paths[:1], capture_output=True, text=True, check=True)
            one_file.append(time.perf_counter() - one_started)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    errors = sum("error" in r for r in records)
    write_report(
        "predict",
        {
            "what": f"ser-stream predict --json on {args.files} files of 3.0 s, start-up included",
            "command": f"python -m benchmarks.bench_predict --files {args.files}",
            "measured": "ser-stream of this venv"
            if args.ser_stream == SER_STREAM
            else args.ser_stream,
            "machine": machine(),
            "exit_status": result.returncode,
            "files": len(records),
            "errors": errors,
            "wall_s": round(wall, 2),
            "files_per_s": round(len(records) / wall, 1),
            "audio_seconds_per_wall_second": round(3.0 * len(records) / wall, 1),
            "single_file_wall_s": round(statistics.median(one_file), 2),
            "single_file_wall_s_runs": [round(t, 2) for t in one_file],
        },
    )


if __name__ == "__main__":
    main()
