"""Stream memory: thousands of stream ids come and go; each process's RSS must come back.

Run: ``.venv/bin/python -m benchmarks.bench_stream_memory [--streams 2000] [--concurrency 250]``
Writes ``benchmarks/reports/stream_memory.json``.

One ``ser-stream up --source zmq:`` (the live defaults: Silero VAD, first window at 0.8 s;
``--vad webrtc`` for the other engine). A producer sends ``--streams`` short streams, each
under its own id: ``--audio-s`` of the bundled speech sample over room noise, in 0.1 s
chunks as fast as the pipeline takes them, then its end of stream; at most
``--concurrency`` streams are open at once (a new one starts when the JSONL sink wrote
the ``stream_end`` of an old one). Each stage process's resident memory (``VmRSS``: what
the kernel holds for it) is read from ``/proc``: once ready; after ``--warm-up`` streams,
8 at a time (the baseline: lazy imports and first allocations are paid); every 50 ms
while the streams run (the peak); when the last ``stream_end`` was written (after); and
5 s later (settled: the stages give freed memory back once a heartbeat period).
``VmHWM`` is the kernel's own peak, start-up included.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks.common import machine, stage_processes, write_report
from ser_stream.audio import bundled_sample, load_audio
from ser_stream.messages import Audio, EndOfStream
from ser_stream.testing import noise, start_up, status_mb, wait_ready
from ser_stream.wire import Envelope, encode

CHUNK = 1_600  # 0.1 s at 16 kHz
SETTLE_S = 5.0


def stream_audio(seconds: float) -> np.ndarray:
    """``seconds`` of the bundled speech (from its first speech) over room noise, int16."""
    speech = load_audio(bundled_sample())
    start = int(np.argmax(np.abs(speech) > 0.05))  # where the talking starts
    part = speech[max(0, start - 3_200) :][: round(seconds * 16_000)]
    audio = part + noise(part.size / 16_000)[: part.size]
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


class Ends:
    """Follows the JSONL sink: which streams got their ``stream_end``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ended: set[str] = set()
        self.predictions = 0
        self._file = None
        self._partial = ""

    def poll(self) -> set[str]:
        """Read what was written since the last call; return the streams ended so far."""
        if self._file is None:
            if not self.path.exists():
                return self.ended
            self._file = self.path.open(encoding="utf-8")
        text = self._partial + self._file.read()
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            record = json.loads(line)
            if record["kind"] == "stream_end":
                self.ended.add(record["stream"])
            elif record["kind"] == "prediction":
                self.predictions += 1
        return self.ended


def send_streams(
    push: zmq.Socket, ends: Ends, ids: list[str], audio: np.ndarray, concurrency: int,
    timeout_s: float = 600.0,
) -> None:  # fmt: skip
    """Send every stream (at most ``concurrency`` open), then wait for all their ends."""
    todo = list(reversed(ids))
    open_: dict[str, int] = {}  # stream -> next sample to send
    sent_end: set[str] = set()
    seq: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while todo or open_ or not sent_end <= ends.poll():
        ends.poll()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(sent_end - ends.ended)} streams never ended")
        while todo and len(open_) + len(sent_end - ends.ended) < concurrency:
            stream = todo.pop()
            open_[stream], seq[stream] = 0, 0
        for stream, at in list(open_.items()):
            if at < audio.size:
                body = Audio(audio[at : at + CHUNK], 16_000, at / 16_000)
                push.send_multipart(encode(Envelope(stream, seq[stream], body)))
                open_[stream] = at + CHUNK
            else:
                push.send_multipart(encode(Envelope(stream, seq[stream], EndOfStream("eof"))))
                del open_[stream]
                sent_end.add(stream)
            seq[stream] += 1
        if not open_:
            time.sleep(0.005)  # waiting for ends written by another process


class Sampler(threading.Thread):
    """Reads every process's RSS every 50 ms; keeps the peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], status_mb(pid) or 0.0)


def snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    """Each process's RSS now."""
    return {name: status_mb(pid) for name, pid in pids.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=250, help="streams open at once")
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--audio-s", type=float, default=1.2)
    parser.add_argument("--vad", choices=("silero", "webrtc"), default="silero")
    parser.add_argument("--name", default="stream_memory", help="report name")
    parser.add_argument("--label", default="", help="what code ran, said in the report")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stream-memory-"))
    endpoint = f"ipc://{folder}/audio-in"
    jsonl = folder / "session.jsonl"
    log = (folder / "up.log").open("w")
    up = start_up("--source", f"zmq:{endpoint}", "--vad", args.vad, "--no-stop-on-silence",
                  jsonl=jsonl, stderr=log)  # fmt: skip
    wait_ready(up, folder / "up.log")
    pids = stage_processes(up.pid)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    audio = stream_audio(args.audio_s)
    ends = Ends(jsonl)
    tag = f"{time.time_ns():x}"
    try:
        ready = snapshot(pids)
        warm = [f"warm-{tag}-{k}" for k in range(args.warm_up)]
        send_streams(push, ends, warm, audio, min(8, args.concurrency))
        baseline = snapshot(pids)
        sampler = Sampler(pids)
        sampler.start()
        started = time.monotonic()
        ids = [f"s{k:05d}-{tag}" for k in range(args.streams)]
        send_streams(push, ends, ids, audio, args.concurrency)
        elapsed = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        after = snapshot(pids)
        time.sleep(SETTLE_S)  # a benchmark's fixed look later, to show what stays
        settled = snapshot(pids)
        hwm = {name: status_mb(pid, "VmHWM") for name, pid in pids.items()}
        alive = stage_processes(up.pid)
    finally:
        push.close(linger=0)
        context.term()
        up.send_signal(2)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
    restarted = sorted(name for name, pid in pids.items() if alive.get(name) != pid)
    per_process = {
        name: {
            "rss_mb_ready": _round(ready[name]),
            "rss_mb_baseline": _round(baseline[name]),
            "rss_mb_peak": _round(max(sampler.peak[name], after[name] or 0.0)),
            "rss_mb_after": _round(after[name]),
            "rss_mb_settled": _round(settled[name]),
            "after_minus_baseline_mb": _round((after[name] or 0.0) - (baseline[name] or 0.0)),
            "vm_hwm_mb": _round(hwm[name]),
        }
        for name in pids
    }
    report = {
        "machine": machine(),
        "command": shlex.join(["python", "-m", "benchmarks.bench_stream_memory", *sys.argv[1:]]),
        "label": args.label,
        "vad": args.vad,
        "streams": args.streams,
        "warm_up_streams": args.warm_up,
        "concurrency": args.concurrency,
        "audio_s_per_stream": args.audio_s,
        "streams_ended": len(ends.poll() & set(ids)),
        "predictions": ends.predictions,
        "seconds": round(elapsed, 1),
        "restarted": restarted,
        "per_process": per_process,
        "note": (
            "rss_mb_baseline: after the warm-up streams; rss_mb_peak: highest of the 50 ms "
            "samples during the streams; rss_mb_after: when the last stream_end was written; "
            f"rss_mb_settled: {SETTLE_S:.0f} s later; vm_hwm_mb: the kernel's peak, start-up "
            "included"
        ),
    }
    write_report(args.name, report)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


if __name__ == "__main__":
    main()
