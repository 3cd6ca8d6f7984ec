"""Cost of the denoise stage per window: noise reduction and peak normalization.

Run: ``.venv/bin/python -m benchmarks.bench_denoise [--model DIR] [--runs 300]``
Writes ``benchmarks/reports/denoise.json``: the stage's cost per window with the artifact's
denoise settings, the bundled speech sample over room noise cut into analysis windows and a
noise profile of ``noise_memory_s`` of that noise. Three cases: windows within an utterance
(the profile unchanged since the last window), the first window after new noise (the profile
just changed), and a call of noisereduce itself as the reference. Also what a fresh process
costs to build a core and gate one window: its resident memory (``VmRSS``) and time, three
runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import add_heap_option, machine, percentiles, use_heap, write_report


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


FRESH = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseCore
rng = np.random.default_rng(0)
core = DenoiseCore()
core.push_noise(Noise((0.01 * rng.standard_normal(32_000)).astype(np.float32), 0.0, 2.0))
core.push(Window((0.1 * rng.standard_normal(48_000)).astype(np.float32), 0.0, 3.0, 0, 0))
seconds = time.perf_counter() - t0
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
heavy = ("scipy", "noisereduce", "librosa", "numba", "llvmlite", "tensorflow")
print(json.dumps({
    "vm_rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
    "import_and_first_window_s": round(seconds, 3),
    "heavy_modules": sorted({m.split(".")[0] for m in sys.modules} & set(heavy)),
}))
"""
"""A fresh interpreter: import the stage, build a core, hear 2 s of noise, gate a 3 s window."""


def _fresh_process() -> dict:
    done = subprocess.run(
        [sys.executable, "-P", "-c", FRESH], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="", help="artifact folder (default: shipped)")
    parser.add_argument("--runs", type=int, default=300)
    add_heap_option(parser)
    args = parser.parse_args()
    use_heap(args)

    import noisereduce

    from ser_stream.artifact import load_artifact
    from ser_stream.audio import bundled_sample, load_audio
    from ser_stream.messages import Noise, Window
    from ser_stream.stages.denoise import DenoiseCore
    from ser_stream.stages.vad import sliding_spans
    from ser_stream.testing import room_tone

    artifact = load_artifact(args.model or None)
    config = artifact.analysis.denoise
    rate = artifact.sample_rate
    window_samples = artifact.analysis.features.window_samples
    hop = round(artifact.analysis.features.hop_s * rate)
    speech = load_audio(bundled_sample())
    audio = speech + room_tone(speech.size / rate, -45.0, kind="fan", seed=1, rate=rate)
    windows = [
        Window(audio[a:b], a / rate, b / rate, 0, i)
        for i, (a, b) in enumerate(sliding_spans(audio.size, window_samples, hop))
    ]
    profile_s = config.noise_memory_s
    noises = [
        Noise(room_tone(profile_s, -45.0, kind="fan", seed=seed, rate=rate), 0.0, profile_s)
        for seed in range(len(windows))
    ]

    core = DenoiseCore(config, rate)
    core.push_noise(noises[0])
    steady = _time_ms(core.push, windows, args.runs)

    fresh = DenoiseCore(config, rate)

    def after_noise(pair: tuple[Noise, Window]) -> None:
        fresh.push_noise(pair[0])
        fresh.push(pair[1])

    changed = _time_ms(after_noise, list(zip(noises, windows, strict=True)), args.runs)

    def reference(window: Window) -> None:
        noisereduce.reduce_noise(
            y=window.samples,
            sr=rate,
            y_noise=noises[0].samples,
            stationary=True,
            prop_decrease=config.prop_decrease,
            n_std_thresh_stationary=config.n_std_thresh,
            n_fft=512,
            padding=1024,
        )

    noisereduce_call = _time_ms(reference, windows, args.runs)
    fresh_runs = [_fresh_process() for _ in range(3)]
    write_report(
        "denoise",
        {
            "what": f"denoise stage per {window_samples / rate} s window of the bundled speech "
            f"sample over fan noise, {profile_s} s noise profile, prop_decrease "
            f"{config.prop_decrease}, n_std_thresh {config.n_std_thresh}",
            "command": "python -m benchmarks.bench_denoise",
            "machine": machine(),
            "heap": args.heap,
            "stage_per_window": percentiles(steady),
            "stage_per_window_after_new_noise": percentiles(changed),
            "noisereduce_reduce_noise_per_window": percentiles(noisereduce_call),
            "fresh_process_core_and_one_window": fresh_runs,
            "windows": len(windows),
            "window_samples": int(np.median([w.samples.size for w in windows])),
        },
    )


if __name__ == "__main__":
    main()
