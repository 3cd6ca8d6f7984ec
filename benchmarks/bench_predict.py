"""Throughput of ``ser-stream predict`` on many 3 s files, start-up included, per VAD engine.

Run: ``.venv/bin/python -m benchmarks.bench_predict [--files 1000] [--vad silero|webrtc]
[--model DIR]``. Writes ``benchmarks/reports/predict.json`` for Silero (the engine the
retrained model names) and ``predict-webrtc.json`` for WebRTC. ``predict`` follows the VAD
its model artifact names, so the command runs on a temporary copy of the artifact (``--model``,
default the shipped one) whose config names the engine.

The files hold a real voice: 3 s each, room tone, 2.2 s of the bundled sample's speech (a
different stretch and level per file), room tone. Silero rightly hears no speech in a
synthetic buzz, so buzz would measure its no-speech path instead of its cutting. The one-file
figure is the median of ``--single-runs`` runs: a single run swings by 0.1-0.3 s on a machine
with other work; ``load_average`` says how busy the machine was, and ``cpu_s`` (predict and its
workers, user + system) is the work itself, which other load does not change much.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import machine, write_report
from ser_stream.artifact import default_artifact_dir
from ser_stream.audio import bundled_sample, load_audio
from ser_stream.stages.voicing import ENGINES
from ser_stream.testing import SER_STREAM, noise

# The console script installed beside this interpreter, as a user runs it.
RATE = 16_000
SPEECH_S = 2.2
VOICED_SPANS_S = ((0.45, 5.45), (6.8, 11.6))
"""Where the bundled sample speaks (its two sentences)."""


def make_files(folder: Path, count: int) -> list[str]:
    """``count`` files of 3 s: room tone, 2.2 s of the bundled voice, room tone."""
    sample = load_audio(bundled_sample())
    paths = []
    for i in range(count):
        start_s, end_s = VOICED_SPANS_S[i % 2]
        offset = start_s + (0.37 * i) % (end_s - start_s - SPEECH_S)
        speech = sample[round(offset * RATE) :][: round(SPEECH_S * RATE)]
        gain = 0.5 + 0.5 * ((i * 7) % 10) / 10
        audio = np.concatenate([noise(0.4, seed=i), gain * speech, noise(0.4, seed=i + 7)])
        path = folder / f"clip{i:04d}.wav"
        soundfile.write(path, audio, RATE, subtype="PCM_16")
        paths.append(str(path))
    return paths


def artifact_with_engine(source: Path, engine: str, folder: Path) -> Path:
    """A copy of the artifact at ``source`` whose VAD settings name ``engine``."""
    copy = folder / "model"
    shutil.copytree(source, copy)
    config_path = copy / "config.json"
    config = json.loads(config_path.read_text())
    config["analysis"]["vad"]["engine"] = engine
    config_path.write_text(json.dumps(config, indent=2))
    return copy


def _children_cpu_s() -> float:
    """User and system time of the ended child processes (predict and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--vad", choices=ENGINES, default="silero", help="VAD engine to measure")
    parser.add_argument("--model", default=None, help="artifact to copy (default: shipped)")
    parser.add_argument(
        "--ser-stream", default=SER_STREAM, help="the command to measure (default: this venv's)"
    )
    parser.add_argument(
        "--single-runs", type=int, default=5, help="runs on one file (the median is reported)"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.model) if args.model else default_artifact_dir()
        model = artifact_with_engine(source, args.vad, Path(tmp))
        paths = make_files(Path(tmp), args.files)
        command = [args.ser_stream, "predict", "--json", "--model", str(model)]
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        result = subprocess.run(command + paths, capture_output=True, text=True)
        wall = time.perf_counter() - started
        cpu = _children_cpu_s() - cpu_before
        one_file = []
        for _ in range(args.single_runs):
            one_started = time.perf_counter()
            subprocess.run(command + paths[:1], capture_output=True, text=True, check=True)
            one_file.append(time.perf_counter() - one_started)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    errors = sum("error" in r for r in records)
    windows = [len(r["windows"]) for r in records if "error" not in r]
    name = "predict" if args.vad == "silero" else f"predict-{args.vad}"
    write_report(
        name,
        {
            "what": f"ser-stream predict --json on {args.files} files of 3.0 s (a real voice), "
            f"start-up included, {args.vad} VAD",
            "command": f"python -m benchmarks.bench_predict --files {args.files} --vad {args.vad}",
            "measured": "ser-stream of this venv"
            if args.ser_stream == SER_STREAM
            else args.ser_stream,
            "vad": args.vad,
            "model": f"{args.model or 'the shipped artifact'}, copied to name the {args.vad} VAD",
            "machine": machine(),
            "load_average": {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            },
            "exit_status": result.returncode,
            "files": len(records),
            "errors": errors,
            "windows": sum(windows),
            "wall_s": round(wall, 2),
            "files_per_s": round(len(records) / wall, 1),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_file": round(1000 * cpu / max(1, len(records)), 1),
            "audio_seconds_per_wall_second": round(3.0 * len(records) / wall, 1),
            "single_file_wall_s": round(statistics.median(one_file), 2),
            "single_file_wall_s_runs": [round(t, 2) for t in one_file],
        },
    )


if __name__ == "__main__":
    main()
