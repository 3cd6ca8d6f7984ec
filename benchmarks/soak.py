"""Soak: `ser-stream up` for an hour at real time; memory, files and threads must stay flat.

Run: ``.venv/bin/python -m benchmarks.soak [--minutes 60]`` (``--minutes 5`` is the smoke).
Writes ``benchmarks/reports/soak.json`` (``soak-smoke.json`` under 10 minutes).

A producer speaks into ``--source zmq:`` at real time without pause: the bundled speech
sample over room noise, looped with pauses, under a new stream id every 30 s (the
previous one ended), so per-stream state is opened and freed all along. Every 10 s the
soak samples each process of the pipeline: resident memory (``VmRSS``: what the kernel
holds, not what Python's allocator thinks), open files and threads. After the warm-up
(the first fifth, at least a minute) it fits a line to each process's RSS: the slope, in
MB per minute, must stay under 1; file and thread counts must not grow.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks.common import machine, stage_processes, write_report
from ser_stream.audio import bundled_sample, load_audio
from ser_stream.messages import Audio, EndOfStream
from ser_stream.testing import noise, open_files, start_up, status_mb, threads, wait_ready
from ser_stream.wire import Envelope, encode

STREAM_S = 30.0
SAMPLE_EVERY_S = 10.0


def speech_loop(seconds: float) -> np.ndarray:
    """``seconds`` of the bundled speech sample, looped, with pauses over room noise, int16."""
    speech = load_audio(bundled_sample())
    parts, total, k = [], 0.0, 0
    while total < seconds:
        parts += [speech + noise(speech.size / 16_000, seed=k), noise(1.5, seed=100 + k)]
        total += speech.size / 16_000 + 1.5
        k += 1
    audio = np.concatenate(parts)[: round(seconds * 16_000)]
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def produce(endpoint: str, minutes: float, stop: threading.Event) -> int:
    """Speak at real time, a new stream every ``STREAM_S``; return how many streams."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    audio = speech_loop(STREAM_S)
    chunk = 320
    started = time.monotonic()
    streams = 0
    try:
        while not stop.is_set() and time.monotonic() - started < minutes * 60:
            stream = f"soak-{streams}"
            for seq, at in enumerate(range(0, audio.size, chunk)):
                body = Audio(audio[at : at + chunk], 16_000, at / 16_000)
                push.send_multipart(encode(Envelope(stream, seq, body)))
                due = started + streams * STREAM_S + (at + chunk) / 16_000
                time.sleep(max(0.0, due - time.monotonic()))
                if stop.is_set():
                    break
            push.send_multipart(encode(Envelope(stream, seq + 1, EndOfStream("eof"))))
            streams += 1
    finally:
        push.close(linger=5000)
        context.term()
    return streams


def sample(pid: int) -> dict[str, float] | None:
    try:
        point = {"rss_mb": status_mb(pid), "threads": threads(pid), "files": open_files(pid)}
    except OSError:  # gone
        return None
    return None if point["rss_mb"] is None else point


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    t = np.array([p[0] for p in points]) / 60.0
    y = np.array([p[1] for p in points])
    return float(np.polyfit(t, y, 1)[0]) if len(points) >= 3 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    endpoint = f"ipc://{folder}/audio-in"
    log = folder / "up.log"
    up = start_up("--source", f"zmq:{endpoint}", "--no-stop-on-silence",
                  jsonl=folder / "soak.jsonl", stderr=log.open("w"))  # fmt: skip
    stop = threading.Event()
    counted = {}
    producer = threading.Thread(
        target=lambda: counted.update(streams=produce(endpoint, args.minutes, stop))
    )
    wait_ready(up, log, timeout_s=300)
    producer.start()
    started = time.monotonic()
    series: dict[str, list[tuple[float, dict]]] = {}
    try:
        while producer.is_alive():
            now = time.monotonic() - started
            for name, pid in stage_processes(up.pid).items():
                point = sample(pid)
                if point is not None:
                    series.setdefault(name, []).append((now, point))
            producer.join(SAMPLE_EVERY_S)
    finally:
        stop.set()
        producer.join()
        up.send_signal(2)
        up.wait(timeout=60)
    warm_up_s = max(60.0, args.minutes * 60 / 5)
    per_process = {}
    for name, points in series.items():
        after = [(t, p) for t, p in points if t >= warm_up_s] or points
        rss = [(t, p["rss_mb"]) for t, p in after]
        per_process[name] = {
            "rss_mb_start": round(after[0][1]["rss_mb"], 1),
            "rss_mb_end": round(after[-1][1]["rss_mb"], 1),
            "rss_slope_mb_per_min": round(slope_mb_per_min(rss), 3),
            "files": [min(p["files"] for _, p in after), max(p["files"] for _, p in after)],
            "threads": [min(p["threads"] for _, p in after), max(p["threads"] for _, p in after)],
            "samples": len(after),
        }
    flat = all(
        row["rss_slope_mb_per_min"] < 1.0
        and row["files"][1] - row["files"][0] <= 2
        and row["threads"][1] == row["threads"][0]
        for row in per_process.values()
    )
    lines = (
        (folder / "soak.jsonl").read_text().splitlines() if (folder / "soak.jsonl").exists() else []
    )
    report = {
        "machine": machine(),
        "minutes": args.minutes,
        "warm_up_s": warm_up_s,
        "streams": counted.get("streams", 0),
        "predictions": sum('"kind": "prediction"' in line for line in lines),
        "session_end": lines[-1] if lines else None,
        "per_process": per_process,
        "flat": flat,
        "target": "RSS slope < 1 MB/min per process after warm-up; files and threads flat",
    }
    write_report("soak" if args.minutes >= 10 else "soak-smoke", report)


if __name__ == "__main__":
    main()
