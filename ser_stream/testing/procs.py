"""The processes of a running `ser-stream up`, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

from ser_stream.testing.session import wait_for


def children(parent: int) -> dict[int, list[str]]:
    """The live (not zombie) child processes of ``parent``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError):
            continue
        if int(stat[1]) == parent and stat[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def stage_pids(parent: int, name: str) -> set[int]:
    """The live processes of stage ``name`` (every replica) under ``parent``."""
    return {
        pid
        for pid, cmdline in children(parent).items()
        if "stage" in cmdline and cmdline[cmdline.index("stage") + 1 :][:1] == [name]
    }


def stage_pid(parent: int, name: str, timeout_s: float = 60) -> int:
    """Wait for a live process of stage ``name`` under ``parent``; return its pid."""
    return min(wait_for(lambda: stage_pids(parent, name), timeout_s))


def process_state(pid: int | str) -> str | None:
    """The state letter of ``pid`` in ``/proc`` (``R``, ``S``, ``T``, ``Z``...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def status_mb(pid: int | str, field: str = "VmRSS") -> float | None:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``...) in MB, None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_files(pid: int | str) -> int:
    """How many file descriptors ``pid`` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int | str = "self") -> int:
    """How many threads ``pid`` runs."""
    return len(os.listdir(f"/proc/{pid}/task"))


def unix_connections(path: str | Path) -> int:
    """How many connections are open on the Unix socket bound at ``path``.

    For an ``ipc://`` endpoint: each subscriber connected to a publisher counts once.
    """
    count = 0
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == str(path) and fields[5] == "03":  # connected
            count += 1
    return count
