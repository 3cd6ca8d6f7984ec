"""Who binds what and who connects where: the endpoints of a session and each process's command.

Replicas: a stateful stage (vad, denoise, features) is sharded by stream id, so a stream
always reaches the same replica; every replica of the stage before binds one output per
shard. A stateless stage (model) shares one output of each upstream replica (PUSH/PULL load
balancing) and keeps sequence numbers, from which the collector restores the order.

The chain and which stages are stateless come from the stage table
(:data:`ser_stream.stages.STAGES`).
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from ser_stream.errors import InputError
from ser_stream.security import CurveKeys, create_keys, load_keys
from ser_stream.settings import PipelineConfig, stage_options
from ser_stream.stages import STAGES
from ser_stream.transport import ack_endpoint

__all__ = ["CHAIN", "STATELESS", "Wiring", "self_command", "stream_of"]

CHAIN: tuple[str, ...] = tuple(STAGES)
"""The stages after the capture, in pipeline order."""
STATELESS: frozenset[str] = frozenset(name for name, spec in STAGES.items() if spec.stateless)
"""Stages that keep nothing per stream (each replica takes any message of any stream)."""


def self_command() -> list[str]:
    """How a process of this package starts another: ``python -P -m ser_stream``.

    With ``-P`` the working folder does not come first on the module path, so a plain
    install run from the project's checkout starts the installed package, not the
    checkout's ``ser_stream/`` folder (where ``ser_stream.stages`` is not).
    """
    return [sys.executable, "-P", "-m", "ser_stream"]


def stream_of(source: int) -> str:
    """The stream id of the ``source``-th source (a ``zmq:`` source's own are named)."""
    return f"stream-{source + 1}"


class Wiring:
    """The endpoints of one session (stable for it, restarts included) and the commands.

    Processes are named ``(stage, replica)``; captures are ``("capture", N)``, one per source.
    """

    def __init__(
        self,
        config: PipelineConfig,
        folder: Path,
        *,
        host: str = "127.0.0.1",
        keys: CurveKeys | None = None,
    ) -> None:
        self.config = config
        self.folder = folder
        self.host = host  # the address tcp endpoints listen on (a node's, with an engine)
        self._endpoints: dict[str, str] = {}
        self.listening: dict[str, socket.socket] = {}  # tcp: held for the session
        self.keys = keys if keys is not None else _session_keys(config, folder)

    def endpoint(self, key: str) -> str:
        """The endpoint named ``key`` (stable for the session, restarts included).

        With tcp, the operating system chooses the port (and the next one, for the
        acknowledgements): this process holds both listening sockets for the session and
        hands them to whoever binds the endpoint (``ZMQ_USE_FD``), so no other program can
        take a port between its choice and its use, and a restarted stage gets the same.
        """
        if key not in self._endpoints:
            if self.config.tcp:
                data, ack = _listening_pair(self.host)
                endpoint = f"tcp://{self.host}:{data.getsockname()[1]}"
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
        """Close the tcp listening sockets this process held for the session."""
        for listener in self.listening.values():
            listener.close()
        self.listening.clear()

    def count(self, name: str) -> int:
        """Processes of ``name``: sources for the capture, else replicas."""
        return len(self.config.sources) if name == "capture" else self.config.replicas_of(name)

    def output_keys(self, name: str, replica: int) -> list[str]:
        """The endpoints replica ``replica`` of ``name`` binds, by key: one per next shard."""
        if name == CHAIN[-1]:  # it connects to the collector
            return []
        after = CHAIN[CHAIN.index(name) + 1] if name != "capture" else CHAIN[0]
        if after in STATELESS:
            return [f"{name}.{replica}"]
        return [f"{name}.{replica}.s{k}" for k in range(self.count(after))]

    def input_keys(self, name: str, replica: int) -> list[str]:
        """The endpoints replica ``replica`` of ``name`` connects to, by key.

        That is its shard of every upstream replica.
        """
        before = "capture" if name == CHAIN[0] else CHAIN[CHAIN.index(name) - 1]
        shard = "" if name in STATELESS else f".s{replica}"
        return [f"{before}.{u}{shard}" for u in range(self.count(before))]

    def outputs(self, name: str, replica: int) -> list[str]:
        """What replica ``replica`` of ``name`` binds: one output per shard of the next stage."""
        return [self.endpoint(key) for key in self.output_keys(name, replica)]

    def inputs(self, name: str, replica: int) -> list[str]:
        """What replica ``replica`` of ``name`` connects to: its shard of every upstream."""
        return [self.endpoint(key) for key in self.input_keys(name, replica)]

    def label(self, name: str, replica: int) -> str:
        """``model`` or, with replicas, ``model.1``; the captures are ``capture.N``."""
        return f"{name}.{replica}" if self.count(name) > 1 or name == "capture" else name

    def command(
        self,
        name: str,
        replica: int,
        *,
        generation: int = 0,
        capture_at: tuple[float, float] | None = None,
        streams_at: dict[str, float] | None = None,
    ) -> list[str]:
        """The command line of process ``(name, replica)``.

        ``generation`` counts its restarts; a restarted capture goes on from ``capture_at``
        (stream time sent, and the monotonic clock when that was heard), a restarted stage
        from ``streams_at`` (the stream time it reached in each of its streams).
        """
        base = [*self_command(), "--log-level", "warning", "stage", name]
        outs = (
            [arg for out in self.outputs(name, replica) for arg in ("--out", out)]
            if (name != CHAIN[-1])
            else ["--out", self.endpoint("results"), "--collect"]
        )
        control = ["--control", self.endpoint("control"), "--replica", str(replica),
                   "--generation", str(generation)]  # fmt: skip
        if self.keys is not None:
            control += ["--curve", str(self.keys.folder)]
        if name == "capture":
            extra = ["--fast"] if self.config.fast else []
            extra += ["--rate", str(self.config.rate)]
            if capture_at is not None:  # a restart: go on where the last one got to
                position_s, heard_at = capture_at
                extra += ["--start-s", f"{position_s:.6f}"]
                if self.config.sources[replica].startswith("mic"):
                    # The room went on meanwhile: that audio is lost, and the VAD says so.
                    extra += ["--start-clock", f"{heard_at:.6f}"]
            return [*base, "--source", self.config.sources[replica], "--stream",
                    stream_of(replica), *extra, *outs, *control,
                    *self._fd_args(name, replica)]  # fmt: skip
        model = ["--model", self.config.model] if self.config.model else []
        ins = [arg for endpoint in self.inputs(name, replica) for arg in ("--in", endpoint)]
        extra = []
        for key, value in stage_options(self.config, name).items():
            extra += ["--set", f"{key}={json.dumps(value)}"]
        if streams_at is not None:  # a restart: where its streams were
            extra += ["--resume", json.dumps(streams_at)]
        return [*base, *ins, *outs, *control, *self._fd_args(name, replica), *model, *extra]

    def _fd_args(self, name: str, replica: int) -> list[str]:
        fds = self.listening_fds(name, replica)
        return [arg for endpoint, fd in fds.items() for arg in ("--listen-fd", f"{endpoint}={fd}")]


def _session_keys(config: PipelineConfig, folder: Path) -> CurveKeys | None:
    """The CURVE keys of the session: the user's (``curve``), else made for it with ``tcp``."""
    if config.curve:
        return load_keys(Path(config.curve))
    if config.tcp:
        return load_keys(create_keys(folder / "keys"))
    return None


def _listening_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Two listening sockets on ``host``, on adjacent ports the system chose (data, ack)."""
    for _ in range(50):
        data = socket.socket()
        data.bind((host, 0))
        ack = socket.socket()
        try:
            ack.bind((host, data.getsockname()[1] + 1))
        except OSError:
            data.close()
            ack.close()
            continue
        for listener in (data, ack):
            listener.listen(128)
            listener.set_inheritable(True)
        return data, ack
    raise InputError(f"no two adjacent free ports on {host}; free some or use ipc://")
