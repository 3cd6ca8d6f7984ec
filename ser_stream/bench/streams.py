"""Concurrent live streams through one pipeline, more of them until latency or loss fails."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np

from ser_stream.audio import SAMPLE_RATE, bundled_sample, load_audio
from ser_stream.bench.session import (
    PAUSE_S,
    Recorder,
    bench_audio,
    bench_config,
    pipeline_labels,
    rss_mb,
)
from ser_stream.bench.stats import percentiles
from ser_stream.supervisor.pipeline import run_pipeline

__all__ = ["measure_streams"]


def _produce(endpoint: str, count: int, seconds: float, report: dict) -> None:
    """``count`` live producers on one socket: 30 ms frames at real time, independent timing.

    A live producer cannot wait: a frame the pipeline cannot take at once is dropped and
    counted, and so is any lateness behind the audio clock.
    """
    import json

    import zmq

    audio = np.round(bench_audio(seconds, seed=2) * 32767).astype("<i2")
    rng = np.random.default_rng(3)
    offsets = rng.uniform(0.0, 1.5, count)  # streams do not start in lockstep
    # nor talk in lockstep: each starts somewhere else in the speech, as independent callers
    cycle = round((load_audio(str(bundled_sample())).size / SAMPLE_RATE + PAUSE_S) * SAMPLE_RATE)
    shifts = rng.integers(0, min(cycle, audio.size), count)
    frame = SAMPLE_RATE * 30 // 1000
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 10_000)
    push.connect(endpoint)
    time.sleep(0.2)
    sent = np.zeros(count, dtype=int)  # frames sent per stream
    frames = -(-audio.size // frame)
    dropped = 0
    worst_late = 0.0
    start = time.monotonic()
    wall_start = time.time_ns()

    def message(
        kind: str, stream: int, seq: int, fields: dict, body: bytes | None, due: float = 0.0
    ) -> list:
        # "produced": when the frame's last sample was due at the producer (its real time)
        stamps = {"produced": int(wall_start + due * 1e9)} if due else {}
        header = {"v": 1, "kind": kind, "stream": f"bench-{stream}", "seq": seq, "ts": stamps}
        header.update(fields)
        return [json.dumps(header).encode()] + ([body] if body is not None else [])

    while (sent < frames).any():
        now = time.monotonic() - start
        for i in range(count):
            due = offsets[i] + (sent[i] + 1) * frame / SAMPLE_RATE
            while sent[i] < frames and due <= now:
                worst_late = max(worst_late, now - due)
                at = (shifts[i] + sent[i] * frame) % audio.size
                chunk = np.roll(audio, -at)[:frame] if at + frame > audio.size else (
                    audio[at : at + frame])  # fmt: skip
                fields = {"sample_rate": SAMPLE_RATE, "t_start": sent[i] * frame / SAMPLE_RATE,
                          "dtype": "int16", "shape": [chunk.size]}  # fmt: skip
                try:
                    frames_out = message("audio", i, int(sent[i]), fields, chunk.tobytes(), due)
                    push.send_multipart(frames_out, zmq.NOBLOCK)
                except zmq.Again:
                    dropped += 1
                sent[i] += 1
                due += frame / SAMPLE_RATE
        time.sleep(0.005)
    for i in range(count):
        push.send_multipart(message("end_of_stream", i, int(sent[i]), {"reason": "eof"}, None))
    push.close(linger=60_000)
    context.term()
    report["dropped_frames"] = dropped
    report["producer_late_ms"] = round(worst_late * 1000, 1)


def measure_streams(
    counts: list[int], seconds: float, folder: Path, *, limit_ms: float = 100.0, **options
) -> list[dict]:
    """N live streams through one pipeline, N growing until p95 passes ``limit_ms`` or loss."""
    rows = []
    for count in counts:
        endpoint = f"ipc://{folder}/producers-{count}"
        recorder = Recorder()
        manager = multiprocessing.Manager()
        report = manager.dict()
        producer = multiprocessing.Process(
            target=_produce, args=(endpoint, count, seconds, report), daemon=True
        )
        started = {"began": time.monotonic()}

        def start(producer=producer, started=started, endpoint=endpoint) -> None:
            # Live producers talk only once the capture listens (its ipc file exists):
            # audio queued during the capture's start-up is no latency of the pipeline.
            socket_file = Path(endpoint.removeprefix("ipc://"))
            deadline = time.monotonic() + 60
            while not socket_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            started["ready"] = time.monotonic()
            time.sleep(0.2)
            started["t"] = time.monotonic()
            producer.start()

        def overdue(producer=producer, recorder=recorder) -> bool:
            # A pipeline far behind real time: the producer gave up on what it could not send
            # (its queue closes 60 s after its last frame), so some streams will never end.
            last = max((a.at_ns for a in recorder.predictions), default=time.time_ns())
            return not producer.is_alive() and time.time_ns() - last > 90e9

        run = run_pipeline(
            bench_config((f"zmq:{endpoint}",), folder, streams=count, **options),
            [recorder],
            pipeline_labels(),
            on_ready=start,
            should_stop=overdue,
        )
        producer.join(timeout=30)
        wall = time.monotonic() - started["t"]
        summary = run.summary(pipeline_labels())
        latency = percentiles(_producer_latencies_ms(recorder))
        unfinished = count - sum(1 for session in run.streams.values() if session.ended)
        lost = summary["dropped"] + int(report.get("dropped_frames", 0)) + unfinished
        ok = latency.get("p95", float("inf")) <= limit_ms and lost == 0
        rows.append(
            {
                "streams": count,
                "latency_ms": latency,
                "windows": summary["windows"],
                "predicted": summary["predicted"],
                "dropped_windows": summary["dropped"],
                "dropped_frames": int(report.get("dropped_frames", -1)),
                "streams_unfinished": unfinished,
                "producer_late_ms": report.get("producer_late_ms"),
                "cpu_cores": round(sum(run.cpu_s.values()) / wall, 2),
                "rss_mb": rss_mb(run),
                "ready_s": round(started["ready"] - started["began"], 2),
                "ok": ok,
            }
        )
        manager.shutdown()
        if not ok:
            break
    return rows


def _producer_latencies_ms(recorder: Recorder) -> list[float]:
    """From when the frame that completed each window was due at its producer, to the sink.

    Unlike the capture's stamp this includes any wait in the producer's queue before the
    capture took the frame: a pipeline that falls behind real time shows it.
    """
    return [
        (a.at_ns - a.envelope.timestamps["produced"]) / 1e6
        for a in recorder.predictions
        if "produced" in a.envelope.timestamps
    ]
