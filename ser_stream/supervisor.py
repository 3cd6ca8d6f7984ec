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

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from ser_stream.cli import self_command
from ser_stream.errors import InputError, OutputClosed, WireError
from ser_stream.liveness import stuck
from ser_stream.logs import get_logger
from ser_stream.messages import EndOfStream, ErrorMsg, Event, Heartbeat, Prediction
from ser_stream.ordering import Reorderer
from ser_stream.private import held, hold, open_lock, runtime_dir
from ser_stream.runtime import LEDGER_EVENT, ack_endpoint, bind_endpoint, window_id
from ser_stream.security import CurveKeys, create_keys, load_keys, secure, stop_authenticators
from ser_stream.sinks import Sink
from ser_stream.threads import limit_numeric_threads
from ser_stream.wire import MAX_FRAME_BYTES, MAX_HEADER_BYTES, Envelope, decode

__all__ = [
    "PipelineConfig",
    "check_stage_settings",
    "Run",
    "Session",
    "claim_publish_endpoint",
    "default_publish_endpoint",
    "lasting_predictions",
    "load_toml",
    "run_pipeline",
]

CHAIN = ("vad", "denoise", "features", "model")
HEARTBEAT_S = 1.0
"""Every process tells the supervisor it lives this often (see the stage runtime)."""
HUNG_AFTER_MISSES = 3
"""Heartbeats missed in a row after which a process is taken for hung and replaced. A
process whose heartbeats come but that holds work without progress for
:data:`~ser_stream.liveness.STALLED_AFTER_S` is replaced too (see :mod:`ser_stream.liveness`)."""
RESTART_WINDOW_S = 60.0
"""Restart intensity: more than ``max_restarts`` failures of one process within this window
stop the pipeline; the restart back-off also counts only the failures within it."""
STOP_WITHIN_S = 4.0
"""At the end of a session every process gets this long, all together, to drain and exit;
what is left is killed (so Ctrl-C or SIGTERM ends ``up`` within 5 s)."""
INPUT_ERROR = 2
"""Exit status of a process that stopped on an input or settings error."""
STATELESS = frozenset({"model"})
"""Stages that keep nothing per stream (each replica takes any message of any stream)."""


_TOML_KEYS = {
    "source", "fast", "sinks", "stop_on_silence_s", "model", "publish", "tcp", "stages", "rate",
    "max_restarts", "start_timeout_s", "plot", "replicas", "streams", "curve",
    "publish_plaintext",
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
        # marked as this process's, so that a later `up` removes it only once it is gone
        _CLAIM.append(hold(folder / f"pub-{os.getpid()}.lock"))
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
        curve: key folder for CURVE on every tcp:// endpoint, ``zmq:tcp://`` sources
            included (None: with ``tcp``, keys made for the session; see
            :mod:`ser_stream.security`).
        publish_plaintext: let a ``tcp://`` publish endpoint go without CURVE (anyone who
            reaches the port reads every record); without it, such an endpoint needs ``tcp``
            or ``curve``.
        max_restarts: failures allowed per process within a minute (restart intensity);
            one more stops the session.
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
    curve: str | None = None
    publish_plaintext: bool = False
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
        if self.publish_in_the_clear and not self.publish_plaintext:
            raise InputError(
                f"--publish {self.publish}: a tcp:// endpoint would send every record in the "
                "clear to anyone who reaches the port; add --curve KEYDIR (subscribers then "
                "need a key), or --publish-plaintext if that is what you want"
            )
        producers = any(source.startswith("zmq:") for source in self.sources)
        if self.streams is not None and not producers and self.streams > len(self.sources):
            raise InputError(
                f"--streams {self.streams}: only {len(self.sources)} sources and no zmq: "
                "source; the session ends when they do"
            )

    @property
    def publish_in_the_clear(self) -> bool:
        """The publish endpoint is tcp:// and no CURVE keys secure it."""
        return self.publish.startswith("tcp://") and not (self.tcp or self.curve)

    def replicas_of(self, name: str) -> int:
        """How many processes run stage ``name``."""
        return self.replicas.get(name, 1)


def stage_options(config: PipelineConfig, name: str) -> dict:
    """The settings stage ``name`` gets: the user's, and what the session implies (VAD).

    Pacing (``--fast``) is the capture's business only: every other stage hears a file run
    as fast as it goes exactly as a paced one.
    """
    options = dict(config.stages.get(name, {}))
    if name == "vad":
        options["stop_on_silence_s"] = config.stop_on_silence_s
    return options


def check_stage_settings(config: PipelineConfig, artifact) -> None:
    """Refuse wrong stage settings before any process starts (a stage would die of them).

    Raises:
        InputError: an unknown stage, settings for a stage that takes none (its settings
            come from the model artifact), or an unknown or out-of-range VAD setting.
    """
    for name, options in config.stages.items():
        if name not in CHAIN:
            raise InputError(f"[stages.{name}]: no such stage; choose from {', '.join(CHAIN)}")
        if name != "vad" and options:
            raise InputError(
                f"[stages.{name}] {sorted(options)}: the {name} stage takes no settings "
                "(they come from the model artifact)"
            )
    from ser_stream.stage import StageContext
    from ser_stream.stages.vad import vad_config

    try:
        vad_config(StageContext("vad", stage_options(config, "vad"), artifact))
    except InputError as exc:
        raise InputError(f"stage settings: {exc}") from None


@dataclass
class Session:
    """What happened to one stream: the facts behind its summary.

    Attributes:
        windows: the count in the VAD's ``windows`` event (its own count, since its start).
        emitted: the ledger: the id of every window the VAD entered before sending it on
            (None where no supervisor keeps one: a collector on its own).
        failed: error records of the stages after the VAD (a window they could not process).
    """

    reason: str = "signal"
    windows: int | None = None
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    audio_dropped_s: float = 0.0
    ended: bool = False
    emitted: set[tuple[float, float]] | None = None
    failed: int = 0
    tally: _Tally | None = None  # set when the stream ended: its records are let go

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The stream's summary: windows, dropped (and why), mean distribution.

        The mean leaves out early windows that a longer window of the same start superseded
        (a live utterance is judged on 0.8 s, then 1.6 s, then 3 s of it): they are there to
        answer fast, and are less accurate than the window that replaces them.
        """
        return self.counted().summary(labels, self.restarts, self.duration_s)

    def counted(self) -> _Tally:
        """What the summary is made of (kept alone once the stream ended)."""
        return self.tally or _Tally.of(self, self.restarts)

    def close(self) -> None:
        """The stream ended: keep its tally, let go of its predictions and ledger.

        A session of thousands of streams then holds numbers, not records.
        """
        self.tally = _Tally.of(self, self.restarts)
        self.predictions = []
        self.emitted = set() if self.emitted is not None else None


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
        heartbeats: the latest heartbeat of each running process by its label (``vad``,
            ``model.1``, ``capture.0``), with when it came (``time.monotonic()``); live
            while the session runs, for whoever watches it (``ser-stream serve``'s metrics).
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
    heartbeats: dict[str, tuple[Heartbeat, float]] = field(default_factory=dict)

    def session(self, stream: str) -> Session:
        """The session of ``stream``, opened on its first record."""
        if stream not in self.streams:
            self.streams[stream] = Session(restarts=self.restarts)
        return self.streams[stream]

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The ``session_end`` summary over every stream (``streams`` says how many)."""
        total = sum((session.counted() for session in self.streams.values()), _Tally())
        summary = total.summary(labels, self.restarts, self.duration_s)
        summary["errors"] += len(self.errors)
        summary["streams"] = len(self.streams)
        summary["sequence_gaps"] = self.ordering.get("gap", 0)
        return summary

    def end_reason(self, signalled: bool) -> str:
        """Why the run ended (see the class)."""
        reasons = {session.reason for session in self.streams.values()}
        if signalled or not reasons:
            return "signal"
        if len(reasons) == 1:
            return reasons.pop()
        return "error" if "error" in reasons else "eof"


@dataclass
class _Tally:
    """The numbers behind a summary, of one stream or added over many.

    Windows emitted, predicted and dropped come from the ledger where one was kept; its
    verdict is ``balanced`` when every prediction is of a window the VAD entered, none came
    twice, and emitted = predicted + dropped; else ``unbalanced`` (with the reasons), which
    the supervisor logs as an error. Without a ledger the VAD's ``windows`` count stands for
    emitted (``unverified``).
    """

    emitted: int = 0
    predicted: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    probability_sum: np.ndarray | None = None  # over the lasting predictions
    lasting: int = 0
    errors: int = 0
    audio_dropped_s: float = 0.0
    confident: int = 0  # windows predicted confidently (by the model's threshold)
    uncertain: int = 0  # windows predicted below it; neither when the model has none

    @classmethod
    def of(cls, session: Session, restarts: Counter) -> _Tally:
        tally = cls(errors=len(session.errors), audio_dropped_s=session.audio_dropped_s)
        spans = [window_id(p.t_start, p.t_end) for p in session.predictions]
        if session.emitted is None:  # no ledger: the VAD's own count
            tally.emitted = session.windows if session.windows is not None else len(spans)
            tally.predicted = len(spans)
            tally.problems["unverified"] += 1
        else:
            tally.emitted = len(session.emitted)
            tally.predicted = len(set(spans) & session.emitted)
            tally.problems["predicted_twice"] += len(spans) - len(set(spans))
            tally.problems["never_emitted"] += len(set(spans) - session.emitted)
            if session.windows is not None and session.windows > tally.emitted:
                tally.problems["vad_counted_more"] += session.windows - tally.emitted
        tally.dropped = max(0, tally.emitted - tally.predicted)
        failed = min(tally.dropped, session.failed)
        tally.reasons["failed"] += failed
        tally.reasons["lost_in_stage_failure" if restarts else "lost"] += tally.dropped - failed
        tally.reasons, tally.problems = +tally.reasons, +tally.problems
        flags = _confidence_by_window(session.predictions)
        tally.confident = sum(flag is True for flag in flags)
        tally.uncertain = sum(flag is False for flag in flags)
        lasting = lasting_predictions(session.predictions)
        if lasting:
            tally.probability_sum = np.sum([p.probabilities for p in lasting], axis=0)
            tally.lasting = len(lasting)
        return tally

    def __add__(self, other: _Tally) -> _Tally:
        sums = [s for s in (self.probability_sum, other.probability_sum) if s is not None]
        return _Tally(
            self.emitted + other.emitted,
            self.predicted + other.predicted,
            self.dropped + other.dropped,
            self.reasons + other.reasons,
            self.problems + other.problems,
            np.sum(sums, axis=0) if sums else None,
            self.lasting + other.lasting,
            self.errors + other.errors,
            self.audio_dropped_s + other.audio_dropped_s,
            self.confident + other.confident,
            self.uncertain + other.uncertain,
        )

    def verdict(self) -> str:
        problems = Counter(self.problems)
        if set(problems) == {"unverified"}:
            return "unverified"
        problems.pop("unverified", None)
        if problems or self.predicted + sum(self.reasons.values()) != self.emitted:
            return "unbalanced: " + ", ".join(f"{k} {v}" for k, v in problems.items())
        return "balanced"

    def summary(self, labels: tuple[str, ...], restarts: Counter, duration_s: float) -> dict:
        if self.probability_sum is not None:
            mean = self.probability_sum / self.lasting
        else:
            mean = np.zeros(len(labels))
        return {
            "dominant": labels[int(np.argmax(mean))] if self.predicted or self.lasting else None,
            "windows": self.emitted,
            "predicted": self.predicted,
            "dropped": self.dropped,
            "dropped_reasons": dict(self.reasons),
            "ledger": self.verdict(),
            "errors": self.errors,
            "restarts": dict(restarts),
            "mean_probabilities": {
                k: round(float(v), 6) for k, v in zip(labels, mean, strict=True)
            },
            "duration_s": round(duration_s, 3),
            "audio_dropped_s": round(self.audio_dropped_s, 3),
            "confident": self.confident,
            "uncertain": self.uncertain,
        }


def _confidence_by_window(predictions: list[Prediction]) -> list[bool | None]:
    """The ``confident`` flag of each window predicted (a window predicted twice counts once)."""
    flags: dict[tuple[float, float], bool | None] = {}
    for p in predictions:
        flags.setdefault(window_id(p.t_start, p.t_end), p.confident)
    return list(flags.values())


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
        self.listening: dict[str, socket.socket] = {}  # tcp: held for the session
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.restarts: Counter = Counter()
        self.hung: Counter = Counter()  # replaced because their heartbeats stopped
        self.log = get_logger(component="supervisor")
        self._started_at: dict[tuple[str, int], float] = {}
        self._heard: dict[tuple[str, int], float] = {}  # last heartbeat of each process
        self._listened_at = time.monotonic()
        self._attentive_since = self._listened_at  # listening without a pause since then
        self._last_blocked: dict[tuple[str, int], float] = {}  # see _stuck
        self._failures: dict[tuple[str, int], deque[float]] = defaultdict(deque)
        self._due: dict[tuple[str, int], float] = {}  # restarts waiting out their back-off
        self.positions: dict[
            int, tuple[float, float]
        ] = {}  # each capture's stream time sent, when heard
        # stream time each stage process reached in each of its streams (the VAD's)
        self.stream_positions: dict[tuple[str, int], dict[str, float]] = {}
        self.heartbeats: dict[str, tuple[Heartbeat, float]] = {}  # the latest, by label
        self.finished: set[int] = set()  # captures told to stop: their stream is over
        self._down_since: dict[tuple[str, int], float] = {}  # failed, not yet back
        self.downtime_s: list[float] = []  # from each failure to the replacement's heartbeat
        self.on_window: Callable[[str, tuple[float, float]], None] = lambda stream, span: None
        self.keys = _session_keys(config, folder)
        self.heartbeat_s = HEARTBEAT_S  # how often the processes report (see the runtime)

    def endpoint(self, key: str) -> str:
        """The endpoint named ``key`` (stable for the session, restarts included).

        With tcp, the operating system chooses the port (and the next one, for the
        acknowledgements): this process holds both listening sockets for the session and
        hands them to whoever binds the endpoint (``ZMQ_USE_FD``), so no other program can
        take a port between its choice and its use, and a restarted stage gets the same.
        """
        if key not in self._endpoints:
            if self.config.tcp:
                data, ack = _listening_pair()
                endpoint = f"tcp://127.0.0.1:{data.getsockname()[1]}"
                self.listening[endpoint] = data
                self.listening[ack_endpoint(endpoint)] = ack
                self._endpoints[key] = endpoint
            else:
                self._endpoints[key] = f"ipc://{self.folder}/{key}"
        return self._endpoints[key]

    def listening_fds(self, name: str, replica: int) -> dict[str, int]:
        """The listening sockets the process binds, by endpoint (tcp; none for ipc)."""
        if name == CHAIN[-1]:  # it connects to the collector
            return {}
        binds = self.outputs(name, replica)
        binds += [ack_endpoint(endpoint) for endpoint in binds]
        return {ep: self.listening[ep].fileno() for ep in binds if ep in self.listening}

    def close_listeners(self) -> None:
        for listener in self.listening.values():
            listener.close()
        self.listening.clear()

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
        """``model`` or, with replicas, ``model.1``; the captures are ``capture.N``."""
        return f"{name}.{replica}" if self.count(name) > 1 or name == "capture" else name

    def command(self, name: str, replica: int) -> list[str]:
        base = [*self_command(), "--log-level", "warning", "stage", name]
        outs = (
            [arg for out in self.outputs(name, replica) for arg in ("--out", out)]
            if (name != CHAIN[-1])
            else ["--out", self.endpoint("results"), "--collect"]
        )
        restarts = self.restarts[
            self.label(name, replica) if name != "capture" else f"capture.{replica}"
        ]
        control = ["--control", self.endpoint("control"), "--replica", str(replica),
                   "--generation", str(restarts)]  # fmt: skip
        if self.keys is not None:
            control += ["--curve", str(self.keys.folder)]
        if name == "capture":
            extra = ["--fast"] if self.config.fast else []
            extra += ["--rate", str(self.config.rate)]
            if replica in self.positions:  # a restart: go on where the last one got to
                position_s, heard_at = self.positions[replica]
                extra += ["--start-s", f"{position_s:.6f}"]
                if self.config.sources[replica].startswith("mic"):
                    # The room went on meanwhile: that audio is lost, and the VAD says so.
                    extra += ["--start-clock", f"{heard_at:.6f}"]
            return [*base, "--source", self.config.sources[replica], "--stream",
                    self.stream_of(replica), *extra, *outs, *control,
                    *self._fd_args(name, replica)]  # fmt: skip
        model = ["--model", self.config.model] if self.config.model else []
        ins = [arg for endpoint in self.inputs(name, replica) for arg in ("--in", endpoint)]
        extra = []
        for key, value in stage_options(self.config, name).items():
            extra += ["--set", f"{key}={json.dumps(value)}"]
        if (name, replica) in self.stream_positions:  # a restart: where its streams were
            extra += ["--resume", json.dumps(self.stream_positions[(name, replica)])]
        return [*base, *ins, *outs, *control, *self._fd_args(name, replica), *model, *extra]

    def _fd_args(self, name: str, replica: int) -> list[str]:
        fds = self.listening_fds(name, replica)
        return [arg for endpoint, fd in fds.items() for arg in ("--listen-fd", f"{endpoint}={fd}")]

    def start(self, name: str, replica: int) -> None:
        reads_stdin = name == "capture" and self.config.sources[replica] == "stdin"
        stdin = None if reads_stdin else subprocess.DEVNULL
        self.processes[(name, replica)] = subprocess.Popen(
            self.command(name, replica),
            stdin=stdin,
            env=limit_numeric_threads(dict(os.environ)),
            pass_fds=tuple(self.listening_fds(name, replica).values()),
            preexec_fn=functools.partial(_end_with_parent, os.getpid()),
            # Out of the terminal's process group: Ctrl-C reaches the supervisor only, which
            # stops them upstream first (a capture reading the terminal stays in it).
            start_new_session=not reads_stdin,
        )
        self._started_at[(name, replica)] = time.monotonic()
        self._heard.pop((name, replica), None)

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

    def listen(self, control: zmq.Socket) -> None:
        """Take the heartbeats waiting on the control socket (never waits)."""
        now = time.monotonic()
        if now - self._listened_at > self.heartbeat_s:
            # This process was busy (a stalled console): their silence was ours, and so may
            # be their lack of progress (the last stage sends its results here).
            self._heard = {key: max(heard, now) for key, heard in self._heard.items()}
            self._attentive_since = now
        self._listened_at = now
        for _ in range(1024):
            try:
                frames = control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                envelope = decode(frames)
            except WireError:
                continue
            body = envelope.body
            if isinstance(body, Event) and body.name == LEDGER_EVENT:
                span = (body.data.get("t_start", 0.0), body.data.get("t_end", 0.0))
                self.on_window(envelope.stream, window_id(*span))
                continue
            if not isinstance(body, Heartbeat):
                continue
            name, _, replica = body.stage.rpartition(".")
            key = (name, int(replica)) if replica.isdigit() else None
            if key in self.processes and self.processes[key].poll() is None:
                self._heard[key] = now
                self.heartbeats[self.label(*key)] = (body, now)
                if key in self._down_since:  # a replacement's first heartbeat: back in service
                    down_s = round(now - self._down_since.pop(key), 3)
                    self.downtime_s.append(down_s)
                    self.log.info("stage back", stage=self.label(*key), down_s=down_s)
                if name == "capture" and not self.config.sources[key[1]].startswith("zmq:"):
                    self.positions[key[1]] = (body.position_s, now)
                elif body.positions:
                    self.stream_positions[key] = body.positions

    @property
    def restarting(self) -> bool:
        """A process is waiting out its back-off before it starts again."""
        return bool(self._due)

    def alive(self) -> set[tuple[str, int]]:
        """The processes whose heartbeat came since their (re)start."""
        return set(self._heard)

    def check(self) -> None:
        """Restart what died or hung, once its back-off has passed.

        A capture that exits by itself (status 0: its input ended; 2: its input failed) ends
        its stream, which says why; one that dies otherwise is restarted and goes on where
        it got to. A stage that exits with status 2 has wrong settings or input: restarting
        it cannot help, so the session ends with its message.

        Raises:
            InputError: a stage exited with an input error, or failed more than
                ``max_restarts`` times within a minute.
        """
        now = time.monotonic()
        for key, due in list(self._due.items()):
            if now >= due:
                del self._due[key]
                self.start(*key)
        for key, process in list(self.processes.items()):
            if key in self._due:
                continue
            code = process.poll()
            if code is None:
                self._check_alive(key, process, now)
            elif key[0] == "capture":
                if code not in (0, INPUT_ERROR) and key[1] not in self.finished:
                    self._schedule_restart(key, f"exit {code}")
            elif code == INPUT_ERROR:
                raise InputError(
                    f"stage {self.label(*key)} stopped on an input error (exit 2); "
                    "see its message above, fix the setting and start again"
                )
            else:
                self._schedule_restart(key, f"exit {code}")

    def _check_alive(self, key: tuple[str, int], process: subprocess.Popen, now: float) -> None:
        heard = self._heard.get(key)
        label = self.label(*key)
        beat = self.heartbeats.get(label)
        if heard is None:  # still starting: the start timeout applies
            if now - self._started_at[key] <= self.config.start_timeout_s:
                return
            silent = f"no heartbeat within {self.config.start_timeout_s:.0f} s of its start"
        elif now - heard > HUNG_AFTER_MISSES * self.heartbeat_s:
            silent = f"no heartbeat for {now - heard:.1f} s"
        elif beat is not None and self._stuck(key, beat[0], now):
            silent = (f"no progress for {beat[0].stalled_s:.1f} s while holding work "
                      f"(the oldest message for {beat[0].oldest_s:.1f} s)")  # fmt: skip
        else:
            return
        self.log.error("stage hung, replacing it", stage=label, reason=silent)
        self.hung[label] += 1
        process.kill()  # SIGKILL ends a stopped (SIGSTOP) process too
        process.wait()
        self._schedule_restart(key, f"hung: {silent}")

    def _stuck(self, key: tuple[str, int], beat: Heartbeat, now: float) -> bool:
        """The process holds work without progress (see :mod:`ser_stream.liveness`).

        Its stall counts only while this supervisor listened, and only from the last time
        a later stage held it up (a process whose neighbour just came back reports the
        outage as its own stall for a heartbeat or two).
        """
        blocked = self._blocked_after(key)
        if blocked:
            self._last_blocked[key] = now
        seen_s = now - max(self._attentive_since, self._last_blocked.get(key, float("-inf")))
        return stuck(min(beat.stalled_s, seen_s), blocked)

    def _blocked_after(self, key: tuple[str, int]) -> bool:
        """A process of a later stage is down, starting, stalled, or behind a backlog.

        The process ``key`` may then only be waiting for it (that one is replaced first;
        one that works through a backlog holds old messages while it makes progress).
        """
        order = ("capture", *CHAIN)
        later = order[order.index(key[0]) + 1 :]
        for other, process in self.processes.items():
            if other[0] not in later:
                continue
            if other in self._due or other not in self._heard or process.poll() is not None:
                return True
            beat = self.heartbeats.get(self.label(*other))
            if beat is not None and max(beat[0].stalled_s, beat[0].oldest_s) > self.heartbeat_s:
                return True
        return False

    def _schedule_restart(self, key: tuple[str, int], cause: str) -> None:
        now = time.monotonic()
        label = self.label(*key)
        self.restarts[label] += 1
        failures = self._failures[key]
        failures.append(now)
        while now - failures[0] > RESTART_WINDOW_S:
            failures.popleft()
        if len(failures) > self.config.max_restarts:
            raise InputError(
                f"stage {label} failed {len(failures)} times within {RESTART_WINDOW_S:.0f} s "
                f"(last: {cause}); the pipeline stopped: see its log above"
            )
        # The back-off grows with the failures of the last minute, so it resets once the
        # stage has stayed healthy that long.
        backoff = min(2.0, 0.1 * 2 ** (len(failures) - 1))
        self.log.error("stage died, restarting", stage=label, cause=cause,
                       restart=self.restarts[label], backoff_s=backoff)  # fmt: skip
        self._due[key] = now + backoff
        self._heard.pop(key, None)
        self.heartbeats.pop(label, None)
        self._down_since.setdefault(key, now)

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
            label = self.label(name, replica)
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
        deadline = time.monotonic() + STOP_WITHIN_S
        for name in ("capture", *CHAIN):
            keys = [key for key in self.processes if key[0] == name]
            for key in keys:
                if self.processes[key].poll() is None:
                    self.processes[key].send_signal(signal.SIGTERM)
            for key in keys:
                process = self.processes[key]
                stop_at = max(deadline, time.monotonic() + 0.1)
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
        *,
        keeps_ledger: bool = False,
    ) -> None:
        self.keeps_ledger = keeps_ledger  # the supervisor feeds window_emitted
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
        self.before_end: Callable[[], None] = lambda: None  # take the ledger's last entries

    def window_emitted(self, stream: str, span: tuple[float, float]) -> None:
        """The ledger: the VAD entered a window of ``stream`` before sending it on."""
        session = self._session(stream)
        if not session.ended:
            session.emitted = (session.emitted or set()) | {span}

    def _session(self, stream: str) -> Session:
        if stream not in self.run.streams:
            self._opened_at[stream] = time.monotonic()
        session = self.run.session(stream)
        if self.keeps_ledger and session.emitted is None:
            session.emitted = set()
        return session

    def end_the_rest(self, reason: str) -> None:
        """At the end of the session: release what is held and end every open stream."""
        for item in self.order.flush_all():
            self._deliver(*item)
        for stream, session in list(self.run.streams.items()):
            if not session.ended:
                self._end(stream, session, reason)

    def _end(self, stream: str, session: Session, reason: str) -> None:
        self.before_end()
        session.reason = reason
        session.ended = True
        opened = self.ready_at if stream in self.expected else self._opened_at.pop(stream, None)
        session.duration_s = time.monotonic() - (opened or self.ready_at)
        self.ended.append(stream)
        for item in self.order.forget(stream):
            self._deliver(*item)
        summary = session.summary(self.labels)
        session.close()
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
        session = self._session(envelope.stream)
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
            session.failed += body.stage in CHAIN[1:]
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
    """
    run = run if run is not None else Run()
    stop = {"signal": False}
    previous = {
        sig: signal.signal(sig, lambda *_: stop.update(signal=True))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    started = time.monotonic()
    context = zmq.Context()
    authenticators: dict = {}
    failure: InputError | None = None
    opened: list[Sink] = []
    _sweep_left_behind(runtime_dir())
    with tempfile.TemporaryDirectory(prefix=f"up-{os.getpid()}-", dir=runtime_dir()) as folder:
        in_use = hold(Path(folder) / ".lock")  # released when this process ends, however
        stages = _Stages(config, Path(folder))
        run.restarts = stages.restarts
        run.heartbeats = stages.heartbeats
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
        collector = _Collector(run, sinks, labels, publisher, expected, keeps_ledger=True)
        stages.on_window = collector.window_emitted
        collector.before_end = lambda: stages.listen(control)
        try:
            for sock, endpoint in (
                (control, stages.endpoint("control")),
                (results, stages.endpoint("results")),
                (publisher, config.publish or stages.endpoint("publish")),
            ):
                secure(sock, endpoint, stages.keys, server=True, authenticators=authenticators)
                if endpoint in stages.listening:
                    sock.setsockopt(zmq.USE_FD, os.dup(stages.listening[endpoint].fileno()))
                bind_endpoint(sock, endpoint)
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
                _CaptureWatch(stages, k, None if source.startswith("zmq:") else stages.stream_of(k))
                for k, source in enumerate(config.sources)
            ]
            while not stop["signal"] and not (should_stop and should_stop()):
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
        except InputError as exc:
            failure = exc
        except OutputClosed:  # `up | head`: the reader has what it wanted
            stop["signal"] = True
        finally:
            if on_stopping is not None:
                on_stopping()
            signalled = stop["signal"]
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
                _drain(results, collector)

            stages.stop_all(while_waiting=take_the_rest)
            take_the_rest()
            collector.end_the_rest("error" if failure else "signal")
            stop_authenticators(authenticators)
            context.destroy(linger=0)
            stages.close_listeners()
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


def _sweep_left_behind(folder: Path) -> None:
    """Remove what sessions whose supervisor was killed left in the runtime folder.

    A session's folder (``up-PID-*``, ``serve-PID-*``, holding its ``.lock``) and a second
    pipeline's publish endpoint (``pub-PID``, beside ``pub-PID.lock``) name the process that
    made them and are marked by a lock it holds (:func:`~ser_stream.private.hold`). What is
    neither held nor of a live process is removed; a missing lock is left alone (its maker
    may be about to take it), and so is a lock held from another PID namespace.
    """
    import shutil

    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(("up-", "serve-")) and entry.is_dir() and not entry.is_symlink():
            pid, lock, extra = name.split("-")[1], entry / ".lock", None
        elif name.startswith("pub-") and not name.endswith(".lock"):
            pid, extra = name[len("pub-") :], folder / f"{name}.lock"
            lock = extra
        else:
            continue
        if not pid.isdigit() or _alive(int(pid)) or held(lock):
            continue
        try:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            if extra is not None:
                extra.unlink()
        except OSError:
            pass  # another supervisor swept it first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds the number
        return True
    return True


def _finished(run: Run, config: PipelineConfig, stages: _Stages, expected: set[str]) -> bool:
    """Enough streams ended, or every source is done and every stream it began has ended."""
    if config.streams is not None:
        if sum(1 for session in run.streams.values() if session.ended) >= config.streams:
            return True
    if stages.restarting or any(process.poll() is None for process in stages.captures()):
        return False
    ended = {stream for stream, session in run.streams.items() if session.ended}
    return expected <= ended and set(run.streams) <= ended


def _stop_ended_captures(stages: _Stages, config: PipelineConfig, ended: list[str]) -> None:
    """A stream ended by the VAD (silence): stop its source, which would go on forever."""
    while ended:
        stream = ended.pop()
        for k, source in enumerate(config.sources):
            process = stages.processes.get(("capture", k))
            if stages.stream_of(k) == stream and not source.startswith("zmq:"):
                stages.finished.add(k)
                if process is not None and process.poll() is None:
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
    """A capture that exited by itself must have ended its stream: soon, or never.

    A failing capture sends its reason and an ``error`` end of stream before it exits (status
    2); one that broke before it could is noticed here. (One that died otherwise, killed or
    crashed, is restarted by the supervisor.)
    """

    GRACE_S = {True: 30.0, False: 3.0}  # after a clean exit / after a failure

    def __init__(self, stages: _Stages, source: int, stream: str | None) -> None:
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


def _session_keys(config: PipelineConfig, folder: Path) -> CurveKeys | None:
    """The CURVE keys of the session: the user's (``curve``), else made for it with ``tcp``."""
    if config.curve:
        return load_keys(Path(config.curve))
    if config.tcp:
        return load_keys(create_keys(folder / "keys"))
    return None


def _end_with_parent(parent: int) -> None:
    """In the child, before exec: be killed when the supervisor dies, however it dies.

    SIGKILL, not SIGTERM: a stage stopped with SIGSTOP (or stuck in a debugger) would never
    act on a SIGTERM and would live on as an orphan; and with its supervisor gone there is
    nobody to drain to. A supervisor that died before this ran is noticed at once.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)


def _listening_pair() -> tuple[socket.socket, socket.socket]:
    """Two listening loopback sockets on adjacent ports the system chose (data, ack)."""
    for _ in range(50):
        data = socket.socket()
        data.bind(("127.0.0.1", 0))
        ack = socket.socket()
        try:
            ack.bind(("127.0.0.1", data.getsockname()[1] + 1))
        except OSError:
            data.close()
            ack.close()
            continue
        for listener in (data, ack):
            listener.listen(128)
            listener.set_inheritable(True)
        return data, ack
    raise InputError("no two adjacent free loopback ports; free some or use ipc://")


def _wait_ready(control: zmq.Socket, stages: _Stages, timeout_s: float, stop: dict) -> None:
    """Every replica of every stage reports on the control socket."""
    deadline = time.monotonic() + timeout_s
    waiting = {(name, r) for name in CHAIN for r in range(stages.count(name))}
    while waiting and time.monotonic() < deadline and not stop["signal"]:
        control.poll(250)
        stages.listen(control)
        stages.check()
        waiting -= stages.alive()
    if waiting:
        names = ", ".join(sorted(stages.label(*key) for key in waiting))
        raise InputError(f"stages {names} did not come up within {timeout_s:.0f} s; see their logs")
