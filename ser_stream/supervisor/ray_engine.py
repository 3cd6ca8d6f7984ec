"""``up --engine ray``: the session's stage processes placed, scaled and restarted by Ray.

The supervisor is the Ray driver. Its run loop, the ledger, the collector and the sinks
(:mod:`.pipeline`) run in ``up``'s own process, unchanged: the sinks write to the user's
console and files, where ``up`` runs; the ledger and the collector must outlive any stage
and any node; and every actor the driver made ends with it, so a session leaves nothing
running on the cluster. What Ray takes over is where each process runs: every replica
(and every capture) is a :class:`~.ray_host.StageHost` actor that owns the unchanged stage
process, placed by Ray's resources and node labels (``--place``), and restarted by Ray
(``max_restarts``) on a living node when it or its node dies. The supervisor keeps its own
rules: it hears the heartbeats and the ledger entries, restarts a process that died or hung
with the back-off and the restart intensity of ``up``, and hands the replacement its
streams' resume points (:class:`~.processes.Stages`).

Endpoints: the nodes share no folder, so every link is tcp:// with CURVE. A host listens on
its node's address and enters its endpoints in the session's registry, a named actor; the
host of each consumer keeps its process's ``file:`` listing of upstream endpoints up to
date from it, so a stage restarted on another node is found again (:mod:`ser_stream.peers`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

from ser_stream.errors import InputError
from ser_stream.private import runtime_dir
from ser_stream.settings import PipelineConfig
from ser_stream.supervisor.processes import Stages
from ser_stream.supervisor.usage import usage
from ser_stream.supervisor.wiring import Wiring

__all__ = ["HOST_LOST", "HostedProcess", "RayStages", "connect"]

HOST_LOST = -int(signal.SIGKILL)
"""The exit status the supervisor sees for a process whose host or node died."""


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(
            "--engine ray needs Ray: pip install 'ser-stream[ray]' (or leave out --engine)"
        ) from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: start one on this machine).

    Returns whether this call started or joined Ray (and so is to let it go at the end).

    Raises:
        InputError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    here = os.getcwd()
    # Ray puts the driver's working folder first on its workers' module path: run from a
    # checkout, the checkout's ser_stream/ (without the stages it maps) would shadow the
    # installed package in every host. From a folder of no code, nothing is shadowed.
    os.chdir(runtime_dir())
    try:
        ray.init(
            address=address,
            namespace="ser-stream",
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "on this machine"
        raise InputError(
            f"cannot reach a Ray cluster {where} ({exc}); start one with `ray start --head` "
            "or check --address"
        ) from exc
    finally:
        os.chdir(here)
    return True


class HostedProcess:
    """A stage process run by a host actor.

    It has the face of :class:`subprocess.Popen` the supervisor uses (``poll``, ``wait``,
    ``send_signal``, ``kill``).
    """

    def __init__(self, host: Any, done: Any, label: str, log: Any) -> None:
        self._host = host
        self._done = done  # the host's run(): its result is the exit status
        self.label = label
        self._log = log
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status, or None while it runs (or while its host waits to run it)."""
        if self.returncode is None:
            ray = _ray()
            ready, _ = ray.wait([self._done], timeout=0)
            if ready:
                try:
                    self.returncode = ray.get(self._done)
                except ray.exceptions.RayTaskError as exc:  # the host's own failure
                    self.returncode = HOST_LOST
                    self._log.error("stage host failed", stage=self.label, cause=str(exc.cause))
                except ray.exceptions.RayError as exc:
                    self.returncode = HOST_LOST
                    self._log.error(
                        "stage host lost: its node or worker died; Ray places it again",
                        stage=self.label,
                        cause=type(exc).__name__,
                    )
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        ready, _ = _ray().wait([self._done], timeout=timeout)
        code = self.poll() if ready else None
        if code is None:
            raise subprocess.TimeoutExpired(self.label, timeout or 0.0)
        return code

    def send_signal(self, signum: int) -> None:
        """Have the host signal the process (nothing once it has ended)."""
        if self.poll() is None:
            self._host.signal.remote(int(signum))

    def kill(self) -> None:
        """Have the host kill the process."""
        self.send_signal(signal.SIGKILL)


class RayStages(Stages):
    """The session's processes, each owned by a host actor that Ray places and restarts."""

    def __init__(self, config: PipelineConfig, folder: Path) -> None:
        from ser_stream.supervisor.ray_host import KEY_FILES, HostSession, Registry

        ray = _ray()
        self._joined = connect(config.address)
        config = _absolute_paths(config)
        _check_placement(ray, config)
        super().__init__(Wiring(config, folder, host=ray.util.get_node_ip_address()))
        here = ray.get_runtime_context().get_node_id()
        self._on_this_node = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
        name = f"registry-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.registry = Registry.options(
            name=name, scheduling_strategy=self._on_this_node(here, soft=False)
        ).remote()
        keys = self.wiring.keys
        assert keys is not None  # the ray engine always has tcp, hence keys
        self.session = HostSession(
            registry=name,
            control=self.wiring.endpoint("control"),
            results=self.wiring.endpoint("results"),
            keys={file: (keys.folder / file).read_bytes() for file in KEY_FILES},
        )
        self.registry.put.remote({"control": self.session.control, "results": self.session.results})
        self.hosts: dict[tuple[str, int], Any] = {}
        self.placed: dict[str, str] = {}  # the node each process runs on, by label
        self._placing: dict[str, Any] = {}  # the nodes being asked for
        self._here = here

    def launch(self, name: str, replica: int, **resume) -> HostedProcess:  # type: ignore[override]
        """Have the host of ``(name, replica)`` run it (Ray places a new host first)."""
        from ser_stream.supervisor.ray_host import StageHost

        key = (name, replica)
        if key not in self.hosts:
            self.hosts[key] = StageHost.options(**self._placement(name)).remote(
                self.config, self.session
            )
        host = self.hosts[key]
        label = self.wiring.label(name, replica)
        done = host.run.remote(name, replica, **resume)
        self._placing[label] = host.node.remote()  # answered once Ray has placed it
        return HostedProcess(host, done, label, self.log)

    def check(self) -> None:
        """Say where processes were placed (or placed again), then as :meth:`Stages.check`."""
        ray = _ray()
        for label, ref in list(self._placing.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._placing[label]
            try:
                node = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # its host died before it answered: the restart asks again
            if self.placed.get(label) != node:
                self.log.info("stage placed", stage=label, node=node)
            self.placed[label] = node
        super().check()

    def _placement(self, name: str) -> dict[str, Any]:
        """Where Ray may run a host of ``name``, and how often it brings one back."""
        options: dict[str, Any] = {
            "max_restarts": self.config.max_restarts,
            "scheduling_strategy": "SPREAD",  # the replicas of a stage on different nodes
        }
        where = self.config.place.get(name)
        if where is None and name == "capture":
            # A file or a microphone is where `up` runs: there if that node can, else anywhere.
            options["scheduling_strategy"] = self._on_this_node(self._here, soft=True)
        elif where is not None and ":" in where:
            label, value = where.split(":", 1)
            options["label_selector"] = {label: value}
        elif where is not None:
            gpu = where.lower() == "gpu"
            options["num_gpus" if gpu else "resources"] = 0.001 if gpu else {where: 0.001}
        return options

    def usage(self) -> dict[str, dict[str, float]]:
        """Per live process (asked of its host, on its node) and this one (``supervisor``)."""
        ray = _ray()
        found = usage({"supervisor": os.getpid()})
        asked = {self.wiring.label(*key): host for key, host in self.hosts.items()}
        refs = {label: host.usage.remote(label) for label, host in asked.items()}
        for ref in refs.values():
            try:
                part = ray.get(ref, timeout=10)
            except (ray.exceptions.RayError, TimeoutError):
                continue  # a host that is gone has nothing to say
            for field, values in part.items():
                found[field].update(values)
        return found

    def close(self) -> None:
        """End every host and the registry; let go of a Ray this session started or joined."""
        ray = _ray()
        for actor in [*self.hosts.values(), self.registry]:
            try:
                ray.kill(actor, no_restart=True)
            except ray.exceptions.RayError:
                pass
        self.hosts.clear()
        if self._joined:
            ray.shutdown()


def _absolute_paths(config: PipelineConfig) -> PipelineConfig:
    """Files named relative to where ``up`` runs, named so that a host finds them too."""
    sources = tuple(
        f"file:{Path(source[len('file:') :]).resolve()}" if source.startswith("file:") else source
        for source in config.sources
    )
    model = str(Path(config.model).resolve()) if config.model else None
    return dataclasses.replace(config, sources=sources, model=model)


def _check_placement(ray: Any, config: PipelineConfig) -> None:
    """Refuse now, not after the start timeout, a stage placed where no node can run it.

    Raises:
        InputError: no living node has the resource or label.
    """
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    for name, where in config.place.items():
        if ":" in where:
            label, value = where.split(":", 1)
            ok = any(node.get("Labels", {}).get(label) == value for node in nodes)
        else:
            resource = "GPU" if where.lower() == "gpu" else where
            ok = any(node.get("Resources", {}).get(resource, 0) > 0 for node in nodes)
        if not ok:
            raise InputError(
                f"--place {name}={where}: no node of the Ray cluster has "
                f"{'the label' if ':' in where else 'the resource'} {where}; start a node "
                "with it (`ray start --resources` or `--labels`) or change --place"
            )
