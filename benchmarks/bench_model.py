"""Model serving latency per 3 s window and memory of a process that serves the model.

Run: ``.venv/bin/python -m benchmarks.bench_model [--model DIR] [--runs 2000]``
Writes ``benchmarks/reports/model.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import machine, percentiles, write_report

_RSS_PROBE = r"""
import json, sys, numpy as np
from ser_stream.artifact import load_artifact
from ser_stream.stages.model import ModelCore
artifact = load_artifact(sys.argv[1] or None)
core = ModelCore(artifact)
f = artifact.analysis.features
x = np.random.default_rng(0).standard_normal((1, f.n_frames, f.n_features)).astype(np.float32)
for _ in range(200):
    core.probabilities(x)
from ser_stream.testing import status_mb
print(json.dumps({k: status_mb("self", k) for k in ("VmRSS", "VmHWM")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="", help="artifact folder (default: shipped)")
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    from ser_stream.artifact import load_artifact
    from ser_stream.stages.model import ModelCore

    artifact = load_artifact(args.model or None)
    core = ModelCore(artifact)
    f = artifact.analysis.features
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((64, 1, f.n_frames, f.n_features)).astype(np.float32)
    for x in windows[:10]:
        core.probabilities(x)
    single = []
    for i in range(args.runs):
        x = windows[i % 64]
        t0 = time.perf_counter()
        core.probabilities(x)
        single.append((time.perf_counter() - t0) * 1000)
    batch = windows[:16, 0]
    batched = []
    for _ in range(max(50, args.runs // 20)):
        t0 = time.perf_counter()
        core.probabilities(batch)
        batched.append((time.perf_counter() - t0) * 1000 / len(batch))
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, args.model], capture_output=True, text=True, check=True
    )
    memory = json.loads(probe.stdout)
    write_report(
        "model",
        {
            "what": "ModelCore (onnxruntime, 1 thread) on one window of "
            f"{f.window_s} s = {f.n_frames}x{f.n_features} features",
            "command": "python -m benchmarks.bench_model",
            "machine": machine(),
            "single_window": percentiles(single),
            "batch_of_16_per_window": percentiles(batched),
            "serving_process_memory_mib": {
                "rss": round(memory["VmRSS"], 1),
                "peak_rss": round(memory["VmHWM"], 1),
            },
        },
    )


if __name__ == "__main__":
    main()
