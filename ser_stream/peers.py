"""Where a stage's upstream replicas are: fixed endpoints, or names that move.

A stage's ``--in`` is one of:

- ``tcp://HOST:PORT`` or ``ipc://PATH``: one fixed endpoint;
- ``dns:HOST:PORT``: every address ``HOST`` resolves to, on ``PORT``. A headless
  Kubernetes Service resolves to the address of each of its pods, so a scaled stage reaches
  every pod of the stage before it, including pods that come later;
- ``file:PATH``: the endpoints listed in ``PATH``, one per line. Whoever places the
  processes (the Ray engine's stage host) rewrites it when an upstream replica moves.

A :class:`Peers` says which endpoints the names stand for now; the inbox connects to new
ones and lets go of those that went away.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from math import inf

from ser_stream.errors import InputError
from ser_stream.private import replace_file

__all__ = ["DNS_EVERY_S", "Peers", "check_input", "write_listing"]

_FIXED = ("tcp://", "ipc://")
DNS_EVERY_S = 1.0
"""How often a ``dns:`` name is asked again (a pod that comes or goes is followed)."""


def check_input(item: str) -> None:
    """Refuse an ``--in`` value that is none of the forms above, in one line.

    Raises:
        InputError: the value names no endpoint.
    """
    if item.startswith(_FIXED):
        return
    if item.startswith("dns:"):
        _host_port(item)
        return
    if item.startswith("file:") and len(item) > len("file:"):
        return
    raise InputError(
        f"--in {item!r}: give tcp://HOST:PORT, ipc://PATH, dns:HOST:PORT (every address of "
        "HOST) or file:PATH (endpoints listed one per line)"
    )


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item[len("dns:") :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise InputError(f"--in {item!r} is not dns:HOST:PORT (a port below 65535)")
    return host.strip("[]"), int(port)


def _tcp(address: str, port: int) -> str:
    literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"tcp://{literal}:{port}"


class Peers:
    """The endpoints a stage's ``--in`` values stand for, looked up again on demand.

    A lookup that fails (a name with no address yet: no pod of it is ready; a file not
    written yet) keeps what that value stood for before: a passing resolver fault never
    cuts a working link, and the lookup is simply tried again.
    """

    def __init__(self, inputs: Sequence[str]) -> None:
        for item in inputs:
            check_input(item)
        self.inputs = tuple(inputs)
        self._known: dict[str, list[str]] = {}
        self._asked: dict[str, float] = {}  # when each dns: name was last asked
        self._resolver: ThreadPoolExecutor | None = None

    @property
    def moving(self) -> bool:
        """Some value names endpoints that may change (``dns:`` or ``file:``)."""
        return any(not item.startswith(_FIXED) for item in self.inputs)

    def lookup(self) -> list[str]:
        """Every endpoint the values stand for now, each once, in a stable order.

        A ``file:`` listing is read at every lookup; a ``dns:`` name is asked again once
        :data:`DNS_EVERY_S` has passed (its answer stands until then).
        """
        endpoints: list[str] = []
        now = time.monotonic()
        for item in self.inputs:
            if item.startswith("dns:") and now - self._asked.get(item, -inf) < DNS_EVERY_S:
                pass  # its last answer stands
            else:
                self._asked[item] = now
                try:
                    self._known[item] = self._expand(item)
                except OSError:
                    pass  # keep what it stood for; tried again at the next lookup
            for endpoint in self._known.get(item, []):
                if endpoint not in endpoints:
                    endpoints.append(endpoint)
        return endpoints

    def _expand(self, item: str) -> list[str]:
        if item.startswith(_FIXED):
            return [item]
        if item.startswith("file:"):
            with open(item[len("file:") :], encoding="utf-8") as listing:
                lines = [line.strip() for line in listing]
            return [line for line in lines if line.startswith(_FIXED)]
        host, port = _host_port(item)
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({_tcp(str(answer[4][0]), port) for answer in answers})

    def resolver(self) -> ThreadPoolExecutor:
        """The thread that looks names up (a slow DNS answer never holds the event loop)."""
        if self._resolver is None:
            self._resolver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peers")
        return self._resolver

    def close(self) -> None:
        """Let the resolver thread go."""
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)
            self._resolver = None


def write_listing(path: str, endpoints: Sequence[str]) -> None:
    """Replace the listing at ``path`` at once (a reader never sees half of it)."""
    replace_file(path, "".join(f"{endpoint}\n" for endpoint in endpoints))
