"""`ser-stream bench --smoke`: the report is produced and well-formed (figures are not judged)."""

from __future__ import annotations

import json
import subprocess

from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import SER_STREAM

STAGES = CHAIN


def percentiles_ok(figures: dict) -> bool:
    return figures["n"] > 0 and figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_smoke_bench_writes_the_json_and_the_report(tmp_path):
    out = tmp_path / "results"
    json_path = tmp_path / "bench.json"
    result = subprocess.run(
        [SER_STREAM, "bench", "--smoke", "--json", str(json_path), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(json_path.read_text())
    assert json.loads((out / "bench.json").read_text()) == report

    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert percentiles_ok(report["latency_ms"])
    assert set(STAGES) <= set(report["per_stage_ms"])
    for name in STAGES:
        parts = report["per_stage_ms"][name]
        assert percentiles_ok(parts["queue"]) and percentiles_ok(parts["processing"])
    assert 0.2 < report["first_emotion_s"] < 5.0
    assert report["throughput_x_realtime"] > 1.0
    assert report["max_streams"] >= 1
    for rows in report["streams"].values():
        assert [row["streams"] for row in rows][0] == 1
        assert all(row["windows"] == row["predicted"] + row["dropped_windows"] for row in rows)
    assert set(STAGES) <= set(report["rss_mb"]) and "supervisor" in report["rss_mb"]
    parts = sum(v for k, v in report["rss_mb"].items() if k != "total")
    assert abs(report["rss_mb"]["total"] - parts) < 1.0
    slow = report["backpressure"]["slow_model"]
    assert slow["accounting_adds_up"] and slow["dropped"] == 0
    assert set(report["targets"]) and all("met" in t for t in report["targets"].values())

    markdown = (out / "bench.md").read_text()
    assert "One live stream" in markdown and report["machine"]["cpu"] in markdown
    for plot in ("bench_latency.png", "bench_streams.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
