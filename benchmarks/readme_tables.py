"""The README's figure table, rendered from the committed bench report and nothing else.

A figure in the README's benchmark table can only come from ``benchmarks/results/bench.json``
(the report ``ser-stream bench`` wrote): this module renders the table between the
``<!-- bench-table:begin -->`` and ``<!-- bench-table:end -->`` markers, and a unit test holds
the README equal to the rendering, so a figure without a report cannot appear there.

Run ``python -m benchmarks.readme_tables`` after committing a new report to rewrite the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "bench.json"
README = ROOT / "README.md"
BEGIN = "<!-- bench-table:begin -->"
END = "<!-- bench-table:end -->"

__all__ = ["render_table", "replace_table"]


def _pct(figures: dict, unit: str = "ms", digits: int = 1) -> str:
    return ", ".join(f"{key} {figures[key]:.{digits}f} {unit}" for key in ("p50", "p95", "p99"))


def _targets(result: dict, *topics: str) -> str:
    """The bench's own verdicts on the targets about ``topics``, as the report states them.

    Matched by words in the target's name, so a report keeps its verdicts when a later
    version of the bench sets other thresholds.
    """
    verdicts = [
        f"{name}: {'met' if verdict['met'] else 'not met'}"
        for name, verdict in result.get("targets", {}).items()
        if any(topic in name for topic in topics)
    ]
    return "; ".join(verdicts)


def _spread(result: dict) -> str:
    """The p95 of every one-stream run, when the bench ran it more than once."""
    runs = result.get("latency_runs_ms", [])
    if len(runs) < 2:
        return ""
    p95s = sorted(run["p95"] for run in runs)
    return f"; p95 {p95s[0]:.1f}-{p95s[-1]:.1f} ms over {len(runs)} runs (the median run shown)"


def _streams(result: dict) -> str:
    rows = result.get("max_streams_by_config", {})
    return "; ".join(f"{count} with {config}" for config, count in rows.items()) or "n/a"


def _memory(result: dict) -> str:
    rss = dict(result["rss_mb"])
    total = rss.pop("total")
    parts = ", ".join(f"{name} {mb:.0f}" for name, mb in sorted(rss.items(), key=lambda i: -i[1]))
    text = f"sum of peak RSS {total:.0f} MB ({parts}); PSS {result['pss_mb_total']:.0f} MB"
    extra = result.get("rss_mb_per_extra_stream")
    if extra is not None:
        text += f"; {extra:.1f} MB more per extra stream"
    return text


def _rows(result: dict) -> list[tuple[str, str, str]]:
    stages = result["per_stage_ms"]
    per_stage = ", ".join(
        f"{name} {parts['processing']['p50']:.1f}"
        for name, parts in stages.items()
        if parts.get("processing", {}).get("n")
    )
    fast = result["throughput"]
    rows = [
        (
            "one live stream, capture of the frame that completes a window to the sink",
            _pct(result["latency_ms"])
            + f" ({result['latency_ms']['n']} windows)"
            + _spread(result),
            _targets(result, "one stream p9"),
        ),
        ("of which per stage, p50 processing", per_stage + " ms", ""),
        (
            "first emotion after speech onset, median",
            f"{result['first_emotion']['p50']:.2f} s ({result['first_emotion']['n']} utterances)",
            "",
        ),
        (
            "an utterance's last speech sample to its final window's emotion",
            _pct(result["end_of_utterance"], "s", 2),
            "",
        ),
        (
            "file throughput, `--fast`",
            ", ".join(f"{vad} {row['x_realtime']:.0f}x real time" for vad, row in fast.items()),
            _targets(result, "file throughput"),
        ),
        (
            "concurrent real-time streams at p95 <= 100 ms, nothing lost",
            _streams(result),
            _targets(result, "streams", "at p95"),
        ),
        (
            "memory of `ser-stream up --fast`, one stream",
            _memory(result),
            _targets(result, "RSS", "per extra stream"),
        ),
    ]
    slow = result.get("backpressure", {}).get("slow_model")
    if slow:
        rows.append(
            (
                slow["what"],
                f"{slow['predicted']} of {slow['windows']} windows predicted, "
                f"{slow['dropped']} dropped",
                "",
            )
        )
    original = result.get("original")
    if original and "skipped" not in original:
        reach = original["speech_to_result_s"]
        rows.append(
            (
                f"the original's approach ({original['what']})",
                f"speech to result {reach['best']:.2f}-{reach['worst']:.2f} s "
                f"(mean {reach['mean']:.2f} s); "
                f"{original['processing_ms']['p50']:.0f} ms per block",
                "",
            )
        )
    return rows


def render_table(result: dict) -> str:
    """The Markdown table of the bench report ``result``, with the machine it ran on."""
    machine = result["machine"]
    lines = [
        BEGIN,
        f"Figures of `benchmarks/results/bench.json` (`{result['command']}` on "
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, {machine['date']}); this table is rendered from it by "
        "`python -m benchmarks.readme_tables`.",
        "",
        "| what | figure | target |",
        "|---|---|---|",
        *(f"| {what} | {figure} | {target} |" for what, figure, target in _rows(result)),
        END,
    ]
    return "\n".join(lines)


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    return readme[:start] + table + readme[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check``, verify) the README's table from the committed report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme_tables")
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    readme = README.read_text()
    rendered = replace_table(readme, render_table(json.loads(REPORT.read_text())))
    if args.check:
        return 0 if rendered == readme else 1
    README.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
