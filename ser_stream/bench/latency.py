"""One live stream at real time: latency end to end and per stage, the first emotion."""

from __future__ import annotations

from pathlib import Path

from ser_stream.bench.session import (
    Recorder,
    bench_audio,
    bench_config,
    pipeline_labels,
    write_wav,
)
from ser_stream.bench.stats import percentiles
from ser_stream.messages import Event
from ser_stream.runtime import RECEIVED
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.pipeline import run_pipeline
from ser_stream.supervisor.wiring import CHAIN

__all__ = ["end_of_utterance_s", "first_emotion_s", "measure_latency", "per_stage_ms"]


def per_stage_ms(recorder: Recorder) -> dict:
    """Per stage: the wait before it (queue and hop) and its processing, as percentiles."""
    split: dict[str, dict[str, list[float]]] = {}
    for arrival in recorder.predictions:
        ts = arrival.envelope.timestamps
        previous = "capture"
        for name in CHAIN:
            received = ts.get(f"{name}{RECEIVED}")
            if received is None or name not in ts or previous not in ts:
                break
            times = split.setdefault(name, {"queue": [], "processing": []})
            times["queue"].append((received - ts[previous]) / 1e6)
            times["processing"].append((ts[name] - received) / 1e6)
            previous = name
        if CHAIN[-1] in ts:
            times = split.setdefault("collector", {"queue": [], "processing": []})
            times["queue"].append((arrival.at_ns - ts[CHAIN[-1]]) / 1e6)
    return {
        name: {part: percentiles(values) for part, values in parts.items() if values}
        for name, parts in split.items()
    }


def first_emotion_s(recorder: Recorder) -> list[float]:
    """For each utterance: speech onset to the arrival of its first emotion, in seconds."""
    if not recorder.predictions:
        return []
    delays = []
    for arrival in recorder.events:
        event: Event = arrival.envelope.body  # type: ignore[assignment]
        if event.name != "speech_start":
            continue
        answer = next(
            (
                p.at_ns
                for p in recorder.predictions
                if p.envelope.stream == arrival.envelope.stream and p.envelope.body.t_end > event.t  # type: ignore[union-attr]
            ),
            None,
        )
        if answer is not None:
            delays.append((answer - recorder.wall_ns(event.t)) / 1e9)
    return delays


def end_of_utterance_s(recorder: Recorder) -> list[float]:
    """For each utterance: its last speech sample to the arrival of its final window.

    Beyond the pipeline's latency this holds the VAD's wait to be sure speech has ended
    (its hangover): the final window is complete only once that is decided.
    """
    if not recorder.predictions:
        return []
    delays = []
    for arrival in recorder.events:
        event: Event = arrival.envelope.body  # type: ignore[assignment]
        if event.name != "speech_end":
            continue
        final = next(
            (p for p in recorder.predictions if abs(p.envelope.body.t_end - event.t) < 0.05),  # type: ignore[union-attr]
            None,
        )
        if final is not None:
            delays.append((final.at_ns - recorder.wall_ns(event.t)) / 1e9)
    return delays


def measure_latency(seconds: float, folder: Path, **options) -> tuple[dict, Recorder, Run]:
    """One live stream at real time: end-to-end and per-stage latency, first emotion."""
    wav = write_wav(folder / "live.wav", bench_audio(seconds))
    recorder = Recorder()
    run = run_pipeline(
        bench_config((f"file:{wav}",), folder, **options), [recorder], pipeline_labels()
    )
    delays = first_emotion_s(recorder)
    summary = run.summary(pipeline_labels())
    result = {
        "audio_s": seconds,
        "latency_ms": percentiles(recorder.latencies_ms()),
        "per_stage_ms": per_stage_ms(recorder),
        "first_emotion_s": percentiles(delays),
        "end_of_utterance_s": percentiles(end_of_utterance_s(recorder)),
        "windows": summary["windows"],
        "predicted": summary["predicted"],
        "cpu_s_per_audio_s": round(sum(run.cpu_s.values()) / seconds, 4),
    }
    return result, recorder, run
