"""Shared helpers of the benchmarks: machine description, percentiles, report writing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ser_stream.bench.stats import machine
from ser_stream.bench.stats import percentiles as _percentiles
from ser_stream.testing import children

__all__ = ["REPORTS", "add_heap_option", "machine", "percentiles", "use_heap", "write_report"]

REPORTS = Path(__file__).parent / "reports"


def percentiles(values_ms: list[float]) -> dict:
    """p50/p95/p99/mean/max of a list of milliseconds."""
    return _percentiles(values_ms, suffix="_ms")


def add_heap_option(parser: argparse.ArgumentParser) -> None:
    """``--heap``: measure a stage's core as its own process runs it, or under glibc's policy."""
    parser.add_argument(
        "--heap",
        choices=("kept", "default"),
        default="kept",
        help="kept: freed buffers stay in the heap, as in the stage's own process (default); "
        "default: glibc's own policy",
    )


def use_heap(args: argparse.Namespace) -> None:
    """Apply the ``--heap`` policy to this process (see :mod:`ser_stream.heap`)."""
    if args.heap == "kept":
        from ser_stream.heap import keep_freed_buffers

        keep_freed_buffers()


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
