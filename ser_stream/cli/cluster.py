"""``health`` and ``collect``: a pipeline whose processes an orchestrator places (Kubernetes).

Without ``ser-stream up`` there is no supervisor: the orchestrator starts each stage on its
own, probes it through the health file the stage writes (``ser-stream health``, an exec
probe), and restarts it. What remains of the supervisor's work, the end of the pipeline
(results in order, the ledger, the sinks, the subscribers), is ``ser-stream collect``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["add_commands", "probe"]

MAX_AGE_S = 5.0
"""A health file older than this is stale: about three missed heartbeats, with some slack."""
MAX_STALL_S = 30.0
"""Work held without progress this long makes a process unhealthy. Longer than the local
supervisor's bound (:data:`~ser_stream.liveness.STALLED_AFTER_S`): a probe cannot see that a
later stage is down, and a process waiting for one must not be replaced before it."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``health`` and ``collect`` to the command line."""
    health = commands.add_parser(
        "health", help="exit 0 if a stage's health file is fresh and not stalled (a probe)"
    )
    _health_arguments(health)
    health.set_defaults(run=_health)

    collect = commands.add_parser(
        "collect", help="the end of a pipeline without a supervisor: results to sinks, in order"
    )
    collect.add_argument(
        "--results", required=True, metavar="ENDPOINT", help="bind: the model replicas' results"
    )
    collect.add_argument(
        "--control",
        required=True,
        metavar="ENDPOINT",
        help="bind: the stages' heartbeats and ledger entries (their --control)",
    )
    collect.add_argument(
        "--publish", required=True, metavar="ENDPOINT", help="bind: PUB for subscribers (tap)"
    )
    collect.add_argument(
        "--sink", action="append", default=[], help="console (default), jsonl:PATH (repeatable)"
    )
    collect.add_argument("--curve", metavar="KEYDIR", help="CURVE keys for tcp:// endpoints")
    collect.add_argument("--model", metavar="DIR", help="model artifact folder (its labels)")
    collect.add_argument(
        "--health-file", metavar="PATH", help="write this process's health here every second"
    )
    collect.set_defaults(run=_collect, one_thread=True)


def _health_arguments(health: argparse.ArgumentParser) -> None:
    health.add_argument("path", metavar="PATH", help="the file the stage's --health-file writes")
    health.add_argument(
        "--max-age",
        type=float,
        default=MAX_AGE_S,
        metavar="SECONDS",
        help="older is stale: the process hangs or is gone (default %(default)g)",
    )
    health.add_argument(
        "--max-stall",
        type=float,
        default=MAX_STALL_S,
        metavar="SECONDS",
        help="work held without progress this long is unhealthy (default %(default)g)",
    )


def probe(argv: list[str]) -> int:
    """``ser-stream health ARGS`` without the rest of the command line.

    An orchestrator runs it every few seconds in every pod: building every command's parser
    (the web service's among them) and the logging would cost it ten times its own work.
    """
    health = argparse.ArgumentParser(prog="ser-stream health")
    _health_arguments(health)
    return _health(health.parse_args(argv))


def _health(args: argparse.Namespace) -> int:
    """The probe: light on purpose (json, os, time), it runs every few seconds."""
    path = args.path
    try:
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
        at, stalled_s = float(state["at"]), float(state["stalled_s"])
    except FileNotFoundError:
        return _unhealthy(f"{path} missing: not ready yet (or stopped)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _unhealthy(f"{path} unreadable: {exc!r}")
    age_s = time.time() - at
    if age_s > args.max_age:
        return _unhealthy(
            f"{path} stale: written {age_s:.1f} s ago (--max-age {args.max_age:g}); "
            "the process hangs or is gone"
        )
    if stalled_s >= args.max_stall:
        return _unhealthy(
            f"{path} stalled: work held without progress for {stalled_s:.1f} s "
            f"(--max-stall {args.max_stall:g})"
        )
    return 0


def _unhealthy(reason: str) -> int:
    print(f"ser-stream health: {reason}", file=sys.stderr)
    return 1


class _HealthFile:
    """The collector's health file, as a stage writes its own (``transport.write_health``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.written_at = float("-inf")
        self._queued = 0  # the largest burst of results taken since the last write

    def write(self, streams: int, queued: int) -> None:
        """Replace the file, at most once a heartbeat period.

        ``queued``: the results taken at the last look (the file says the most since it
        was last written, as a stage's heartbeat does). The collector holds no work beyond
        the reorderer's bounded wait: its liveness is that this loop keeps writing, so it
        never reports a stall.
        """
        from ser_stream.messages import Heartbeat
        from ser_stream.settings import HEARTBEAT_S
        from ser_stream.transport import write_health

        self._queued = max(self._queued, queued)
        now = time.monotonic()
        if self.path is None or now - self.written_at < HEARTBEAT_S:
            return
        self.written_at = now
        write_health(self.path, Heartbeat("collect", streams=streams, queued=self._queued))
        self._queued = 0

    def remove(self) -> None:
        """A clean exit: the probes see the process is gone."""
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _collect(args: argparse.Namespace) -> int:
    import signal

    import zmq

    from ser_stream.artifact import load_artifact
    from ser_stream.cli.common import curve_keys
    from ser_stream.logs import get_logger
    from ser_stream.security import stop_authenticators
    from ser_stream.sinks import parse_sink
    from ser_stream.supervisor.collector import Collector, bind_end, drain, end_sockets
    from ser_stream.supervisor.ledger import Run

    labels = load_artifact(args.model).labels
    sinks = [parse_sink(text) for text in args.sink or ["console"]]
    keys = curve_keys(args.curve)
    log = get_logger(component="collect")
    stop: list[int] = []  # a plain list: a signal handler must take no lock
    previous = {sig: signal.signal(sig, lambda sig, _: stop.append(sig))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    context = zmq.Context()
    authenticators: dict = {}
    control, results, publisher = end_sockets(context)
    run = Run()
    collector = Collector(run, sinks, labels, publisher, keeps_ledger=True)
    collector.before_end = lambda: _listen(control, collector)
    health = _HealthFile(args.health_file)
    opened = []
    started = time.monotonic()
    try:
        endpoints = (args.control, args.results, args.publish)
        bind_end((control, results, publisher), endpoints, keys, authenticators)
        for sink in sinks:
            sink.open(labels)
            opened.append(sink)
        log.info("ready", results=args.results, control=args.control, publish=args.publish)
        poller = zmq.Poller()
        poller.register(results, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        while not stop:
            queued = 0
            if poller.poll(100):
                _listen(control, collector)
                for _ in range(256):  # a burst, then the ledger and the clock again
                    try:
                        collector.take(results.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    queued += 1
            collector.expire()
            open_streams = sum(not session.ended for session in run.streams.values())
            health.write(open_streams, queued)
        _listen(control, collector)
        drain(results, collector)
        collector.end_the_rest("signal")
    finally:
        health.remove()
        stop_authenticators(authenticators)
        context.destroy(linger=0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    run.duration_s = time.monotonic() - started
    run.reason = run.end_reason(signalled=True)
    summary = run.summary(labels)
    log.info("stopped", streams=len(run.streams), ledger=summary["ledger"])
    for sink in opened:
        sink.close(run.reason, summary)
    return 0


def _listen(control, collector) -> None:
    """Take the ledger entries waiting on the control socket (never waits).

    Heartbeats are left to the probes: each stage's own health file says it lives.
    """
    from ser_stream.runtime import ledger_window
    from ser_stream.supervisor.collector import waiting_envelopes

    for envelope in waiting_envelopes(control):
        window = ledger_window(envelope)
        if window is not None:
            collector.window_emitted(envelope.stream, window)
