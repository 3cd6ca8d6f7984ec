"""Where this user's pipelines keep their ipc:// endpoints and lock files, out of others' reach.

Every ipc:// endpoint ``up`` binds, its publish endpoint included, lives in a private runtime
folder: ``$XDG_RUNTIME_DIR/ser-stream`` when the system gives the user one, else
``ser-stream-UID`` in the temporary folder. The folder is created mode 0700 and checked on
every use: it must be a real folder (not a link), owned by this user, open to no one else.
Another local user therefore cannot bind the publish endpoint first, subscribe to the
predictions, or plant a link where the lock file goes.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ser_stream.errors import InputError

__all__ = ["open_lock", "runtime_dir"]


def runtime_dir() -> Path:
    """This user's private runtime folder, created when missing.

    Raises:
        InputError: the folder exists but is a link, belongs to another user or is open to
            others (someone may be waiting on it); the message says what to remove.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _owned_and_private(Path(xdg)):
        folder = Path(xdg) / "ser-stream"
    else:
        folder = Path(tempfile.gettempdir()) / f"ser-stream-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the runtime folder ({exc.strerror})") from exc
    if not _owned_and_private(folder):
        raise InputError(
            f"{folder} is not a private folder of this user (a link, another user's, or open "
            "to others); remove it and start again"
        )
    return folder


def _owned_and_private(folder: Path) -> bool:
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    )


def open_lock(path: Path) -> int:
    """Open (creating, mode 0600) a lock file without following links; return its descriptor.

    The file is created with ``O_EXCL`` where it does not exist; an existing one is opened
    with ``O_NOFOLLOW`` and must be a regular file of this user.

    Raises:
        InputError: the path is a link, not a regular file, or another user's.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            descriptor = os.open(path, flags)
        except OSError as exc:  # ELOOP: a link was planted there
            raise InputError(f"{path}: not a lock file of this user ({exc.strerror}); "
                             "remove it and start again") from exc  # fmt: skip
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(descriptor)
        raise InputError(f"{path}: not a lock file of this user; remove it and start again")
    return descriptor
