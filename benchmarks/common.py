"""Shared helpers of the benchmarks: machine description, percentiles, report writing."""

from __future__ import annotations

import json
from pathlib import Path

from ser_stream.bench.stats import machine
from ser_stream.bench.stats import percentiles as _percentiles
from ser_stream.testing import children

__all__ = ["REPORTS", "machine", "percentiles", "write_report"]

REPORTS = Path(__file__).parent / "reports"


def percentiles(values_ms: list[float]) -> dict:
    """p50/p95/p99/mean/max of a list of milliseconds."""
    return _percentiles(values_ms, suffix="_ms")


def write_report(name: str, report: dict) -> Path:
    """Write ``reports/<name>.json`` and print it."""
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return path


def stage_processes(parent: int) -> dict[str, int]:
    """The live stage processes of a ``ser-stream up`` by stage name, and its supervisor."""
    found = {"supervisor": parent}
    for pid, argv in children(parent).items():
        if "stage" in argv:
            found[argv[argv.index("stage") + 1]] = pid
    return found
