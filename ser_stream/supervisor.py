"""``ser-stream up``: start every stage as its own process, watch them, and account for it all.

The supervisor wires ipc:// endpoints in a private folder, starts vad, denoise, features and
model (which publishes on a PUB socket), waits until the model publishes, then starts the
capture. It subscribes to the published stream itself to feed the sinks and the session
summary, restarts a stage that dies (with back-off), and shuts everything down at the end of
input, at stop-on-silence, or on Ctrl-C / SIGTERM.
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
from ser_stream.sinks import Sink
from ser_stream.wire import decode

__all__ = [
    "PipelineConfig",
    "Session",
    "claim_publish_endpoint",
    "default_publish_endpoint",
    "lasting_predictions",
    "load_toml",
    "run_pipeline",
]

CHAIN = ("vad", "denoise", "features", "model")
STREAM = "stream-1"


_TOML_KEYS = {
    "source", "fast", "sinks", "stop_on_silence_s", "model", "publish", "tcp", "stages", "rate",
    "max_restarts", "start_timeout_s", "plot",
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
    return data


def default_publish_endpoint() -> str:
    """Where ``up`` publishes and ``tap`` listens unless told otherwise (one per user)."""
    return f"ipc://{tempfile.gettempdir()}/ser-stream-{os.getuid()}.pub"


_CLAIM: list = []  # the open lock file of this process's claim on the default endpoint


def claim_publish_endpoint() -> str:
    """The default endpoint if no other ``up`` of this user holds it, else a private one.

    Two pipelines binding one ipc:// path would steal each other's subscribers.
    """
    import fcntl

    lock = open(f"{tempfile.gettempdir()}/ser-stream-{os.getuid()}.pub.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return f"ipc://{tempfile.gettempdir()}/ser-stream-{os.getuid()}-{os.getpid()}.pub"
    _CLAIM.append(lock)  # held until the process exits
    return default_publish_endpoint()


@dataclass(frozen=True)
class PipelineConfig:
    """What ``up`` runs.

    Attributes:
        source: ``mic[:DEVICE]``, ``file:PATH``, ``stdin`` or ``zmq:ENDPOINT``.
        fast: do not pace the source at real time.
        stop_on_silence_s: end the session after this much silence following speech (None: never).
        model: model artifact folder (None: the shipped one).
        publish: endpoint for anyone's subscribers (``ser-stream tap``, your programs).
        tcp: connect the stages over tcp:// on loopback instead of ipc://.
        rate: sample rate of raw PCM on stdin, in Hz.
        stages: settings per stage name (e.g. ``{"vad": {"aggressiveness": 3}}``).
        max_restarts: restarts allowed per stage before the session gives up.
        start_timeout_s: how long the stages may take to come up.
    """

    source: str
    fast: bool = False
    stop_on_silence_s: float | None = 2.0
    model: str | None = None
    publish: str = ""
    tcp: bool = False
    rate: int = 16_000
    stages: dict[str, dict] = field(default_factory=dict)
    max_restarts: int = 5
    start_timeout_s: float = 120.0


@dataclass
class Session:
    """What happened in one run: the facts behind the summary."""

    reason: str = "signal"
    windows: int | None = None
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    audio_dropped_s: float = 0.0

    def summary(self, labels: tuple[str, ...]) -> dict:
        """The ``session_end`` summary: windows, dropped (and why), mean distribution.

        The mean leaves out early windows that a longer window of the same start superseded
        (a live utterance is judged on 0.8 s, then 1.6 s, then 3 s of it): they are there to
        answer fast, and are less accurate than the window that replaces them.
        """
        predicted = len(self.predictions)
        emitted = self.windows if self.windows is not None else predicted
        judged = lasting_predictions(self.predictions)
        mean = (
            np.mean([p.probabilities for p in judged], axis=0) if judged else np.zeros(len(labels))
        )
        dropped = max(0, emitted - predicted)
        reasons = {}
        if dropped:
            reasons["lost_in_stage_failure" if self.restarts else "lost"] = dropped
        return {
            "dominant": labels[int(np.argmax(mean))] if self.predictions else None,
            "windows": emitted,
            "predicted": predicted,
            "dropped": dropped,
            "dropped_reasons": reasons,
            "errors": len(self.errors),
            "restarts": dict(self.restarts),
            "mean_probabilities": {
                k: round(float(v), 6) for k, v in zip(labels, mean, strict=True)
            },
            "duration_s": round(self.duration_s, 3),
            "audio_dropped_s": round(self.audio_dropped_s, 3),
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
    """The child processes and their restarts."""

    def __init__(self, config: PipelineConfig, folder: Path) -> None:
        self.config = config
        names = ("capture", *CHAIN, "control")
        if config.tcp:
            self.endpoint = {name: f"tcp://127.0.0.1:{_free_port_pair()}" for name in names}
        else:
            self.endpoint = {name: f"ipc://{folder}/{name}" for name in names}
        if config.publish:
            self.endpoint["model"] = config.publish
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts: Counter = Counter()
        self.log = get_logger(component="supervisor")

    def command(self, name: str) -> list[str]:
        base = [sys.executable, "-m", "ser_stream", "--log-level", "warning", "stage", name]
        model = ["--model", self.config.model] if self.config.model else []
        if name == "capture":
            fast = ["--fast"] if self.config.fast else []
            fast += ["--rate", str(self.config.rate)]
            return [*base, "--source", self.config.source, "--stream", STREAM, *fast,
                    "--out", self.endpoint["capture"]]  # fmt: skip
        upstream = "capture" if name == "vad" else CHAIN[CHAIN.index(name) - 1]
        extra = ["--publish"] if name == "model" else []
        for key, value in self.config.stages.get(name, {}).items():
            extra += ["--set", f"{key}={json.dumps(value)}"]
        if name == "vad":
            value = (
                "null" if self.config.stop_on_silence_s is None else self.config.stop_on_silence_s
            )
            extra += ["--set", f"stop_on_silence_s={value}"]
        return [*base, "--in", self.endpoint[upstream], "--out", self.endpoint[name],
                "--control", self.endpoint["control"], *model, *extra]  # fmt: skip

    def start(self, name: str) -> None:
        reads_stdin = name == "capture" and self.config.source == "stdin"
        stdin = None if reads_stdin else subprocess.DEVNULL
        self.processes[name] = subprocess.Popen(
            self.command(name), stdin=stdin, preexec_fn=_end_with_parent
        )

    def check(self) -> None:
        """Restart any stage that died (not the capture, whose exit is the end of input)."""
        for name in CHAIN:
            process = self.processes.get(name)
            if process is None or process.poll() is None:
                continue
            self.restarts[name] += 1
            if self.restarts[name] > self.config.max_restarts:
                raise InputError(
                    f"stage {name} keeps dying (exit {process.returncode}); see its log"
                )
            backoff = min(5.0, 0.25 * 2 ** (self.restarts[name] - 1))
            self.log.error("stage died, restarting", stage=name, exit=process.returncode,
                           restart=self.restarts[name], backoff_s=backoff)  # fmt: skip
            time.sleep(backoff)
            self.start(name)

    def stop_all(self) -> None:
        """Stop every process, upstream first.

        Each stage's last messages and end of stream then reach a neighbour that still runs
        and acknowledges them, so none waits out its acknowledgement timeout.
        """
        deadline = time.monotonic() + 20
        for name in ("capture", *CHAIN):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.log.error("stage did not stop in time, killed", stage=name)
                process.kill()
                process.wait()


def run_pipeline(
    config: PipelineConfig,
    sinks: list[Sink],
    labels: tuple[str, ...],
    *,
    on_ready: Callable[[], None] | None = None,
) -> Session:
    """Run one session to its end; every sink sees every record; return the session.

    ``on_ready`` is called once every stage is up and the capture has started.
    """
    session = Session()
    stop = {"signal": False}
    previous = {
        sig: signal.signal(sig, lambda *_: stop.update(signal=True))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    started = time.monotonic()
    context = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="ser-stream-") as folder:
        stages = _Stages(config, Path(folder))
        session.restarts = stages.restarts
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        control = context.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        try:
            control.bind(stages.endpoint["control"])
            for name in CHAIN:
                stages.start(name)
            sub.connect(stages.endpoint["model"])
            _wait_ready(control, sub, stages, config.start_timeout_s, stop)
            stages.start("capture")
            for sink in sinks:
                sink.open(labels)
            if on_ready is not None:
                on_ready()
            capture = _CaptureWatch(stages.processes["capture"])
            while not stop["signal"]:
                stages.check()
                capture.check()
                if not sub.poll(200):
                    continue
                try:
                    envelope = decode(sub.recv_multipart())
                except WireError as exc:
                    session.errors.append(str(exc))
                    continue
                body = envelope.body
                if isinstance(body, Prediction):
                    session.predictions.append(body)
                    for sink in sinks:
                        sink.prediction(envelope, labels)
                elif isinstance(body, Event):
                    if body.name == "windows":
                        session.windows = int(body.data.get("count", 0))
                    elif body.name == "gap":
                        session.audio_dropped_s += float(body.data.get("dropped_s", 0.0))
                    for sink in sinks:
                        sink.event(envelope)
                elif isinstance(body, ErrorMsg):
                    session.errors.append(body.reason)
                    for sink in sinks:
                        sink.error(envelope)
                elif isinstance(body, EndOfStream):
                    session.reason = body.reason
                    break
                elif not isinstance(body, Heartbeat):
                    continue
        finally:
            session.duration_s = time.monotonic() - started
            stages.stop_all()
            context.destroy(linger=0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    summary = session.summary(labels)
    for sink in sinks:
        sink.close(session.reason, summary)
    return session


class _CaptureWatch:
    """A capture that exited must have ended its stream: its end reaches us soon, or never.

    A failing capture sends its reason and an ``error`` end of stream before it exits (status
    2); one that died before it could (killed, or broken at start) is noticed here.
    """

    GRACE_S = {True: 30.0, False: 3.0}  # after a clean exit / after a failure

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.exited_at: float | None = None

    def check(self) -> None:
        code = self.process.poll()
        if code is None:
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


def _free_port_pair() -> int:
    """A loopback port that is free, with the next one (its ack channel) free too."""
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                with socket.socket() as second:
                    second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise InputError("no free pair of loopback ports; free some or use ipc://")


def _wait_ready(
    control: zmq.Socket, sub: zmq.Socket, stages: _Stages, timeout_s: float, stop: dict
) -> None:
    """Every stage reports on the control socket; then the model's PUB must reach us."""
    deadline = time.monotonic() + timeout_s
    waiting = set(CHAIN)
    while waiting and time.monotonic() < deadline and not stop["signal"]:
        stages.check()
        if control.poll(250):
            try:
                body = decode(control.recv_multipart()).body
            except WireError:
                continue
            if isinstance(body, Heartbeat):
                waiting.discard(body.stage)
    subscribed = False
    while not waiting and not subscribed and time.monotonic() < deadline and not stop["signal"]:
        stages.check()  # the model publishes heartbeats while idle: then records reach us
        if sub.poll(250):
            try:
                subscribed = isinstance(decode(sub.recv_multipart()).body, Heartbeat)
            except WireError:
                continue
    if waiting or not subscribed:
        names = ", ".join(sorted(waiting)) or "model (publishing)"
        raise InputError(f"stages {names} did not come up within {timeout_s:.0f} s; see their logs")
