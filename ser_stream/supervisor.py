"""``ser-stream up``: start every stage as its own process, watch them, and account for it all.

The supervisor wires ipc:// endpoints in a private folder, starts the replicas of vad,
denoise, features and model, waits until each reports ready, then starts one capture per
source. The model's replicas push their results to the supervisor's collector, which puts
every stream back in order, feeds the sinks and the per-stream accounting, and republishes
each record on the PUB endpoint for anyone's subscribers. It restarts a stage that dies
(with back-off), and shuts everything down when every stream has ended, or on Ctrl-C /
SIGTERM.

Replicas: a stateful stage (vad, denoise, features) is sharded by stream id, so a stream
always reaches the same replica; every replica of the stage before binds one output per
shard. A stateless stage (model) shares one output of each upstream replica (PUSH/PULL load
balancing) and keeps sequence numbers, from which the collector restores the order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from ser_stream.errors import InputError, WireError
from ser_stream.logs import get_logger
from ser_stream.messages import EndOfStream, ErrorMsg, Event, Heartbeat, Prediction
from ser_stream.ordering import Reorderer
from ser_stream.private import open_lock, runtime_dir
from ser_stream.sinks import Sink
from ser_stream.threads import limit_numeric_threads
from ser_stream.wire import MAX_FRAME_BYTES, MAX_HEADER_BYTES, Envelope, decode

__all__ = [
    "PipelineConfig",
    "Run",
    "Session",
    "claim_publish_endpoint",
    "default_publish_endpoint",
    "lasting_predictions",
    "load_toml",
    "run_pipeline",
]

CHAIN = ("vad", "denoise", "features", "model")
STATELESS = frozenset({"model"})
"""Stages that keep nothing per stream (each replica takes any message of any stream)."""


_TOML_KEYS = {
    "source", "fast", "sinks", "stop_on_silence_s", "model", "publish", "tcp", "stages", "rate",
    "max_restarts", "start_timeout_s", "plot", "replicas", "streams",
}  # fmt: skip


def load_toml(path: str) -> dict:
    """Read an ``up`` settings file; ``stop_on_silence_s = false`` turns stopping off.

    Raises:
        InputError: unreadable file, invalid TOML or unknown keys.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc}); fix the file") from exc
    unknown = set(data) - _TOML_KEYS
    if unknown:
        raise InputError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(_TOML_KEYS)}")
    if data.get("stop_on_silence_s") is False:
        data["stop_on_silence_s"] = None
    if isinstance(data.get("source"), str):
        data["source"] = [data["source"]]
    _check_types(path, data)
    return data


def _check_types(path: str, data: dict) -> None:
    """The settings whose shape matters, checked before anything starts."""
    problems = []
    source = data.get("source", [])
    if not isinstance(source, list) or not all(isinstance(s, str) for s in source):
        problems.append("source must be a string or a list of strings")
    replicas = data.get("replicas", {})
    if not isinstance(replicas, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in replicas.values()
    ):
        problems.append("replicas must be a table of stage = number (e.g. model = 2)")
    streams = data.get("streams")
    if streams is not None and (not isinstance(streams, int) or isinstance(streams, bool)):
        problems.append("streams must be a whole number")
    if problems:
        raise InputError(f"{path}: {'; '.join(problems)}")


def default_publish_endpoint() -> str:
    """Where ``up`` publishes and ``tap`` listens unless told otherwise (one per user).

    It lives in the user's private runtime folder (see :mod:`ser_stream.private`): no other
    user can bind it first or subscribe to it.
    """
    return f"ipc://{runtime_dir()}/pub"


_CLAIM: list[int] = []  # the lock file descriptor of this process's claim on the default endpoint


def claim_publish_endpoint() -> str:
    """The default endpoint if no other ``up`` of this user holds it, else a private one.

    Two pipelines binding one ipc:// path would steal each other's subscribers.
    """
    import fcntl

    folder = runtime_dir()
    lock = open_lock(folder / "pub.lock")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return f"ipc://{folder}/pub-{os.getpid()}"
    _CLAIM.append(lock)  # held until the process exits
    return default_publish_endpoint()


@dataclass(frozen=True)
class PipelineConfig:
    """What ``up`` runs.

    Attributes:
        sources: one or more of ``mic[:DEVICE]``, ``file:PATH``, ``stdin``, ``zmq:ENDPOINT``;
            source N is stream ``stream-N``, except that each producer on a ``zmq:`` source
            names its own streams.
        fast: do not pace the sources at real time.
        stop_on_silence_s: end a stream after this much silence following speech (None: never).
        model: model artifact folder (None: the shipped one).
        publish: endpoint for anyone's subscribers (``ser-stream tap``, your programs).
        tcp: connect the stages over tcp:// on loopback instead of ipc://.
        rate: sample rate of raw PCM on stdin, in Hz.
        stages: settings per stage name (e.g. ``{"vad": {"aggressiveness": 3}}``).
        replicas: processes per stage name (default 1 each).
        streams: end the session once this many streams have ended (None: when every
            source is done; a ``zmq:`` source serves until Ctrl-C).
        max_restarts: restarts allowed per stage before the session gives up.
        start_timeout_s: how long the stages may take to come up.
    """

    sources: tuple[str, ...]
    fast: bool = False
    stop_on_silence_s: float | None = 2.0
    model: str | None = None
    publish: str = ""
    tcp: bool = False
    rate: int = 16_000
    stages: dict[str, dict] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    streams: int | None = None
    max_restarts: int = 5
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        if not self.sources:
            raise InputError("no source; give at least one --source")
        for name, count in self.replicas.items():
            if name not in CHAIN:
                raise InputError(
                    f"--replicas {name}: no such stage; choose from {', '.join(CHAIN)}"
                )
            if not isinstance(count, int) or not 1 <= count <= 32:
                raise InputError(f"--replicas {name}={count}: give a whole number from 1 to 32")
        if self.streams is not None and self.streams < 1:
            raise InputError(f"--streams {self.streams}: give a positive number of streams")
        producers = any(source.startswith("zmq:") for source in self.sources)
        if self.streams is not None and not producers and self.streams > len(self.sources):
            raise InputError(
                f"--streams {self.streams}: only {len(self.sources)} sources and no zmq: "
                "source; the session ends when they do"
            )

    def replicas_of(self, name: str) -> int:
        """How many processes run stage ``name``."""
        return self.replicas.get(name, 1)


@dataclass
class Session:
    """What happened to one stream: the facts behind its summary."""

    reason: str = "signal"
    windows: int | None = None
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    audio_dropped_s: float = 0.0
    ended: bool = False

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The stream's summary: windows, dropped (and why), mean distribution.

        The mean leaves out early windows that a longer window of the same start superseded
        (a live utterance is judged on 0.8 s, then 1.6 s, then 3 s of it): they are there to
        answer fast, and are less accurate than the window that replaces them.
        """
        return _summarize([self], labels, self.restarts, self.duration_s)


@dataclass
class Run:
    """One ``up``: every stream's session, the restarts, and what the processes used.

    Attributes:
        reason: why it ended: the stream's reason for one stream; for several, their common
            reason, else ``error`` if one failed, else ``eof``; ``signal`` on Ctrl-C.
        streams: the session of each stream, by stream id, in the order they appeared.
        ordering: the collector's reordering counts (``reordered``, ``gap``, ``late``).
        peak_rss_mb: peak resident memory of each process (Linux), ``supervisor`` included.
        pss_mb: proportional memory of each process at the end (shared pages split).
        cpu_s: CPU time of each process, taken at the end like the memory.
    """

    reason: str = "signal"
    streams: dict[str, Session] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    ordering: Counter = field(default_factory=Counter)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    pss_mb: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def session(self, stream: str) -> Session:
        """The session of ``stream``, opened on its first record."""
        if stream not in self.streams:
            self.streams[stream] = Session(restarts=self.restarts)
        return self.streams[stream]

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The ``session_end`` summary over every stream (``streams`` says how many)."""
        summary = _summarize(list(self.streams.values()), labels, self.restarts, self.duration_s)
        summary["errors"] += len(self.errors)
        summary["streams"] = len(self.streams)
        return summary

    def end_reason(self, signalled: bool) -> str:
        """Why the run ended (see the class)."""
        reasons = {session.reason for session in self.streams.values()}
        if signalled or not reasons:
            return "signal"
        if len(reasons) == 1:
            return reasons.pop()
        return "error" if "error" in reasons else "eof"


def _summarize(
    sessions: list[Session], labels: tuple[str, ...], restarts: Counter, duration_s: float
) -> dict:
    predictions = [p for session in sessions for p in session.predictions]
    predicted = len(predictions)
    emitted = sum(
        session.windows if session.windows is not None else len(session.predictions)
        for session in sessions
    )
    judged = [p for session in sessions for p in lasting_predictions(session.predictions)]
    mean = np.mean([p.probabilities for p in judged], axis=0) if judged else np.zeros(len(labels))
    dropped = max(0, emitted - predicted)
    reasons = {}
    if dropped:
        reasons["lost_in_stage_failure" if restarts else "lost"] = dropped
    return {
        "dominant": labels[int(np.argmax(mean))] if predictions else None,
        "windows": emitted,
        "predicted": predicted,
        "dropped": dropped,
        "dropped_reasons": reasons,
        "errors": sum(len(session.errors) for session in sessions),
        "restarts": dict(restarts),
        "mean_probabilities": {k: round(float(v), 6) for k, v in zip(labels, mean, strict=True)},
        "duration_s": round(duration_s, 3),
        "audio_dropped_s": round(sum(session.audio_dropped_s for session in sessions), 3),
    }


def lasting_predictions(predictions: list[Prediction]) -> list[Prediction]:
    """The predictions no later, longer window of the same start replaced, in order."""
    longest: dict[float, float] = {}
    for p in predictions:
        longest[p.t_start] = max(longest.get(p.t_start, p.t_end), p.t_end)
    kept, seen = [], set()
    for p in predictions:
        if p.t_end == longest[p.t_start] and p.t_start not in seen:
            kept.append(p)
            seen.add(p.t_start)
    return kept


class _Stages:
    """The child processes, their endpoints and their restarts.

    Processes are keyed ``(stage, replica)``; captures are ``("capture", N)``, one per source.
    """

    def __init__(self, config: PipelineConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self._endpoints: dict[str, str] = {}
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.restarts: Counter = Counter()
        self.log = get_logger(component="supervisor")

    def endpoint(self, key: str) -> str:
        """The endpoint named ``key`` (stable for the session, restarts included)."""
        if key not in self._endpoints:
            if self.config.tcp:
                self._endpoints[key] = f"tcp://127.0.0.1:{_free_port_pair()}"
            else:
                self._endpoints[key] = f"ipc://{self.folder}/{key}"
        return self._endpoints[key]

    def count(self, name: str) -> int:
        """Processes of ``name``: sources for the capture, else replicas."""
        return len(self.config.sources) if name == "capture" else self.config.replicas_of(name)

    def outputs(self, name: str, replica: int) -> list[str]:
        """What replica ``replica`` of ``name`` binds: one output per shard of the next stage."""
        after = CHAIN[CHAIN.index(name) + 1] if name != "capture" else CHAIN[0]
        if after in STATELESS:
            return [self.endpoint(f"{name}.{replica}")]
        return [self.endpoint(f"{name}.{replica}.s{k}") for k in range(self.count(after))]

    def inputs(self, name: str, replica: int) -> list[str]:
        """What replica ``replica`` of ``name`` connects to: its shard of every upstream."""
        before = "capture" if name == CHAIN[0] else CHAIN[CHAIN.index(name) - 1]
        if name in STATELESS:
            return [self.endpoint(f"{before}.{u}") for u in range(self.count(before))]
        return [self.endpoint(f"{before}.{u}.s{replica}") for u in range(self.count(before))]

    @staticmethod
    def stream_of(source: int) -> str:
        """The stream id of the ``source``-th source (a ``zmq:`` source's own are named)."""
        return f"stream-{source + 1}"

    def label(self, name: str, replica: int) -> str:
        """``model`` or, with replicas, ``model.1``."""
        return f"{name}.{replica}" if self.count(name) > 1 else name

    def command(self, name: str, replica: int) -> list[str]:
        base = [sys.executable, "-m", "ser_stream", "--log-level", "warning", "stage", name]
        outs = (
            [arg for out in self.outputs(name, replica) for arg in ("--out", out)]
            if (name != CHAIN[-1])
            else ["--out", self.endpoint("results"), "--collect"]
        )
        if name == "capture":
            fast = ["--fast"] if self.config.fast else []
            fast += ["--rate", str(self.config.rate)]
            return [*base, "--source", self.config.sources[replica], "--stream",
                    self.stream_of(replica), *fast, *outs]  # fmt: skip
        model = ["--model", self.config.model] if self.config.model else []
        ins = [arg for endpoint in self.inputs(name, replica) for arg in ("--in", endpoint)]
        extra = ["--replica", str(replica)]
        for key, value in self.config.stages.get(name, {}).items():
            extra += ["--set", f"{key}={json.dumps(value)}"]
        if name == "vad" and self.config.fast:
            extra += ["--set", "live=false"]  # a file job: the artifact's VAD, as predict
        if name == "vad":
            value = (
                "null" if self.config.stop_on_silence_s is None else self.config.stop_on_silence_s
            )
            extra += ["--set", f"stop_on_silence_s={value}"]
        return [*base, *ins, *outs, "--control", self.endpoint("control"), *model, *extra]

    def start(self, name: str, replica: int) -> None:
        reads_stdin = name == "capture" and self.config.sources[replica] == "stdin"
        stdin = None if reads_stdin else subprocess.DEVNULL
        self.processes[(name, replica)] = subprocess.Popen(
            self.command(name, replica),
            stdin=stdin,
            env=limit_numeric_threads(dict(os.environ)),
            preexec_fn=_end_with_parent,
            # Out of the terminal's process group: Ctrl-C reaches the supervisor only, which
            # stops them upstream first (a capture reading the terminal stays in it).
            start_new_session=not reads_stdin,
        )

    def start_chain(self) -> None:
        for name in CHAIN:
            for replica in range(self.count(name)):
                self.start(name, replica)

    def start_captures(self) -> None:
        for source in range(self.count("capture")):
            self.start("capture", source)

    def captures(self) -> list[subprocess.Popen]:
        """The capture processes, one per source."""
        return [p for (name, _), p in self.processes.items() if name == "capture"]

    def check(self) -> None:
        """Restart any stage replica that died (not a capture: its exit is the end of input)."""
        for (name, replica), process in list(self.processes.items()):
            if name == "capture" or process.poll() is None:
                continue
            label = self.label(name, replica)
            self.restarts[label] += 1
            if self.restarts[label] > self.config.max_restarts:
                raise InputError(
                    f"stage {label} keeps dying (exit {process.returncode}); see its log"
                )
            backoff = min(5.0, 0.25 * 2 ** (self.restarts[label] - 1))
            self.log.error("stage died, restarting", stage=label, exit=process.returncode,
                           restart=self.restarts[label], backoff_s=backoff)  # fmt: skip
            time.sleep(backoff)
            self.start(name, replica)

    def usage(self) -> dict[str, dict[str, float]]:
        """Per live process and this one: ``peak_rss_mb``, ``pss_mb`` and ``cpu_s``.

        Read from ``/proc`` (Linux). RSS counts shared libraries in every process that maps
        them; PSS splits each shared page between its processes, so PSS adds up to what the
        pipeline really occupies.
        """
        usage: dict[str, dict[str, float]] = {"peak_rss_mb": {}, "pss_mb": {}, "cpu_s": {}}
        ticks = os.sysconf("SC_CLK_TCK")
        pids = {"supervisor": os.getpid()}
        for (name, replica), process in self.processes.items():
            label = self.label(name, replica) if name != "capture" else f"capture.{replica}"
            pids[label] = process.pid
        for label, pid in pids.items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    usage["peak_rss_mb"][label] = round(int(line.split()[1]) / 1024, 1)
            for line in rollup.splitlines():
                if line.startswith("Pss:"):
                    usage["pss_mb"][label] = round(int(line.split()[1]) / 1024, 1)
            fields = stat.rsplit(")", 1)[1].split()
            usage["cpu_s"][label] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
        return usage

    def stop_all(self, while_waiting: Callable[[], None] = lambda: None) -> None:
        """Stop every process, upstream first: the captures, then each stage's replicas.

        Each stage's last messages and end of stream then reach a neighbour that still runs
        and acknowledges them, so none waits out its acknowledgement timeout.
        ``while_waiting`` runs as the processes end (the collector keeps taking results, so
        the last stage is never blocked sending its tail).
        """
        deadline = time.monotonic() + 20
        for name in ("capture", *CHAIN):
            keys = [key for key in self.processes if key[0] == name]
            for key in keys:
                if self.processes[key].poll() is None:
                    self.processes[key].send_signal(signal.SIGTERM)
            for key in keys:
                process = self.processes[key]
                stop_at = time.monotonic() + max(0.1, min(5.0, deadline - time.monotonic()))
                while process.poll() is None and time.monotonic() < stop_at:
                    while_waiting()
                    time.sleep(0.01)
                try:
                    process.wait(timeout=0.01)
                except subprocess.TimeoutExpired:
                    self.log.error("stage did not stop in time, killed", stage=self.label(*key))
                    process.kill()
                    process.wait()


class _Collector:
    """The end of the pipeline: results in order per stream, to the sinks and subscribers."""

    def __init__(
        self,
        run: Run,
        sinks: list[Sink],
        labels: tuple[str, ...],
        publisher: zmq.Socket,
        expected: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.run = run
        self.sinks = sinks
        self.labels = labels
        self.publisher = publisher
        self.expected = expected  # streams that start with the session (not producers')
        self.ready_at = time.monotonic()
        self.order: Reorderer[tuple[Envelope, list[bytes]]] = Reorderer()
        run.ordering = self.order.counters
        self.ended: list[str] = []
        self._opened_at: dict[str, float] = {}

    def end_the_rest(self, reason: str) -> None:
        """At the end of the session: release what is held and end every open stream."""
        for item in self.order.flush_all():
            self._deliver(*item)
        for stream, session in list(self.run.streams.items()):
            if not session.ended:
                self._end(stream, session, reason)

    def _end(self, stream: str, session: Session, reason: str) -> None:
        session.reason = reason
        session.ended = True
        opened = self.ready_at if stream in self.expected else self._opened_at.get(stream)
        session.duration_s = time.monotonic() - (opened or self.ready_at)
        self.ended.append(stream)
        for item in self.order.forget(stream):
            self._deliver(*item)
        summary = session.summary(self.labels)
        for sink in self.sinks:
            sink.stream_end(stream, reason, summary)

    def take(self, frames: list[bytes]) -> None:
        """One message from the model replicas."""
        try:
            envelope = decode(frames)
        except WireError as exc:
            self.run.errors.append(str(exc))
            return
        if isinstance(envelope.body, Heartbeat):
            return
        if envelope.stream == "-":  # a stage's report about a message it could not read
            if isinstance(envelope.body, ErrorMsg):
                self.run.errors.append(envelope.body.reason)
                self._publish(frames)
                for sink in self.sinks:
                    sink.error(envelope)
            return
        for item in self.order.push(envelope.stream, envelope.seq, (envelope, frames)):
            self._deliver(*item)

    def expire(self) -> None:
        """Move on where a record is overdue (its replica died)."""
        for item in self.order.expire():
            self._deliver(*item)

    def _publish(self, frames: list[bytes]) -> None:
        try:
            self.publisher.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:  # a PUB never blocks; a full subscriber misses it, as designed
            pass

    def _deliver(self, envelope: Envelope, frames: list[bytes]) -> None:
        self._publish(frames)
        if envelope.stream not in self.run.streams:
            self._opened_at[envelope.stream] = time.monotonic()
        session = self.run.session(envelope.stream)
        body = envelope.body
        if isinstance(body, Prediction):
            session.predictions.append(body)
            for sink in self.sinks:
                sink.prediction(envelope, self.labels)
        elif isinstance(body, Event):
            if body.name == "windows":
                session.windows = int(body.data.get("count", 0))
            elif body.name == "gap":
                session.audio_dropped_s += float(body.data.get("dropped_s", 0.0))
            for sink in self.sinks:
                sink.event(envelope)
        elif isinstance(body, ErrorMsg):
            session.errors.append(body.reason)
            for sink in self.sinks:
                sink.error(envelope)
        elif isinstance(body, EndOfStream) and not session.ended:
            self._end(envelope.stream, session, body.reason)


def run_pipeline(
    config: PipelineConfig,
    sinks: list[Sink],
    labels: tuple[str, ...],
    *,
    on_ready: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Run:
    """Run one session to its end; every sink sees every record; return what happened.

    ``on_ready`` is called once every stage is up and the captures have started;
    ``should_stop`` is asked between records (a benchmark ends a session of producers so).
    Every stream gets its ``stream_end`` and the sinks their ``session_end``, also when the
    session fails (the failure is raised after that).
    """
    run = Run()
    stop = {"signal": False}
    previous = {
        sig: signal.signal(sig, lambda *_: stop.update(signal=True))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    started = time.monotonic()
    context = zmq.Context()
    failure: InputError | None = None
    opened: list[Sink] = []
    with tempfile.TemporaryDirectory(prefix="up-", dir=runtime_dir()) as folder:
        stages = _Stages(config, Path(folder))
        run.restarts = stages.restarts
        results = context.socket(zmq.PULL)
        results.setsockopt(zmq.LINGER, 0)
        results.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        publisher = context.socket(zmq.PUB)
        publisher.setsockopt(zmq.LINGER, 0)
        control = context.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        control.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)
        expected = {
            stages.stream_of(k)
            for k, source in enumerate(config.sources)
            if not source.startswith("zmq:")
        }
        collector = _Collector(run, sinks, labels, publisher, expected)
        try:
            control.bind(stages.endpoint("control"))
            results.bind(stages.endpoint("results"))
            publisher.bind(config.publish or stages.endpoint("publish"))
            stages.start_chain()
            _wait_ready(control, stages, config.start_timeout_s, stop)
            if stop["signal"]:
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
                _CaptureWatch(
                    stages.processes[("capture", k)],
                    None if source.startswith("zmq:") else stages.stream_of(k),
                )
                for k, source in enumerate(config.sources)
            ]
            while not stop["signal"] and not (should_stop and should_stop()):
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
        except InputError as exc:
            failure = exc
        finally:
            signalled = stop["signal"]
            if opened:
                usage = stages.usage()
                run.peak_rss_mb, run.pss_mb = usage["peak_rss_mb"], usage["pss_mb"]
                run.cpu_s = {  # the session's work: start-up and warm-up left out
                    name: round(max(0.0, cpu - ready_cpu.get(name, 0.0)), 2)
                    for name, cpu in usage["cpu_s"].items()
                }
            run.duration_s = time.monotonic() - started
            stages.stop_all(while_waiting=lambda: _drain(results, collector))
            _drain(results, collector)
            collector.end_the_rest("error" if failure else "signal")
            context.destroy(linger=0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if failure is not None:
        run.errors.append(str(failure))
    run.reason = "error" if failure is not None else run.end_reason(signalled)
    get_logger(component="supervisor").info(
        "usage", peak_rss_mb=run.peak_rss_mb, pss_mb=run.pss_mb, cpu_s=run.cpu_s
    )
    summary = run.summary(labels)
    for sink in opened:
        sink.close(run.reason, summary)
    if failure is not None:
        raise failure
    return run


def _finished(run: Run, config: PipelineConfig, stages: _Stages, expected: set[str]) -> bool:
    """Enough streams ended, or every source is done and every stream it began has ended."""
    ended = {stream for stream, session in run.streams.items() if session.ended}
    if config.streams is not None and len(ended) >= config.streams:
        return True
    if any(process.poll() is None for process in stages.captures()):
        return False
    return expected <= ended and set(run.streams) <= ended


def _stop_ended_captures(stages: _Stages, config: PipelineConfig, ended: list[str]) -> None:
    """A stream ended by the VAD (silence): stop its source, which would go on forever."""
    while ended:
        stream = ended.pop()
        for k, source in enumerate(config.sources):
            process = stages.processes.get(("capture", k))
            if (
                stages.stream_of(k) == stream
                and not source.startswith("zmq:")
                and process is not None
                and process.poll() is None
            ):
                process.send_signal(signal.SIGTERM)


def _drain(results: zmq.Socket, collector: _Collector) -> None:
    """Deliver what is already waiting (the stages' last words on their way out)."""
    while results.poll(20):
        for _ in range(256):
            try:
                collector.take(results.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break


class _CaptureWatch:
    """A capture that exited must have ended its stream: its end reaches us soon, or never.

    A failing capture sends its reason and an ``error`` end of stream before it exits (status
    2); one that died before it could (killed, or broken at start) is noticed here.
    """

    GRACE_S = {True: 30.0, False: 3.0}  # after a clean exit / after a failure

    def __init__(self, process: subprocess.Popen, stream: str | None) -> None:
        self.process = process
        self.stream = stream  # None: a zmq source, whose producers end their own streams
        self.exited_at: float | None = None

    def check(self, run: Run) -> None:
        code = self.process.poll()
        if code is None:
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


def _end_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_HANDED_OUT: set[int] = set()  # ports given to endpoints not bound yet


def _free_port_pair() -> int:
    """A loopback port that is free, with the next one (its ack channel) free too.

    Never one already handed out (with its neighbours): endpoints are bound later.
    """
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if {port - 1, port, port + 1} & _HANDED_OUT:
                continue
            try:
                with socket.socket() as second:
                    second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            _HANDED_OUT.update((port, port + 1))
            return port
    raise InputError("no free pair of loopback ports; free some or use ipc://")


def _wait_ready(control: zmq.Socket, stages: _Stages, timeout_s: float, stop: dict) -> None:
    """Every replica of every stage reports on the control socket."""
    deadline = time.monotonic() + timeout_s
    waiting = {f"{name}.{r}" for name in CHAIN for r in range(stages.count(name))}
    while waiting and time.monotonic() < deadline and not stop["signal"]:
        stages.check()
        if control.poll(250):
            try:
                body = decode(control.recv_multipart()).body
            except WireError:
                continue
            if isinstance(body, Heartbeat):
                waiting.discard(body.stage)
    if waiting:
        names = ", ".join(sorted(waiting))
        raise InputError(f"stages {names} did not come up within {timeout_s:.0f} s; see their logs")
