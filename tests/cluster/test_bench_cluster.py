"""``ser-stream bench --engine ray --smoke``: the cluster report is produced and well-formed."""

from __future__ import annotations

import json
import subprocess

import pytest

from ser_stream.testing import SER_STREAM

pytest.importorskip("ray", reason="the cluster bench needs the [ray] extra")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_cluster_bench_reports_one_two_and_three_nodes_beside_local(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [SER_STREAM, "bench", "--engine", "ray", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=590,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "cluster.json").read_text())
    configs = ["local", "ray, 1 node", "ray, 2 nodes", "ray, 3 nodes"]
    assert [name for name in report if name in configs] == configs
    for name in configs:
        rows = report[name]["streams"]
        assert rows and rows[0]["streams"] == 1 and rows[0]["windows"] >= 1, rows
        assert rows[0]["predicted"] + rows[0]["dropped_windows"] == rows[0]["windows"]
        assert rows[0]["ready_s"] > 0
    for count, name in enumerate(configs[1:], start=1):
        cost = report[name]
        assert cost["nodes"] == count and cost["cluster_start_s"] > 0
        assert cost["engine_rss_mb_idle"]["gcs"] > 0 and cost["engine_rss_mb_idle"]["raylets"] > 0
        hosts = [k for k in cost["streams"][0]["rss_mb"] if k.endswith(".host")]
        assert len(hosts) == 4 + count  # capture, vad, denoise, features, one model per node
    markdown = (out / "cluster.md").read_text()
    assert "| ray, 3 nodes | 1 |" in markdown and "The engine's own cost" in markdown
