"""Where this user's pipelines keep their ipc:// endpoints and lock files, out of others' reach.

Every ipc:// endpoint ``up`` binds, its publish endpoint included, lives in a private runtime
folder: ``$XDG_RUNTIME_DIR/ser-stream`` when the system gives the user one, else
``ser-stream-UID`` in the temporary folder. The folder is created mode 0700 and checked on
every use: it must be a real folder (not a link), owned by this user, open to no one else.
Another local user therefore cannot bind the publish endpoint first, subscribe to the
predictions, or plant a link where the lock file goes.

Another local user can make ``ser-stream-UID`` first in a shared temporary folder (this user
cannot remove it there). Then the runtime folder is ``~/.cache/ser-stream-run`` instead,
checked the same way, with a warning: a fixed place, so ``tap`` finds the pipelines there too.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ser_stream.errors import InputError
from ser_stream.logs import get_logger

__all__ = ["hold", "held", "open_lock", "replace_file", "runtime_dir"]

# ipc:// paths are socket paths (at most 107 bytes on Linux); a pipeline adds up to about
# 40 (``/up-XXXXXXXX/features.12.s12.ack``) below its runtime folder.
_MAX_FOLDER_BYTES = 64
_WARNED: set[Path] = set()  # fallback folders this process has warned about


def runtime_dir() -> Path:
    """This user's private runtime folder, created when missing.

    Raises:
        InputError: the folder exists but is a link, or open to others, and is this user's
            to remove (the message says what to remove); or another user holds the default
            and the fallback folder cannot be made private.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _owned_and_private(Path(xdg)):
        folder = Path(xdg) / "ser-stream"
    else:
        folder = Path(tempfile.gettempdir()) / f"ser-stream-{os.getuid()}"
    _make(folder)
    if _another_users(folder):
        return _fallback(folder)
    _check(folder)
    return folder


def _make(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the runtime folder ({exc.strerror})") from exc


def _check(folder: Path) -> None:
    if not _owned_and_private(folder):
        raise InputError(
            f"{folder} is not a private folder of this user (a link, another user's, or open "
            "to others); remove it and start again"
        )


def _another_users(path: Path) -> bool:
    try:
        return os.lstat(path).st_uid != os.getuid()
    except OSError:
        return False


def _fallback(taken: Path) -> Path:
    """``~/.cache/ser-stream-run``: another user holds ``taken``, which this user cannot remove."""
    hint = "or set XDG_RUNTIME_DIR to a private folder of yours"
    home = Path(os.path.expanduser("~"))
    if not home.is_absolute():
        raise InputError(f"{taken} belongs to another user and there is no home folder; {hint}")
    cache = home / ".cache"
    folder = cache / "ser-stream-run"
    if len(os.fsencode(folder)) > _MAX_FOLDER_BYTES:
        raise InputError(
            f"{taken} belongs to another user, and {folder} is too long a path for ipc:// "
            f"endpoints; ask an administrator to remove {taken}, {hint}"
        )
    _make_parent(cache, hint)
    _make(folder)
    if not _owned_and_private(folder):
        raise InputError(
            f"{taken} belongs to another user, and {folder} is not a private folder of this "
            f"user (a link, another user's, or open to others); remove {folder}, {hint}"
        )
    if folder not in _WARNED:
        _WARNED.add(folder)
        get_logger(component="private").warning(
            "the default runtime folder belongs to another user; using this user's own instead",
            taken=str(taken),
            folder=str(folder),
        )
    return folder


def _make_parent(cache: Path, hint: str) -> None:
    try:
        cache.mkdir(mode=0o700, exist_ok=True)
        info = os.stat(cache)  # a link to a folder of this user's is as good
    except OSError as exc:
        raise InputError(f"{cache}: cannot create it ({exc.strerror}); {hint}") from exc
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"{cache} is another user's or writable by others; `chmod go-w {cache}`, {hint}"
        )


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


def hold(path: Path) -> int:
    """Take the lock file at ``path`` for as long as this process lives (or until closed).

    What it marks (a session's folder) is in use: :func:`held` says so to other processes,
    in other PID namespaces too.

    Raises:
        InputError: as :func:`open_lock`, or another process holds it.
    """
    import fcntl

    descriptor = open_lock(path)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        raise InputError(f"{path}: held by another process; start again") from exc
    return descriptor


def held(path: Path) -> bool:
    """Whether a process holds the lock file at ``path`` (see :func:`hold`).

    A missing or unreadable one counts as held: its maker may be about to take it.
    """
    import fcntl

    try:
        descriptor = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def replace_file(path: str | Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` at once: a reader never sees half of it.

    Raises:
        OSError: the folder cannot be written.
    """
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(partial, path)
