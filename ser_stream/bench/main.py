"""Run every measurement of ``ser-stream bench`` and judge it against the targets."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ser_stream.bench.backpressure import measure_backpressure
from ser_stream.bench.latency import measure_latency
from ser_stream.bench.original import measure_original_alone
from ser_stream.bench.report import write_report
from ser_stream.bench.session import workdir
from ser_stream.bench.stats import machine
from ser_stream.bench.streams import measure_streams
from ser_stream.bench.throughput import measure_memory, measure_throughput
from ser_stream.logs import get_logger

__all__ = ["BenchOptions", "run_bench"]

STREAM_COUNTS = (1, 2, 4, 8, 16, 32, 50, 64, 100, 128)


@dataclass(frozen=True)
class BenchOptions:
    """How long and how wide the bench runs.

    Attributes:
        smoke: a short run that only shows the report is produced and well-formed (CI).
        live_s: audio of each one-stream latency run.
        latency_runs: one-stream latency runs; it moves with the machine, so the report gives
            every run and takes the median run's figures (by p95) as the headline.
        fast_s: audio of the throughput run.
        stream_s: audio per stream in the concurrent-streams sweep.
        max_streams: the sweep stops here at the latest.
        replicas: the second sweep's replicas (e.g. ``{"features": 2}``); empty: no second.
        original: also time the original system's approach (needs TensorFlow).
    """

    smoke: bool = False
    live_s: float = 60.0
    latency_runs: int = 3
    fast_s: float = 120.0
    stream_s: float = 20.0
    max_streams: int = 128
    replicas: dict[str, int] | None = None
    original: bool = True

    @classmethod
    def smoke_run(cls) -> BenchOptions:
        """The CI version: seconds, not minutes."""
        return cls(smoke=True, live_s=10.0, latency_runs=1, fast_s=15.0, stream_s=5.0,
                   max_streams=2, replicas={"model": 2}, original=False)  # fmt: skip


def run_bench(options: BenchOptions, out: Path, json_path: Path | None = None) -> dict:
    """Measure, write the JSON (``json_path`` too) and the Markdown report; return the JSON."""
    log = get_logger(component="bench")
    result: dict = {"machine": machine(), "command": shlex.join(["ser-stream", *sys.argv[1:]])}
    with workdir() as folder:
        folder = Path(folder)
        runs = []
        for number in range(options.latency_runs):
            log.info("latency: one live stream", seconds=options.live_s, run=number + 1)
            runs.append(measure_latency(options.live_s, folder))
        runs.sort(key=lambda r: r[0]["latency_ms"].get("p95", float("inf")))
        live, recorder, _ = runs[len(runs) // 2]
        result["latency_ms"] = live["latency_ms"]
        result["latency_runs_ms"] = [r[0]["latency_ms"] for r in runs]
        result["per_stage_ms"] = live["per_stage_ms"]
        result["first_emotion"] = live["first_emotion_s"]
        result["first_emotion_s"] = live["first_emotion_s"].get("p50")
        result["end_of_utterance"] = live["end_of_utterance_s"]
        result["cpu_ms_per_audio_s"] = round(live["cpu_s_per_audio_s"] * 1000, 1)
        result["live"] = {k: live[k] for k in ("audio_s", "windows", "predicted")}

        log.info("throughput: --fast", seconds=options.fast_s)
        result["throughput"] = {}
        for vad in ("webrtc", "silero"):  # both engines, whichever the artifact names
            stages = {"vad": {"engine": vad}}
            row, _ = measure_throughput(options.fast_s, folder, stages=stages)
            result["throughput"][vad] = row
        result["throughput_x_realtime"] = result["throughput"]["webrtc"]["x_realtime"]
        memory = measure_memory(options.fast_s, folder)
        result["rss_mb"] = memory["rss_mb"]
        result["pss_mb_total"] = memory["pss_mb"]

        counts = [n for n in STREAM_COUNTS if n <= options.max_streams]
        log.info("concurrent streams", counts=counts)
        configs: dict[str, dict] = {"silero VAD": {"stages": {"vad": {"engine": "silero"}}}}
        if options.replicas:
            name = ", ".join(f"{k}={v}" for k, v in options.replicas.items())
            configs[f"silero VAD, {name}"] = {
                "replicas": options.replicas,
                "stages": {"vad": {"engine": "silero"}},
            }
        configs["webrtc VAD"] = {"stages": {"vad": {"engine": "webrtc"}}}
        sweeps = {
            name: measure_streams(counts, options.stream_s, folder, **config)
            for name, config in configs.items()
        }
        result["streams"] = sweeps
        result["max_streams_by_config"] = {
            name: max((r["streams"] for r in rows if r["ok"]), default=0)
            for name, rows in sweeps.items()
        }
        result["max_streams"] = max(result["max_streams_by_config"].values())
        result["rss_mb_per_extra_stream"] = _memory_slope(next(iter(sweeps.values())))

        log.info("backpressure")
        result["backpressure"] = measure_backpressure(options.fast_s, folder)
        if options.original:
            log.info("original approach")
            result["original"] = measure_original_alone()
        else:
            result["original"] = {"skipped": "not asked for (--smoke or --no-original)"}
    result["targets"] = targets(result)
    write_report(result, out, recorder.latencies_ms())
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _memory_slope(rows: list[dict]) -> float | None:
    """MB of resident memory each extra stream adds, fitted over the sweep."""
    import numpy as np

    # the stage processes only: the supervisor here is the bench's own process
    points = [(r["streams"], r["rss_mb"]["total"] - r["rss_mb"].get("supervisor", 0)) for r in rows]
    if len(points) < 2:
        return None
    x, y = np.array(points, dtype=float).T
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def targets(result: dict) -> dict:
    """Each target of the pipeline with the figure reached."""
    p95 = result["latency_ms"].get("p95", float("inf"))
    p99 = result["latency_ms"].get("p99", float("inf"))
    speed = result["throughput_x_realtime"]
    by_config = result["max_streams_by_config"]
    silero, webrtc = by_config.get("silero VAD", 0), by_config.get("webrtc VAD", 0)
    rss = result["rss_mb"]["total"]
    extra = result.get("rss_mb_per_extra_stream")
    return {
        "one stream p95 <= 20 ms": {"figure": f"{p95:.1f} ms", "met": p95 <= 20},
        "one stream p99 <= 40 ms": {"figure": f"{p99:.1f} ms", "met": p99 <= 40},
        "file throughput >= 300x real time": {"figure": f"{speed:.0f}x", "met": speed >= 300},
        ">= 50 streams with silero at p95 <= 100 ms, no loss": {
            "figure": str(silero),
            "met": silero >= 50,
        },
        ">= 100 streams with webrtc at p95 <= 100 ms, no loss": {
            "figure": str(webrtc),
            "met": webrtc >= 100,
        },
        "<= 300 MB RSS in all (one stream, --fast)": {
            "figure": f"{rss:.0f} MB (PSS {result['pss_mb_total']:.0f} MB)",
            "met": rss <= 300,
        },
        "<= 2 MB more per extra stream": {
            "figure": "n/a" if extra is None else f"{extra:.1f} MB",
            "met": extra is not None and extra <= 2,
        },
    }
