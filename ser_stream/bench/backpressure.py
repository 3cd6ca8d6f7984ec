"""Backpressure: a slow model under a fast file, a slow subscriber under a live stream."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from ser_stream.bench.session import (
    Recorder,
    bench_audio,
    bench_config,
    pipeline_labels,
    rss_mb,
    write_wav,
)
from ser_stream.bench.stats import percentiles
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.pipeline import run_pipeline

__all__ = ["SLOW_MODEL_STOPPED", "measure_backpressure"]


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
        bench_config((f"file:{wav}",), folder, fast=True, **options),
        [recorder],
        pipeline_labels(),
        on_ready=slow_model,
        should_stop=capture.look,
        run=capture.run,
        on_stopping=release,
    )
    release()  # a session that failed before it began to end
    summary = run.summary(pipeline_labels())
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
        "rss_mb": rss_mb(run),
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
    run = run_pipeline(
        bench_config((f"file:{live}",), folder, **options), [recorder], pipeline_labels()
    )
    done.set()
    subscriber.join(timeout=10)
    summary = run.summary(pipeline_labels())
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
