"""A file as fast as the pipeline goes: its speed, and the memory of every process."""

from __future__ import annotations

from pathlib import Path

from ser_stream.bench.session import (
    Recorder,
    bench_audio,
    bench_config,
    pipeline_labels,
    rss_mb,
    write_wav,
)
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.pipeline import run_pipeline

__all__ = ["measure_memory", "measure_throughput"]


def measure_throughput(seconds: float, folder: Path, **options) -> tuple[dict, Run]:
    """One file as fast as the pipeline goes (``--fast``): audio seconds per wall second."""
    wav = write_wav(folder / "fast.wav", bench_audio(seconds, seed=1))
    recorder = Recorder()
    run = run_pipeline(
        bench_config((f"file:{wav}",), folder, fast=True, **options), [recorder], pipeline_labels()
    )
    wall_s = (max(recorder.ended_ns.values()) - recorder.first_capture_ns()) / 1e9
    summary = run.summary(pipeline_labels())
    result = {
        "audio_s": seconds,
        "wall_s": round(wall_s, 3),
        "x_realtime": round(seconds / wall_s, 1),
        "windows": summary["windows"],
        "predicted": summary["predicted"],
        "rss_mb": rss_mb(run),
        "pss_mb": round(sum(run.pss_mb.values()), 1),
    }
    return result, run


def measure_memory(seconds: float, folder: Path) -> dict:
    """Peak memory of every process of a real ``ser-stream up --fast`` (its own supervisor).

    The other measurements run the supervisor inside the bench's process; this one runs
    ``up`` as the user would and takes the usage its supervisor logs at the end.
    """
    import json
    import subprocess

    from ser_stream.supervisor.wiring import self_command

    wav = write_wav(folder / "memory.wav", bench_audio(seconds, seed=1))
    command = [*self_command(), "--log-level", "info", "up", "--fast",
               "--source", f"file:{wav}", "--sink", f"jsonl:{folder / 'memory.jsonl'}",
               "--publish", f"ipc://{folder}/memory-publish"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    for line in result.stderr.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "usage":
            rss = record["peak_rss_mb"]
            return {
                "rss_mb": {"total": round(sum(rss.values()), 1), **rss},
                "pss_mb": round(sum(record["pss_mb"].values()), 1),
            }
    raise RuntimeError(f"ser-stream up reported no usage: {result.stderr[-500:]}")
