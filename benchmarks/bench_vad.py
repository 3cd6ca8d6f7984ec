"""VAD engines compared on generated speech in noise: frame accuracy, stop timing and cost.

Speech is espeak-ng sentences in six voices and three languages (no corpus voice), between
pauses of 0.4-2.5 s. Noise (hiss, fan, hum) is added at several SNRs, plus a "level step"
stream whose sentences carry a quiet studio background while the pauses hold a louder room:
the case where a VAD that adapts slowly keeps hearing speech. Truth per frame comes from the
clean sentence (within 40 dB of its peak).

For each engine (webrtc with and without its noise floor gate, silero):
frame accuracy, speech recall and false alarm rate of the frame decisions; utterances found;
and the error of the ``silence`` event against 2.0 s after the last true speech. Cost is the
time per frame and per second of audio on one core.

Run: ``.venv/bin/python -m benchmarks.bench_vad [--sentences 12]``
Writes ``benchmarks/reports/vad.json``. Needs espeak-ng (``make test`` installs it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_report

RATE = 16_000
VOICES = ("en+m3", "en+f2", "en-us+m1", "en+f4", "de+m2", "fr+f1")
TEXTS = (
    "I can't believe you did that again.",
    "Please bring the blue folder to my office.",
    "We won! We actually won the final!",
    "Leave me alone, I don't want to talk about it.",
    "Das Wetter ist heute wirklich wunderbar.",
    "Je ne sais pas ce que tu veux dire.",
    "Why would anyone park a truck right there?",
    "Well, that was the most boring film ever.",
)
CONDITIONS = [
    ("hiss", 30), ("hiss", 20), ("hiss", 10), ("hiss", 5), ("hiss", 0),
    ("fan", 20), ("fan", 10), ("fan", 5),
    ("hum", 20), ("hum", 10),
    ("level_step", 30),
]  # fmt: skip
"""(noise kind, SNR in dB against the speech's active level)."""


def sentences(count: int, folder: Path) -> list[np.ndarray]:
    """Synthesize ``count`` sentences with espeak-ng, cycling voices and texts."""
    from ser_stream.audio import load_audio

    out = []
    for i in range(count):
        path = folder / f"s{i}.wav"
        voice, text = VOICES[i % len(VOICES)], TEXTS[i % len(TEXTS)]
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        out.append(load_audio(str(path)))
    return out


def speech_truth(clean: np.ndarray) -> np.ndarray:
    """Per 10 ms: True where the clean speech is within 40 dB of its loudest 10 ms."""
    from ser_stream.stages.voicing import frame_db

    levels = np.array([frame_db(clean[i : i + 160]) for i in range(0, clean.size, 160)])
    return levels > levels.max() - 40


def build_stream(
    speech: list[np.ndarray], kind: str, snr_db: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sentences between pauses plus noise; returns (audio, truth per 10 ms)."""
    from ser_stream.testing import room_tone

    rng = np.random.default_rng(seed)
    clean_parts, truth_parts = [], []
    for sentence in speech:
        pause = np.zeros(round(rng.uniform(0.4, 2.5) * RATE), dtype=np.float32)
        clean_parts += [pause, sentence]
        truth_parts += [np.zeros(pause.size // 160, bool), speech_truth(sentence)]
    tail = np.zeros(4 * RATE, dtype=np.float32)
    clean = np.concatenate([*clean_parts, tail])
    truth = np.concatenate([*truth_parts, np.zeros(tail.size // 160, bool)])
    truth = np.pad(truth, (0, max(0, clean.size // 160 - truth.size)))[: clean.size // 160]
    active = np.repeat(truth, 160)[: clean.size]
    speech_db = 10 * np.log10(np.mean(np.square(clean[: active.size][active])))
    if kind == "level_step":
        # Sentences keep a -75 dBFS studio background; pauses and the tail are a -45 dBFS room.
        studio = room_tone(clean.size / RATE, -75, seed=seed + 1)
        room = room_tone(clean.size / RATE, -45, seed=seed + 2)
        inside = np.zeros(clean.size, bool)
        position = 0
        for part in clean_parts:
            if part.any():
                inside[position : position + part.size] = True
            position += part.size
        audio = clean + np.where(inside, studio, room)
    else:
        noise = room_tone(clean.size / RATE, speech_db - snr_db, kind=kind, seed=seed)
        audio = clean + noise
    return audio.astype(np.float32), truth


def frame_scores(audio: np.ndarray, truth: np.ndarray, config) -> tuple[dict, float]:
    """Frame decisions of one engine against the truth; returns (scores, seconds per frame)."""
    from ser_stream.stages.vad import VADCore

    core = VADCore(config)
    size = core.frame_samples
    frames = [audio[i : i + size] for i in range(0, audio.size - size + 1, size)]
    started = time.perf_counter()
    decided = np.array([core.voiced_frame(f) for f in frames])
    per_frame = (time.perf_counter() - started) / len(frames)
    # Truth per engine frame: most of its 10 ms parts are speech.
    sub = size // 160
    want = np.array(
        [truth[i * size // 160 : i * size // 160 + sub].mean() > 0.5 for i in range(len(frames))]
    )
    scores = {
        "accuracy": float(np.mean(decided == want)),
        "speech_recall": float(decided[want].mean()) if want.any() else None,
        "false_alarm": float(decided[~want].mean()) if (~want).any() else None,
    }
    return scores, per_frame


def stop_timing(audio: np.ndarray, truth: np.ndarray, config) -> dict:
    """Utterances found, and when ``silence`` fires against 2 s after the last true speech."""
    from ser_stream.messages import Event
    from ser_stream.stages.vad import VADCore
    from ser_stream.testing import run_core

    outputs = run_core(VADCore(replace(config, silence_event_s=2.0)), [audio])
    events = [o for o in outputs if isinstance(o, Event)]
    last_speech = (np.flatnonzero(truth)[-1] + 1) * 160 / RATE
    after = [e.t for e in events if e.name == "silence" and e.t > last_speech]
    return {
        "utterances_found": sum(e.name == "speech_start" for e in events),
        "silence_error_s": round(after[0] - (last_speech + 2.0), 3) if after else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=12, help="sentences per stream")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("bench_vad needs espeak-ng (make test installs it)")

    from ser_stream.stages.vad import VADConfig

    engines = {
        "webrtc+gate": VADConfig(engine="webrtc"),  # the default: 6 dB over a 2 s floor
        "webrtc": VADConfig(engine="webrtc", energy_margin_db=None),
        "silero": VADConfig(engine="silero", energy_margin_db=None),
    }
    with tempfile.TemporaryDirectory() as folder:
        speech = sentences(args.sentences, Path(folder))
    results: dict[str, dict] = {name: {"conditions": {}} for name in engines}
    timing: dict[str, list[float]] = {name: [] for name in engines}
    for index, (kind, snr) in enumerate(CONDITIONS):
        audio, truth = build_stream(speech, kind, snr, seed=index)
        label = f"{kind}@{snr}dB" if kind != "level_step" else "level_step"
        for name, config in engines.items():
            scores, per_frame = frame_scores(audio, truth, config)
            timing[name].append(per_frame)
            results[name]["conditions"][label] = {**scores, **stop_timing(audio, truth, config)}
    for name, config in engines.items():
        entry = results[name]
        conditions = entry["conditions"].values()
        frame_ms = 32.0 if config.engine == "silero" else float(config.frame_ms)
        per_frame_us = float(np.median(timing[name])) * 1e6
        entry["mean_accuracy"] = round(float(np.mean([c["accuracy"] for c in conditions])), 4)
        errors = [abs(c["silence_error_s"]) for c in conditions if c["silence_error_s"] is not None]
        entry["silence_missed"] = sum(c["silence_error_s"] is None for c in conditions)
        entry["silence_abs_error_s_max"] = round(max(errors), 3) if errors else None
        entry["cost_us_per_frame"] = round(per_frame_us, 1)
        entry["cost_ms_per_audio_s"] = round(per_frame_us / frame_ms, 3)
    report = {
        "machine": machine(),
        "sentences": args.sentences,
        "voices": list(VOICES),
        "utterances_true": args.sentences,
        "engines": results,
    }
    write_report("vad", report)
    print()
    print("| condition | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    for label in results["webrtc"]["conditions"]:
        cells = []
        for name in engines:
            c = results[name]["conditions"][label]
            err = "missed" if c["silence_error_s"] is None else f"{c['silence_error_s']:+.2f} s"
            cells.append(f"{c['accuracy']:.1%} · {c['utterances_found']} utt · stop {err}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
