"""Cost of the features stage per window: extraction and stream normalization.

Run: ``.venv/bin/python -m benchmarks.bench_features [--model DIR] [--runs 300]``
(``OPENBLAS_NUM_THREADS=1`` before it measures the stage with single-threaded BLAS)
Writes ``benchmarks/reports/features.json``: the stage's cost per window with the model's
feature set, and the same cost split into spectral features, prosody (pitch + voicing) and
stream normalization, so a richer feature set shows what it adds.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from benchmarks.common import add_heap_option, machine, percentiles, use_heap, write_report

_SPECTRAL = ("rms", "zcr", "mfcc", "mfcc_delta", "mfcc_delta2", "logmel", "tilt")
_PROSODY = ("pitch", "voicing")


def _time_ms(action, inputs, runs: int) -> list[float]:
    for item in inputs[:5]:
        action(item)
    timings = []
    for i in range(runs):
        item = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        action(item)
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="", help="artifact folder (default: shipped)")
    parser.add_argument("--runs", type=int, default=300)
    add_heap_option(parser)
    args = parser.parse_args()
    use_heap(args)

    from ser_stream.analysis import speech_windows
    from ser_stream.artifact import load_artifact
    from ser_stream.audio import bundled_sample, load_audio
    from ser_stream.stages.features import FeaturesCore, extract_features
    from ser_stream.stages.normalize import StreamNormalizer

    artifact = load_artifact(args.model or None)
    analysis = artifact.analysis
    config = analysis.features
    windows = speech_windows(load_audio(bundled_sample()), analysis)
    core = FeaturesCore(config, analysis.normalize)
    stage = _time_ms(core.push, windows, args.runs)
    parts = {}
    spectral = tuple(k for k in config.kinds if k in _SPECTRAL)
    prosody = tuple(k for k in config.kinds if k in _PROSODY)
    for name, kinds in (("spectral", spectral), ("prosody", prosody)):
        if kinds:
            part = replace(config, kinds=kinds)
            parts[name] = percentiles(
                _time_ms(lambda w, part=part: extract_features(w.samples, part), windows, args.runs)
            )
    if analysis.normalize.enabled:
        normalizer = StreamNormalizer(
            analysis.normalize, config.n_features, column_kinds=config.column_kinds
        )
        matrices = [(extract_features(w.samples, config), w.t_start, w.t_end) for w in windows]
        parts["stream_normalization"] = percentiles(
            _time_ms(lambda m: normalizer.push(*m), matrices, args.runs)
        )
    write_report(
        "features",
        {
            "what": f"features stage per {config.window_s} s window of the bundled speech "
            f"sample: {', '.join(config.kinds)} ({config.n_frames}x{config.n_features}), "
            f"stream normalization {analysis.normalize.mode}",
            "command": "python -m benchmarks.bench_features",
            "machine": machine(),
            "heap": args.heap,
            # Multi-threaded BLAS (the mel projection) has long stalls on a busy machine.
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
            "stage_per_window": percentiles(stage),
            "parts_per_window": parts,
        },
    )


if __name__ == "__main__":
    main()
