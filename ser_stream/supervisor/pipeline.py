"""``ser-stream up``: start every stage as its own process, watch them, and account for it all.

The supervisor wires ipc:// endpoints in a private folder (:mod:`.wiring`), starts the
replicas of every stage, waits until each reports ready, then starts one capture per source
(:mod:`.processes`). The model's replicas push their results to the collector
(:mod:`.collector`), which feeds the sinks and the per-stream accounting (:mod:`.ledger`).
A stage that dies is restarted with back-off; everything shuts down when every stream has
ended, or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from ser_stream.errors import InputError, OutputClosed, SerStreamError, SupervisionError
from ser_stream.logs import get_logger
from ser_stream.private import hold, runtime_dir
from ser_stream.security import stop_authenticators
from ser_stream.settings import PipelineConfig
from ser_stream.sinks import Sink
from ser_stream.supervisor.collector import Collector, bind_end, drain, end_sockets
from ser_stream.supervisor.folder import sweep_left_behind
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.processes import INPUT_ERROR, Stages
from ser_stream.supervisor.wiring import CHAIN, Wiring, stream_of

__all__ = ["run_pipeline"]


@dataclass
class _Stop:
    """Set by SIGINT or SIGTERM: the session ends at the supervisor's next look.

    A plain flag, not a ``threading.Event``: a signal handler must not take a lock the
    interrupted code may hold.
    """

    signalled: bool = False

    def request(self, *_: object) -> None:
        self.signalled = True


def run_pipeline(
    config: PipelineConfig,
    sinks: list[Sink],
    labels: tuple[str, ...],
    *,
    on_ready: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    run: Run | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> Run:
    """Run one session to its end; every sink sees every record; return what happened.

    ``on_ready`` is called once every stage is up and the captures have started;
    ``should_stop`` is asked between records (a benchmark ends a session of producers so);
    ``run``, when given, is filled as the session goes (a watcher reads it live);
    ``on_stopping`` is called once the session begins to end (before the stages stop).
    Every stream gets its ``stream_end`` and the sinks their ``session_end``, also when the
    session fails (the failure is raised after that).

    Raises:
        InputError: a source or a stage setting the session cannot run with.
        SupervisionError: a stage kept failing, or the stages did not come up.
    """
    run = run if run is not None else Run()
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.request) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    context = zmq.Context()
    authenticators: dict = {}
    failure: SerStreamError | None = None
    opened: list[Sink] = []
    sweep_left_behind(runtime_dir())
    with tempfile.TemporaryDirectory(prefix=f"up-{os.getpid()}-", dir=runtime_dir()) as folder:
        in_use = hold(Path(folder) / ".lock")  # released when this process ends, however
        stages = _stages(config, Path(folder))
        wiring = stages.wiring
        run.restarts = stages.restarts
        run.heartbeats = stages.heartbeats
        control, results, publisher = end_sockets(context)
        expected = {
            stream_of(k) for k, source in enumerate(config.sources) if not source.startswith("zmq:")
        }
        collector = Collector(run, sinks, labels, publisher, expected, keeps_ledger=True)
        stages.on_window = collector.window_emitted
        collector.before_end = lambda: stages.listen(control)
        try:
            endpoints = (wiring.endpoint("control"), wiring.endpoint("results"),
                         config.publish or wiring.endpoint("publish"))  # fmt: skip
            bind_end((control, results, publisher), endpoints, wiring.keys, authenticators,
                     wiring.listening)  # fmt: skip
            stages.start_chain()
            _wait_ready(control, stages, config.start_timeout_s, stop)
            if stop.signalled:
                return run
            ready_cpu = stages.usage()["cpu_s"]
            stages.start_captures()
            for sink in sinks:
                sink.open(labels)
                opened.append(sink)
            collector.ready_at = time.monotonic()
            if on_ready is not None:
                on_ready()
            watches = [
                _CaptureWatch(stages, k, None if source.startswith("zmq:") else stream_of(k))
                for k, source in enumerate(config.sources)
            ]
            while not stop.signalled and not (should_stop and should_stop()):
                stages.listen(control)
                stages.check()
                for watch in watches:
                    watch.check(run)
                if results.poll(100):
                    for _ in range(256):  # a burst, then look at the processes again
                        try:
                            collector.take(results.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                collector.expire()
                _stop_ended_captures(stages, config, collector.ended)
                if _finished(run, config, stages, expected):
                    break
        except (InputError, SupervisionError) as exc:
            failure = exc
        except OutputClosed:  # `up | head`: the reader has what it wanted
            stop.signalled = True
        finally:
            if on_stopping is not None:
                on_stopping()
            signalled = stop.signalled
            if opened:
                usage = stages.usage()
                run.peak_rss_mb, run.pss_mb = usage["peak_rss_mb"], usage["pss_mb"]
                run.cpu_s = {  # the session's work: start-up and warm-up left out
                    name: round(max(0.0, cpu - ready_cpu.get(name, 0.0)), 2)
                    for name, cpu in usage["cpu_s"].items()
                }
            run.duration_s = time.monotonic() - started

            def take_the_rest() -> None:
                stages.listen(control)
                drain(results, collector)

            stages.stop_all(while_waiting=take_the_rest)
            take_the_rest()
            collector.end_the_rest("error" if failure else "signal")
            stop_authenticators(authenticators)
            context.destroy(linger=0)
            stages.close()
            wiring.close_listeners()
            os.close(in_use)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if failure is not None:
        run.errors.append(str(failure))
    run.reason = "error" if failure is not None else run.end_reason(signalled)
    get_logger(component="supervisor").info(
        "usage", peak_rss_mb=run.peak_rss_mb, pss_mb=run.pss_mb, cpu_s=run.cpu_s
    )
    summary = run.summary(labels)
    if summary["ledger"].startswith("unbalanced"):
        get_logger(component="supervisor").error(
            "the ledger does not balance", ledger=summary["ledger"], windows=summary["windows"],
            predicted=summary["predicted"], dropped=summary["dropped_reasons"],
        )  # fmt: skip
    for sink in opened:
        sink.close(run.reason, summary)
    if failure is not None:
        raise failure
    return run


def _stages(config: PipelineConfig, folder: Path) -> Stages:
    """The processes of the session, as the engine runs them (see ``PipelineConfig.engine``)."""
    if config.engine == "ray":
        from ser_stream.supervisor.ray_engine import RayStages  # Ray only when asked for

        return RayStages(config, folder)
    return Stages(Wiring(config, folder))


def _finished(run: Run, config: PipelineConfig, stages: Stages, expected: set[str]) -> bool:
    """Enough streams ended, or every source is done and every stream it began has ended."""
    if config.streams is not None:
        if sum(1 for session in run.streams.values() if session.ended) >= config.streams:
            return True
    if stages.restarting or any(process.poll() is None for process in stages.captures()):
        return False
    ended = {stream for stream, session in run.streams.items() if session.ended}
    return expected <= ended and set(run.streams) <= ended


def _stop_ended_captures(stages: Stages, config: PipelineConfig, ended: list[str]) -> None:
    """A stream ended by the VAD (silence): stop its source, which would go on forever."""
    while ended:
        stream = ended.pop()
        for k, source in enumerate(config.sources):
            process = stages.processes.get(("capture", k))
            if stream_of(k) == stream and not source.startswith("zmq:"):
                stages.finished.add(k)
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)


class _CaptureWatch:
    """A capture that exited by itself must have ended its stream: soon, or never.

    A failing capture sends its reason and an ``error`` end of stream before it exits (status
    2); one that broke before it could is noticed here. (One that died otherwise, killed or
    crashed, is restarted by the supervisor.)
    """

    GRACE_S = {True: 30.0, False: 3.0}  # after a clean exit / after a failure

    def __init__(self, stages: Stages, source: int, stream: str | None) -> None:
        self.stages = stages
        self.source = source
        self.stream = stream  # None: a zmq source, whose producers end their own streams
        self.exited_at: float | None = None

    def check(self, run: Run) -> None:
        code = self.stages.processes[("capture", self.source)].poll()
        if code not in (0, INPUT_ERROR):  # running, or dead and being restarted
            self.exited_at = None
            return
        session = run.streams.get(self.stream) if self.stream else None
        if (session is not None and session.ended) or (self.stream is None and code == 0):
            return
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        if time.monotonic() - self.exited_at > self.GRACE_S[code == 0]:
            raise InputError(
                f"the capture stopped (exit {code}) without ending its stream; "
                "see its message above, fix the source and start again"
            )


def _wait_ready(control: zmq.Socket, stages: Stages, timeout_s: float, stop: _Stop) -> None:
    """Every replica of every stage reports on the control socket.

    Raises:
        SupervisionError: some did not within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    waiting = {(name, r) for name in CHAIN for r in range(stages.wiring.count(name))}
    while waiting and time.monotonic() < deadline and not stop.signalled:
        control.poll(250)
        stages.listen(control)
        stages.check()
        waiting -= stages.alive()
    if waiting:
        names = ", ".join(sorted(stages.wiring.label(*key) for key in waiting))
        raise SupervisionError(f"stages {names} did not come up within {timeout_s:.0f} s")
