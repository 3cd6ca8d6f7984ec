"""The measurements of ``ser-stream bench``, each one ``up`` session of real stage processes.

Every figure comes from the timestamps the messages carry: each stage stamps a message when
it arrives (``STAGE.in``) and when it leaves (``STAGE``), the capture when the last sample of
its frame was heard, and the bench's sink when the record reached it. Audio is real speech
(the bundled sample) with pauses of room noise, never digital silence.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_stream.audio import SAMPLE_RATE, bundled_sample, load_audio
from ser_stream.bench.stats import percentiles
from ser_stream.messages import Event
from ser_stream.runtime import RECEIVED
from ser_stream.settings import PipelineConfig
from ser_stream.sinks import Sink
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.pipeline import run_pipeline
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.wire import Envelope

__all__ = [
    "Recorder",
    "bench_audio",
    "measure_backpressure",
    "measure_latency",
    "measure_streams",
    "measure_throughput",
]

ROOM_DBFS = -50.0
"""Level of the noise under and between the speech."""


def bench_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Real speech (the bundled sample) with 1.5 s pauses, over room noise, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    speech = load_audio(str(bundled_sample()))
    pause = np.zeros(round(1.5 * SAMPLE_RATE), dtype=np.float32)
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        pieces += [speech, pause]
        total += speech.size + pause.size
    audio = np.concatenate(pieces)[: round(seconds * SAMPLE_RATE)]
    room = rng.standard_normal(audio.size).astype(np.float32) * 10 ** (ROOM_DBFS / 20)
    return np.clip(audio + room, -1.0, 1.0)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """16-bit WAV of canonical audio."""
    import soundfile

    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


@dataclass
class Arrival:
    """A record as the bench's sink received it."""

    at_ns: int
    envelope: Envelope


@dataclass
class Recorder(Sink):
    """A sink that keeps every prediction and event with the time it arrived."""

    predictions: list[Arrival] = field(default_factory=list)
    events: list[Arrival] = field(default_factory=list)
    ended_ns: dict[str, int] = field(default_factory=dict)

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Keep it."""
        self.predictions.append(Arrival(time.time_ns(), envelope))

    def event(self, envelope: Envelope) -> None:
        """Keep it."""
        self.events.append(Arrival(time.time_ns(), envelope))

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Note when it ended."""
        self.ended_ns[stream] = time.time_ns()

    def first_capture_ns(self) -> int:
        """When the capture sent the earliest record seen (its process start excluded)."""
        return min(
            a.envelope.timestamps["capture"]
            for a in [*self.predictions, *self.events]
            if "capture" in a.envelope.timestamps
        )

    def wall_ns(self, t: float) -> float:
        """When stream time ``t`` was heard, from the first prediction's capture stamp.

        A window's capture stamp is the moment its last sample (``t_end``) was heard.
        """
        first = self.predictions[0]
        return first.envelope.timestamps["capture"] + (t - first.envelope.body.t_end) * 1e9  # type: ignore[union-attr]

    def latencies_ms(self) -> list[float]:
        """Capture of each window's last sample to its prediction at this sink."""
        return [
            (a.at_ns - a.envelope.timestamps["capture"]) / 1e6
            for a in self.predictions
            if "capture" in a.envelope.timestamps
        ]


def _labels() -> tuple[str, ...]:
    from ser_stream.labels import LABELS

    return LABELS


def _config(sources: tuple[str, ...], folder: Path, **options) -> PipelineConfig:
    return PipelineConfig(
        sources=sources, stop_on_silence_s=None, publish=f"ipc://{folder}/publish", **options
    )


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
    run = run_pipeline(_config((f"file:{wav}",), folder, **options), [recorder], _labels())
    delays = first_emotion_s(recorder)
    summary = run.summary(_labels())
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


def measure_throughput(seconds: float, folder: Path, **options) -> tuple[dict, Run]:
    """One file as fast as the pipeline goes (``--fast``): audio seconds per wall second."""
    wav = write_wav(folder / "fast.wav", bench_audio(seconds, seed=1))
    recorder = Recorder()
    run = run_pipeline(
        _config((f"file:{wav}",), folder, fast=True, **options), [recorder], _labels()
    )
    wall_s = (max(recorder.ended_ns.values()) - recorder.first_capture_ns()) / 1e9
    summary = run.summary(_labels())
    result = {
        "audio_s": seconds,
        "wall_s": round(wall_s, 3),
        "x_realtime": round(seconds / wall_s, 1),
        "windows": summary["windows"],
        "predicted": summary["predicted"],
        "rss_mb": _rss(run),
        "pss_mb": round(sum(run.pss_mb.values()), 1),
    }
    return result, run


def _rss(run: Run) -> dict:
    return {"total": round(sum(run.peak_rss_mb.values()), 1), **run.peak_rss_mb}


def _produce(endpoint: str, count: int, seconds: float, report: dict) -> None:
    """``count`` live producers on one socket: 30 ms frames at real time, independent timing.

    A live producer cannot wait: a frame the pipeline cannot take at once is dropped and
    counted, and so is any lateness behind the audio clock.
    """
    import json

    import zmq

    audio = np.round(bench_audio(seconds, seed=2) * 32767).astype("<i2")
    rng = np.random.default_rng(3)
    offsets = rng.uniform(0.0, 1.5, count)  # streams do not start in lockstep
    # nor talk in lockstep: each starts somewhere else in the speech, as independent callers
    cycle = round((load_audio(str(bundled_sample())).size / SAMPLE_RATE + 1.5) * SAMPLE_RATE)
    shifts = rng.integers(0, min(cycle, audio.size), count)
    frame = SAMPLE_RATE * 30 // 1000
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 10_000)
    push.connect(endpoint)
    time.sleep(0.2)
    sent = np.zeros(count, dtype=int)  # frames sent per stream
    frames = -(-audio.size // frame)
    dropped = 0
    worst_late = 0.0
    start = time.monotonic()
    wall_start = time.time_ns()

    def message(
        kind: str, stream: int, seq: int, fields: dict, body: bytes | None, due: float = 0.0
    ) -> list:
        # "produced": when the frame's last sample was due at the producer (its real time)
        stamps = {"produced": int(wall_start + due * 1e9)} if due else {}
        header = {"v": 1, "kind": kind, "stream": f"bench-{stream}", "seq": seq, "ts": stamps}
        header.update(fields)
        return [json.dumps(header).encode()] + ([body] if body is not None else [])

    while (sent < frames).any():
        now = time.monotonic() - start
        for i in range(count):
            due = offsets[i] + (sent[i] + 1) * frame / SAMPLE_RATE
            while sent[i] < frames and due <= now:
                worst_late = max(worst_late, now - due)
                at = (shifts[i] + sent[i] * frame) % audio.size
                chunk = np.roll(audio, -at)[:frame] if at + frame > audio.size else (
                    audio[at : at + frame])  # fmt: skip
                fields = {"sample_rate": SAMPLE_RATE, "t_start": sent[i] * frame / SAMPLE_RATE,
                          "dtype": "int16", "shape": [chunk.size]}  # fmt: skip
                try:
                    frames_out = message("audio", i, int(sent[i]), fields, chunk.tobytes(), due)
                    push.send_multipart(frames_out, zmq.NOBLOCK)
                except zmq.Again:
                    dropped += 1
                sent[i] += 1
                due += frame / SAMPLE_RATE
        time.sleep(0.005)
    for i in range(count):
        push.send_multipart(message("end_of_stream", i, int(sent[i]), {"reason": "eof"}, None))
    push.close(linger=60_000)
    context.term()
    report["dropped_frames"] = dropped
    report["producer_late_ms"] = round(worst_late * 1000, 1)


def measure_streams(
    counts: list[int], seconds: float, folder: Path, *, limit_ms: float = 100.0, **options
) -> list[dict]:
    """N live streams through one pipeline, N growing until p95 passes ``limit_ms`` or loss."""
    rows = []
    for count in counts:
        endpoint = f"ipc://{folder}/producers-{count}"
        recorder = Recorder()
        manager = multiprocessing.Manager()
        report = manager.dict()
        producer = multiprocessing.Process(
            target=_produce, args=(endpoint, count, seconds, report), daemon=True
        )
        started = {}

        def start(producer=producer, started=started, endpoint=endpoint) -> None:
            # Live producers talk only once the capture listens (its ipc file exists):
            # audio queued during the capture's start-up is no latency of the pipeline.
            socket_file = Path(endpoint.removeprefix("ipc://"))
            deadline = time.monotonic() + 60
            while not socket_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            started["t"] = time.monotonic()
            producer.start()

        def overdue(producer=producer, recorder=recorder) -> bool:
            # A pipeline far behind real time: the producer gave up on what it could not send
            # (its queue closes 60 s after its last frame), so some streams will never end.
            last = max((a.at_ns for a in recorder.predictions), default=time.time_ns())
            return not producer.is_alive() and time.time_ns() - last > 90e9

        run = run_pipeline(
            _config((f"zmq:{endpoint}",), folder, streams=count, **options),
            [recorder],
            _labels(),
            on_ready=start,
            should_stop=overdue,
        )
        producer.join(timeout=30)
        wall = time.monotonic() - started["t"]
        summary = run.summary(_labels())
        latency = percentiles(_producer_latencies_ms(recorder))
        unfinished = count - sum(1 for session in run.streams.values() if session.ended)
        lost = summary["dropped"] + int(report.get("dropped_frames", 0)) + unfinished
        ok = latency.get("p95", float("inf")) <= limit_ms and lost == 0
        rows.append(
            {
                "streams": count,
                "latency_ms": latency,
                "windows": summary["windows"],
                "predicted": summary["predicted"],
                "dropped_windows": summary["dropped"],
                "dropped_frames": int(report.get("dropped_frames", -1)),
                "streams_unfinished": unfinished,
                "producer_late_ms": report.get("producer_late_ms"),
                "cpu_cores": round(sum(run.cpu_s.values()) / wall, 2),
                "rss_mb": _rss(run),
                "ok": ok,
            }
        )
        manager.shutdown()
        if not ok:
            break
    return rows


def _producer_latencies_ms(recorder: Recorder) -> list[float]:
    """From when the frame that completed each window was due at its producer, to the sink.

    Unlike the capture's stamp this includes any wait in the producer's queue before the
    capture took the frame: a pipeline that falls behind real time shows it.
    """
    return [
        (a.at_ns - a.envelope.timestamps["produced"]) / 1e6
        for a in recorder.predictions
        if "produced" in a.envelope.timestamps
    ]


def measure_memory(seconds: float, folder: Path) -> dict:
    """Peak memory of every process of a real ``ser-stream up --fast`` (its own supervisor).

    The other measurements run the supervisor inside the bench's process; this one runs
    ``up`` as the user would and takes the usage its supervisor logs at the end.
    """
    import json
    import subprocess

    from ser_stream.supervisor.wiring import self_command

    wav = write_wav(folder / "memory.wav", bench_audio(seconds, seed=1))
    command = [*self_command(), "--log-level", "info", "up", "--fast",
               "--source", f"file:{wav}", "--sink", f"jsonl:{folder / 'memory.jsonl'}",
               "--publish", f"ipc://{folder}/memory-publish"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    for line in result.stderr.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "usage":
            rss = record["peak_rss_mb"]
            return {
                "rss_mb": {"total": round(sum(rss.values()), 1), **rss},
                "pss_mb": round(sum(record["pss_mb"].values()), 1),
            }
    raise RuntimeError(f"ser-stream up reported no usage: {result.stderr[-500:]}")


class _DutyCycle(threading.Thread):
    """Slows a process down by stopping it for ``share`` of every second (SIGSTOP/SIGCONT)."""

    def __init__(self, pid: int, share: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.share = pid, share
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                if self.halt.wait(self.share):
                    break  # continued below at once: the session is ending
                os.kill(self.pid, signal.SIGCONT)
                self.halt.wait(1 - self.share)
        except ProcessLookupError:
            pass
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _child_pid(stage: str) -> int | None:
    """The pid of this process's child that runs ``ser-stream stage STAGE`` (Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"stage" in argv and stage.encode() in argv:
            return int(entry.name)
    return None


def _slow_subscriber(endpoint: str, delay_s: float, done, report: dict) -> None:
    """A sink that takes ``delay_s`` per record: it may miss records, it must not stall us."""
    import zmq

    from ser_stream.wire import decode

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 8)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    got, gaps, last = 0, 0, {}
    while not done.is_set():
        if not sub.poll(200):
            continue
        envelope = decode(sub.recv_multipart())
        if envelope.stream != "-":
            expected = last.get(envelope.stream, -1) + 1
            gaps += max(0, envelope.seq - expected)
            last[envelope.stream] = envelope.seq
        got += 1
        time.sleep(delay_s)
    report["received"] = got
    report["missed_by_sequence"] = gaps
    context.destroy(linger=0)


SLOW_MODEL_STOPPED = 0.98
"""Share of every second the slow model is stopped: about 3 windows a second get through."""


class _CaptureWait:
    """The time the capture spent blocked sending, from its heartbeats to the supervisor.

    A capture reports ``stalled_s`` > 0 only while a send of it waits for the next stage;
    each wait counts once, at the most it reached. A heartbeat comes every second, so waits
    shorter than that may go unseen: the figure is a lower bound.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.total_s = 0.0
        self.waits = 0
        self._heard = 0.0
        self._current = 0.0

    def look(self) -> bool:
        """Take the capture's latest heartbeat into account; never asks the session to stop."""
        beat, heard = self.run.heartbeats.get("capture.0", (None, 0.0))
        if beat is None or heard == self._heard:
            return False
        self._heard = heard
        if beat.stalled_s < self._current:  # that wait ended, perhaps another began
            self._end_wait()
        self._current = beat.stalled_s
        return False

    def _end_wait(self) -> None:
        if self._current > 0:
            self.total_s += self._current
            self.waits += 1
        self._current = 0.0

    def result(self) -> dict:
        self._end_wait()
        return {"blocked_s_at_least": round(self.total_s, 2), "waits_seen": self.waits}


def measure_backpressure(seconds: float, folder: Path, **options) -> dict:
    """A slow model under a fast file, and a slow subscriber under a live stream."""
    result: dict = {}
    wav = write_wav(folder / "pressure.wav", bench_audio(seconds, seed=4))
    recorder = Recorder()
    cycle: dict[str, _DutyCycle] = {}

    def slow_model() -> None:
        pid = _child_pid("model")
        if pid is not None:
            cycle["model"] = _DutyCycle(pid, share=SLOW_MODEL_STOPPED)
            cycle["model"].start()

    def release() -> None:
        # Before the stages are asked to stop: a stopped model could not stop in time.
        if "model" in cycle:
            cycle["model"].halt.set()
            cycle["model"].join()

    capture = _CaptureWait(Run())
    run = run_pipeline(
        _config((f"file:{wav}",), folder, fast=True, **options),
        [recorder],
        _labels(),
        on_ready=slow_model,
        should_stop=capture.look,
        run=capture.run,
        on_stopping=release,
    )
    release()  # a session that failed before it began to end
    summary = run.summary(_labels())
    wall = (max(recorder.ended_ns.values()) - recorder.first_capture_ns()) / 1e9
    result["slow_model"] = {
        "what": f"a --fast file while the model is stopped {SLOW_MODEL_STOPPED:.0%} of the "
        "time (SIGSTOP/SIGCONT)",
        "audio_s": seconds,
        "wall_s": round(wall, 2),
        "windows": summary["windows"],
        "predicted": summary["predicted"],
        "dropped": summary["dropped"],
        "accounting_adds_up": summary["windows"] == summary["predicted"] + summary["dropped"],
        "latency_ms": percentiles(recorder.latencies_ms()),
        "rss_mb": _rss(run),
        "model_found_and_slowed": "model" in cycle,
        "capture_waited": capture.result(),
    }

    recorder = Recorder()
    manager = multiprocessing.Manager()
    report, done = manager.dict(), manager.Event()
    subscriber = multiprocessing.Process(
        target=_slow_subscriber,
        args=(f"ipc://{folder}/publish", 0.2, done, report),
        daemon=True,
    )
    subscriber.start()
    live = write_wav(folder / "pressure-live.wav", bench_audio(min(seconds, 20.0), seed=5))
    run = run_pipeline(_config((f"file:{live}",), folder, **options), [recorder], _labels())
    done.set()
    subscriber.join(timeout=10)
    summary = run.summary(_labels())
    result["slow_sink"] = {
        "what": "a live stream while a subscriber takes 200 ms per record (RCVHWM 8)",
        "published": len(recorder.predictions) + len(recorder.events) + len(recorder.ended_ns),
        "subscriber_received": report.get("received"),
        "subscriber_saw_missing_by_sequence": report.get("missed_by_sequence"),
        "windows": summary["windows"],
        "predicted": summary["predicted"],
        "latency_ms": percentiles(recorder.latencies_ms()),
    }
    manager.shutdown()
    return result


def workdir() -> tempfile.TemporaryDirectory:
    """A private folder for the bench's audio files and endpoints."""
    return tempfile.TemporaryDirectory(prefix="ser-stream-bench-")
