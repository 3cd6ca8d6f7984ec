"""Cost of the denoise stage per window: noise reduction and peak normalization.

Run: ``.venv/bin/python -m benchmarks.bench_denoise [--model DIR] [--runs 300]``
Writes ``benchmarks/reports/denoise.json``: the stage's cost per window with the artifact's
denoise settings, the bundled speech sample over room noise cut into analysis windows and a
noise profile of ``noise_memory_s`` of that noise. Three cases: windows within an utterance
(the profile unchanged since the last window), the first window after new noise (the profile
just changed), and a call of noisereduce itself as the reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine, percentiles, write_report


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
    args = parser.parse_args()

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
    write_report(
        "denoise",
        {
            "what": f"denoise stage per {window_samples / rate} s window of the bundled speech "
            f"sample over fan noise, {profile_s} s noise profile, prop_decrease "
            f"{config.prop_decrease}, n_std_thresh {config.n_std_thresh}",
            "command": "python -m benchmarks.bench_denoise",
            "machine": machine(),
            "stage_per_window": percentiles(steady),
            "stage_per_window_after_new_noise": percentiles(changed),
            "noisereduce_reduce_noise_per_window": percentiles(noisereduce_call),
            "windows": len(windows),
            "window_samples": int(np.median([w.samples.size for w in windows])),
        },
    )


if __name__ == "__main__":
    main()
