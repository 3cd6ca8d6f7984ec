"""The stage processes of a session: started, heard, restarted with back-off, and stopped.

Every process sends heartbeats on the control socket; one that dies is restarted (with a
back-off that grows with its failures of the last minute) and resumes where it got to; one
that hangs (heartbeats stop, or it holds work without progress) is killed and restarted too.
More than ``max_restarts`` failures of one process within a minute end the session with a
:class:`~ser_stream.errors.SupervisionError`.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable

import zmq

from ser_stream.errors import InputError, SupervisionError
from ser_stream.liveness import stuck
from ser_stream.logs import get_logger
from ser_stream.messages import Heartbeat
from ser_stream.runtime import ledger_window
from ser_stream.settings import HEARTBEAT_S
from ser_stream.supervisor.collector import waiting_envelopes
from ser_stream.supervisor.usage import usage
from ser_stream.supervisor.wiring import CHAIN, Wiring
from ser_stream.threads import limit_numeric_threads

__all__ = ["HUNG_AFTER_MISSES", "INPUT_ERROR", "RESTART_WINDOW_S", "Stages", "end_with_parent"]

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

Key = tuple[str, int]


class Stages:
    """The child processes of a session and their restarts, as wired by ``wiring``.

    Processes are keyed ``(stage, replica)``; captures are ``("capture", N)``, one per source.
    """

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self.config = wiring.config
        self.processes: dict[Key, subprocess.Popen] = {}
        self.restarts: Counter = Counter()
        self.hung: Counter = Counter()  # replaced because their heartbeats stopped
        self.log = get_logger(component="supervisor")
        self._started_at: dict[Key, float] = {}
        self._heard: dict[Key, float] = {}  # last heartbeat of each process
        self._listened_at = time.monotonic()
        self._attentive_since = self._listened_at  # listening without a pause since then
        self._last_blocked: dict[Key, float] = {}  # see _stuck
        self._failures: dict[Key, deque[float]] = defaultdict(deque)
        self._due: dict[Key, float] = {}  # restarts waiting out their back-off
        self.positions: dict[int, tuple[float, float]] = {}  # each capture's time sent, when heard
        # stream time each stage process reached in each of its streams (the VAD's)
        self.stream_positions: dict[Key, dict[str, float]] = {}
        self.heartbeats: dict[str, tuple[Heartbeat, float]] = {}  # the latest, by label
        self.finished: set[int] = set()  # captures told to stop: their stream is over
        self._down_since: dict[Key, float] = {}  # failed, not yet back
        self.downtime_s: list[float] = []  # from each failure to the replacement's heartbeat
        self.on_window: Callable[[str, tuple[float, float]], None] = lambda stream, span: None
        self.heartbeat_s = HEARTBEAT_S  # how often the processes report (see the runtime)

    def start(self, name: str, replica: int) -> None:
        """Start process ``(name, replica)``; a restart goes on where its predecessor got to."""
        self.processes[(name, replica)] = self.launch(
            name,
            replica,
            generation=self.restarts[self.wiring.label(name, replica)],
            capture_at=self.positions.get(replica) if name == "capture" else None,
            streams_at=self.stream_positions.get((name, replica)),
        )
        self._started_at[(name, replica)] = time.monotonic()
        self._heard.pop((name, replica), None)

    def launch(self, name: str, replica: int, **resume) -> subprocess.Popen:
        """Run process ``(name, replica)`` as a child of this one.

        ``resume``: see :meth:`Wiring.command`. An engine that places processes elsewhere
        replaces this.
        """
        reads_stdin = name == "capture" and self.config.sources[replica] == "stdin"
        return subprocess.Popen(
            self.wiring.command(name, replica, **resume),
            stdin=None if reads_stdin else subprocess.DEVNULL,
            env=limit_numeric_threads(dict(os.environ)),
            pass_fds=tuple(self.wiring.listening_fds(name, replica).values()),
            preexec_fn=functools.partial(end_with_parent, os.getpid()),
            # Out of the terminal's process group: Ctrl-C reaches the supervisor only, which
            # stops them upstream first (a capture reading the terminal stays in it).
            start_new_session=not reads_stdin,
        )

    def close(self) -> None:
        """The session is over: let go of what runs the processes (nothing, here)."""

    def start_chain(self) -> None:
        """Start every replica of every stage (the captures come once they are ready)."""
        for name in CHAIN:
            for replica in range(self.wiring.count(name)):
                self.start(name, replica)

    def start_captures(self) -> None:
        """Start one capture per source."""
        for source in range(self.wiring.count("capture")):
            self.start("capture", source)

    def captures(self) -> list[subprocess.Popen]:
        """The capture processes, one per source."""
        return [p for (name, _), p in self.processes.items() if name == "capture"]

    def listen(self, control: zmq.Socket) -> None:
        """Take the heartbeats and ledger entries waiting on the control socket (never waits)."""
        now = time.monotonic()
        if now - self._listened_at > self.heartbeat_s:
            # This process was busy (a stalled console): their silence was ours, and so may
            # be their lack of progress (the last stage sends its results here).
            self._heard = {key: max(heard, now) for key, heard in self._heard.items()}
            self._attentive_since = now
        self._listened_at = now
        for envelope in waiting_envelopes(control):
            window = ledger_window(envelope)
            if window is not None:
                self.on_window(envelope.stream, window)
                continue
            body = envelope.body
            if not isinstance(body, Heartbeat):
                continue
            name, _, replica = body.stage.rpartition(".")
            key = (name, int(replica)) if replica.isdigit() else None
            if key in self.processes and self.processes[key].poll() is None:
                self._heard[key] = now
                label = self.wiring.label(*key)
                self.heartbeats[label] = (body, now)
                if key in self._down_since:  # a replacement's first heartbeat: back in service
                    down_s = round(now - self._down_since.pop(key), 3)
                    self.downtime_s.append(down_s)
                    self.log.info("stage back", stage=label, down_s=down_s)
                if name == "capture" and not self.config.sources[key[1]].startswith("zmq:"):
                    self.positions[key[1]] = (body.position_s, now)
                elif body.positions:
                    self.stream_positions[key] = body.positions

    @property
    def restarting(self) -> bool:
        """A process is waiting out its back-off before it starts again."""
        return bool(self._due)

    def alive(self) -> set[Key]:
        """The processes whose heartbeat came since their (re)start."""
        return set(self._heard)

    def check(self) -> None:
        """Restart what died or hung, once its back-off has passed.

        A capture that exits by itself (status 0: its input ended; 2: its input failed) ends
        its stream, which says why; one that dies otherwise is restarted and goes on where
        it got to. A stage that exits with status 2 has wrong settings or input: restarting
        it cannot help, so the session ends with its message.

        Raises:
            InputError: a stage exited with an input error.
            SupervisionError: a process failed more than ``max_restarts`` times within a
                minute.
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
                    f"stage {self.wiring.label(*key)} stopped on an input error (exit 2); "
                    "see its message above, fix the setting and start again"
                )
            else:
                self._schedule_restart(key, f"exit {code}")

    def _check_alive(self, key: Key, process: subprocess.Popen, now: float) -> None:
        heard = self._heard.get(key)
        label = self.wiring.label(*key)
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

    def _stuck(self, key: Key, beat: Heartbeat, now: float) -> bool:
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

    def _blocked_after(self, key: Key) -> bool:
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
            beat = self.heartbeats.get(self.wiring.label(*other))
            if beat is not None and max(beat[0].stalled_s, beat[0].oldest_s) > self.heartbeat_s:
                return True
        return False

    def _schedule_restart(self, key: Key, cause: str) -> None:
        now = time.monotonic()
        label = self.wiring.label(*key)
        self.restarts[label] += 1
        failures = self._failures[key]
        failures.append(now)
        while now - failures[0] > RESTART_WINDOW_S:
            failures.popleft()
        if len(failures) > self.config.max_restarts:
            raise SupervisionError(
                f"stage {label} failed {len(failures)} times within {RESTART_WINDOW_S:.0f} s "
                f"(last: {cause}); the pipeline stopped"
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
        """Per live process and this one (``supervisor``): see :func:`usage`."""
        pids = {"supervisor": os.getpid()}
        for key, process in self.processes.items():
            pids[self.wiring.label(*key)] = process.pid
        return usage(pids)

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
                    label = self.wiring.label(*key)
                    self.log.error("stage did not stop in time, killed", stage=label)
                    process.kill()
                    process.wait()


def end_with_parent(parent: int) -> None:
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
