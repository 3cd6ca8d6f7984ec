"""What a session holds in the user's private runtime folder, and what killed ones left there.

Each session works in a folder of its own (``up-PID-*``, ``serve-PID-*``, marked by a
``.lock`` it holds); the default publish endpoint (``pub``) belongs to one ``up`` at a time,
claimed by a lock on ``pub.lock``. See :mod:`ser_stream.private` for the folder itself.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from ser_stream.private import held, hold, open_lock, runtime_dir

__all__ = [
    "PublishClaim",
    "claim_publish_endpoint",
    "default_publish_endpoint",
    "sweep_left_behind",
]


def default_publish_endpoint() -> str:
    """Where ``up`` publishes and ``tap`` listens unless told otherwise (one per user).

    It lives in the user's private runtime folder (see :mod:`ser_stream.private`): no other
    user can bind it first or subscribe to it.
    """
    return f"ipc://{runtime_dir()}/pub"


class PublishClaim:
    """A publish endpoint this process holds, with the lock that says so; close to let go.

    Two pipelines binding one ipc:// path would steal each other's subscribers: the lock
    keeps a second ``up`` off the default endpoint while this one holds it.
    """

    def __init__(self, endpoint: str, lock: int) -> None:
        self.endpoint = endpoint
        self._lock: int | None = lock

    def close(self) -> None:
        """Let go of the endpoint (a later ``up`` may take it); closing twice is fine."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> PublishClaim:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def claim_publish_endpoint() -> PublishClaim:
    """The default endpoint if no other ``up`` of this user holds it, else a private one."""
    folder = runtime_dir()
    lock = open_lock(folder / "pub.lock")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        # marked as this process's, so that a later `up` removes it only once it is gone
        mine = hold(folder / f"pub-{os.getpid()}.lock")
        return PublishClaim(f"ipc://{folder}/pub-{os.getpid()}", mine)
    return PublishClaim(default_publish_endpoint(), lock)


def sweep_left_behind(folder: Path) -> None:
    """Remove what sessions whose supervisor was killed left in the runtime folder.

    A session's folder (``up-PID-*``, ``serve-PID-*``, a Ray stage host's ``host-PID-*``,
    holding its ``.lock``) and a second
    pipeline's publish endpoint (``pub-PID``, beside ``pub-PID.lock``) name the process that
    made them and are marked by a lock it holds (:func:`~ser_stream.private.hold`). What is
    neither held nor of a live process is removed; a missing lock is left alone (its maker
    may be about to take it), and so is a lock held from another PID namespace.
    """
    for entry in folder.iterdir():
        name = entry.name
        if (
            name.startswith(("up-", "serve-", "host-"))
            and entry.is_dir()
            and not entry.is_symlink()
        ):
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
