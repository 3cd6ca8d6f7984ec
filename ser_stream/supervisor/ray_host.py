"""What runs on a Ray node: stage hosts (actors that own a stage process), the registry.

A host is placed by Ray and restarted by Ray (``max_restarts``) when it or its node dies;
the supervisor, the Ray driver, tells it which process to run and from where to resume.
The host listens on its node's address for the outputs of its process, enters those
endpoints in the registry, and keeps its process's ``file:`` listing of upstream endpoints
up to date from it: a stage restarted on another node is found again (see
:mod:`ser_stream.peers`).

The session's CURVE keys arrive as arguments of the actor (Ray's own channels) and are
written only into a private folder of the node's user (mode 0700, secrets 0600).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from ser_stream.logs import get_logger
from ser_stream.peers import write_listing
from ser_stream.private import hold, runtime_dir
from ser_stream.security import CurveKeys, load_keys
from ser_stream.settings import PipelineConfig
from ser_stream.supervisor.folder import sweep_left_behind
from ser_stream.supervisor.processes import end_with_parent
from ser_stream.supervisor.usage import usage
from ser_stream.supervisor.wiring import Wiring
from ser_stream.threads import limit_numeric_threads

__all__ = ["KEY_FILES", "HostSession", "Registry", "StageHost"]

KEY_FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret")
"""The files of a key folder a host needs (the client's public key is also authorized)."""
FOLLOW_EVERY_S = 0.25
"""How often a host looks up where its process's upstream replicas are."""


@dataclass(frozen=True)
class HostSession:
    """What every host of a session is given.

    Attributes:
        registry: the name of the session's registry actor.
        control: the supervisor's control endpoint (heartbeats, ledger entries).
        results: the supervisor's results endpoint (the last stage connects to it).
        keys: the session's key files, by name (see :data:`KEY_FILES`).
    """

    registry: str
    control: str
    results: str
    keys: dict[str, bytes]


@ray.remote(num_cpus=0)
class Registry:
    """Where each endpoint of the session is now, by key (``vad.0.s1``)."""

    def __init__(self) -> None:
        self._endpoints: dict[str, str] = {}

    def put(self, endpoints: dict[str, str]) -> None:
        """Enter or replace endpoints by key."""
        self._endpoints.update(endpoints)

    def get(self, keys: list[str]) -> dict[str, str]:
        """The endpoints of ``keys`` that are known (a host not yet placed has none)."""
        return {key: self._endpoints[key] for key in keys if key in self._endpoints}

    def all(self) -> dict[str, str]:
        """Every endpoint of the session, by key."""
        return dict(self._endpoints)


class _NodeWiring(Wiring):
    """The session's wiring as one host sees it.

    Its own outputs listen on this node, its inputs are a listing the host keeps, and the
    supervisor's endpoints are given.
    """

    def __init__(self, config: PipelineConfig, folder: Path, session: HostSession) -> None:
        super().__init__(
            config, folder, host=ray.util.get_node_ip_address(), keys=_write_keys(folder, session)
        )
        self._endpoints.update(control=session.control, results=session.results)

    def listing(self, name: str, replica: int) -> Path:
        return self.folder / f"{name}.{replica}.in"

    def inputs(self, name: str, replica: int) -> list[str]:
        return [f"file:{self.listing(name, replica)}"]


def _write_keys(folder: Path, session: HostSession) -> CurveKeys:
    """The session's keys in a private key folder on this node."""
    keys = folder / "keys"
    keys.mkdir(mode=0o700)
    (keys / "authorized").mkdir(mode=0o700)
    for name in KEY_FILES:
        mode = 0o600 if name.endswith("_secret") else 0o644
        # Made with its mode: a secret is never readable by others, not even for a moment.
        descriptor = os.open(keys / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(session.keys[name])
    shutil.copy(keys / "client.key", keys / "authorized" / "client.key")
    return load_keys(keys)


@ray.remote(num_cpus=0, max_concurrency=4)
class StageHost:
    """Owns one stage process of a session on the node Ray placed it on.

    Its methods run in threads: :meth:`run` waits for the process while the supervisor
    signals it or asks for its usage.
    """

    def __init__(self, config: PipelineConfig, session: HostSession) -> None:
        sweep_left_behind(runtime_dir())  # hosts Ray killed leave their folders (keys)
        folder = Path(tempfile.mkdtemp(prefix=f"host-{os.getpid()}-", dir=runtime_dir()))
        self._in_use = hold(folder / ".lock")  # the folder is swept once this process ends
        self.wiring = _NodeWiring(config, folder, session)
        self.registry = ray.get_actor(session.registry)
        self.log = get_logger(component="ray-host")
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._stopped = False  # told to stop before its process started
        self._following: tuple[str, int] | None = None

    def node(self) -> str:
        """The id of the node this host runs on."""
        return ray.get_runtime_context().get_node_id()

    def run(self, name: str, replica: int, **resume) -> int:
        """Run process ``(name, replica)`` here until it exits; its exit status."""
        wiring = self.wiring
        outputs = dict(
            zip(wiring.output_keys(name, replica), wiring.outputs(name, replica), strict=True)
        )
        ray.get(self.registry.put.remote(outputs))
        if name != "capture":
            self._follow(name, replica)
        command = wiring.command(name, replica, **resume)
        with self._lock:
            if self._stopped:
                return -signal.SIGTERM
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                env=limit_numeric_threads(dict(os.environ)),
                pass_fds=tuple(wiring.listening_fds(name, replica).values()),
                preexec_fn=functools.partial(end_with_parent, os.getpid()),
                start_new_session=True,
            )
        return self._process.wait()

    def _follow(self, name: str, replica: int) -> None:
        """Keep the process's listing of upstream endpoints as the registry has them."""
        listing = self.wiring.listing(name, replica)
        keys = self.wiring.input_keys(name, replica)
        written = self._write_listing(listing, keys)
        if self._following is None:
            self._following = (name, replica)
            follow = functools.partial(self._keep_following, listing, keys, written)
            threading.Thread(target=follow, daemon=True).start()

    def _write_listing(self, listing: Path, keys: list[str]) -> list[str]:
        found = ray.get(self.registry.get.remote(keys), timeout=10)
        endpoints = [found[key] for key in keys if key in found]
        write_listing(str(listing), endpoints)
        return endpoints

    def _keep_following(self, listing: Path, keys: list[str], last: list[str]) -> None:
        while True:
            time.sleep(FOLLOW_EVERY_S)
            try:
                found = ray.get(self.registry.get.remote(keys), timeout=10)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                self.log.warning("registry not reached", reason=str(exc))
                continue
            endpoints = [found[key] for key in keys if key in found]
            if endpoints != last:
                write_listing(str(listing), endpoints)
                last = endpoints

    def signal(self, signum: int) -> None:
        """Send the process ``signum`` (before it started: it will not start)."""
        with self._lock:
            if self._process is None:
                self._stopped = True
            elif self._process.poll() is None:
                self._process.send_signal(signum)

    def usage(self, label: str) -> dict[str, dict[str, float]]:
        """The process's and this host's (``LABEL.host``) memory and CPU (see :func:`usage`).

        The host is the engine's cost of running the process; it is counted with it.
        """
        pids = {f"{label}.host": os.getpid()}
        if self._process is not None:
            pids[label] = self._process.pid
        return usage(pids)
