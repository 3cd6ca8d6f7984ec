"""The bench's report: the JSON figures, and Markdown with plots for people."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_report"]


def write_report(result: dict, folder: Path, latencies_ms: list[float]) -> Path:
    """Write ``bench.json``, ``bench.md`` and its two plots into ``folder``; return the .md."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot_latency(folder / "bench_latency.png", latencies_ms)
    _plot_streams(folder / "bench_streams.png", result.get("streams", {}))
    path = folder / "bench.md"
    path.write_text(markdown(result))
    return path


def _plot_latency(path: Path, latencies_ms: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if latencies_ms:
        ax.hist(latencies_ms, bins=40, color="#4C72B0")
    ax.set_xlabel("capture of a window's last sample → prediction at the sink (ms)")
    ax.set_ylabel("windows")
    ax.set_title("One live stream: end-to-end latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_streams(path: Path, sweeps: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, rows in sweeps.items():
        points = [(r["streams"], r["latency_ms"].get("p95")) for r in rows if r["latency_ms"]["n"]]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="100 ms")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("p95 latency (ms)")
    ax.set_xscale("log", base=2)
    ax.set_title("Concurrent streams vs p95 latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(figures: dict, unit: str = "ms") -> str:
    if not figures.get("n"):
        return "n/a"
    digits = 2 if unit == "s" else 1
    return " / ".join(f"{figures[k]:.{digits}f}" for k in ("p50", "p95", "p99")) + f" {unit}"


def _latency_runs(result: dict) -> list[str]:
    """Every one-stream run, for the spread (the headline is the median run by p95)."""
    runs = result.get("latency_runs_ms", [])
    if len(runs) < 2:
        return []
    listed = "; ".join(_pct(run) for run in runs)
    return [f"The same stream run {len(runs)} times (p50 / p95 / p99 each): {listed}. The "
            "figures above and per stage are the median run's.", ""]  # fmt: skip


def markdown(result: dict) -> str:
    """The report as Markdown."""
    machine = result["machine"]
    lines = [
        "# ser-stream bench",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, {machine['platform']}; {machine['date']}",
        "",
        "All stages run as their own processes over ZeroMQ (`ser-stream up`); the audio is real "
        "speech with pauses over room noise at -50 dBFS. Latency runs from the capture of a "
        "window's last sample to its prediction at a sink.",
        "",
        "## One live stream",
        "",
        f"End to end (p50 / p95 / p99): **{_pct(result['latency_ms'])}**, "
        f"max {result['latency_ms'].get('max', 0):.1f} ms over {result['latency_ms']['n']} "
        "windows.",
        "",
        *_latency_runs(result),
        "| stage | wait before it (queue + hop) | processing |",
        "|---|---|---|",
    ]
    for name, parts in result["per_stage_ms"].items():
        queue = _pct(parts.get("queue", {}))
        processing = _pct(parts.get("processing", {}))
        lines.append(f"| {name} | {queue} | {processing} |")
    first = result["first_emotion"]
    lines += [
        "",
        f"Time to first emotion after speech onset: median {first.get('p50', 0) / 1:.2f} s, "
        f"max {first.get('max', 0):.2f} s over {first['n']} utterances. The latency above "
        "runs from the capture of the frame that completed a window; an utterance's final "
        "window is complete only once the VAD is sure the speech ended, so from the last "
        f"speech sample its emotion takes {_pct(result['end_of_utterance'], 's')} "
        "(the VAD's hangover, then the pipeline).",
        "",
        "![latency](bench_latency.png)",
        "",
        "## File throughput (`--fast`)",
        "",
        "| VAD (`--fast` takes the artifact's, webrtc) | audio | wall | × real time |",
        "|---|---|---|---|",
    ]
    for vad, row in result["throughput"].items():
        lines.append(f"| {vad} | {row['audio_s']:.0f} s | {row['wall_s']:.2f} s | "
                     f"{row['x_realtime']:.0f}× |")  # fmt: skip
    lines += ["", "## Memory (peak RSS of `ser-stream up --fast`, one stream)", "",
              "| process | MB |", "|---|---|"]  # fmt: skip
    for name, mb in result["rss_mb"].items():
        lines.append(f"| {name} | {mb:.0f} |")
    lines.append(
        f"\nThe sum of peak RSS counts each shared library once per process that maps it; "
        f"PSS, which splits shared pages between processes, adds up to "
        f"{result['pss_mb_total']:.0f} MB at the end of the run. Memory per extra stream: "
        f"{result.get('rss_mb_per_extra_stream', 'n/a')} MB (peak RSS, fitted over the sweep)."
    )
    lines += ["", "## Concurrent live streams", ""]
    for name, rows in result["streams"].items():
        lines += [
            f"### {name}",
            "",
            "| streams | p50 / p95 / p99 | windows | dropped | CPU cores | RSS total | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lost = r["dropped_windows"] + max(0, r["dropped_frames"]) + r["streams_unfinished"]
            lines.append(f"| {r['streams']} | {_pct(r['latency_ms'])} | {r['windows']} | "
                         f"{lost} | {r['cpu_cores']} | {r['rss_mb']['total']:.0f} MB | "
                         f"{'yes' if r['ok'] else 'no'} |")  # fmt: skip
        lines.append("")
    best = ", ".join(f"{k}: {v}" for k, v in result["max_streams_by_config"].items())
    lines += [f"ok: p95 within 100 ms and nothing lost. Most streams ok: {best}.", "",
              "![streams](bench_streams.png)", "", "## Backpressure", ""]  # fmt: skip
    for name, row in result.get("backpressure", {}).items():
        lines.append(f"- **{name}**: {row['what']}.")
        facts = {k: v for k, v in row.items() if k not in ("what", "latency_ms", "rss_mb")}
        lines.append("  " + ", ".join(f"{k}: {v}" for k, v in facts.items()))
        lines.append(f"  Latency {_pct(row['latency_ms'])}.")
        if "rss_mb" in row:
            lines.append(f"  Peak RSS in all: {row['rss_mb']['total']:.0f} MB.")
    original = result.get("original", {})
    lines += ["", "## The original system's approach", ""]
    if "skipped" in original:
        lines.append(f"Skipped: {original['skipped']}.")
    elif original:
        s2r = original["speech_to_result_s"]
        lines += [
            f"{original['what']}. Processing per block {_pct(original['processing_ms'])}; "
            f"speech to result {s2r['best']:.2f}-{s2r['worst']:.2f} s (mean {s2r['mean']:.2f} s); "
            f"CPU {original['cpu_ms_per_audio_s']:.1f} ms per audio second.",
            "",
            f"This pipeline: first emotion {first.get('p50', 0):.2f} s after onset (median), "
            f"CPU {result['cpu_ms_per_audio_s']:.1f} ms per audio second over all processes.",
        ]
    lines += ["", "## Targets", "", "| target | figure | met |", "|---|---|---|"]
    for name, row in result.get("targets", {}).items():
        lines.append(f"| {name} | {row['figure']} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
