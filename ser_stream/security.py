"""CurveZMQ on tcp:// links: who may connect is decided by keys, not by who reaches the port.

A loopback port is open to every local user, so every tcp:// endpoint of a pipeline is a
CURVE server: only a client holding an authorized key pair (and the server's public key)
completes the handshake; a wrong key, no key, PLAIN or NULL gets no frame through, and the
refusal is logged. ipc:// endpoints need none of this: they live in a private folder (see
:mod:`ser_stream.private`).

A key folder holds ``server.key`` / ``server.key_secret``, ``client.key`` /
``client.key_secret`` (pyzmq's certificate files) and ``authorized/``, the public keys of
the clients let in. ``ser-stream keys DIR`` makes one; ``ser-stream up --tcp`` makes one
for the session by itself. The folder, ``authorized/`` and the key files must be the
user's own, no links, and writable by no one else (secret files: mode 0600), or nothing
starts: whoever could write ``authorized/`` could let their own producer in.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ser_stream.errors import InputError
from ser_stream.logs import get_logger

__all__ = ["CurveKeys", "create_keys", "load_keys", "secure", "stop_authenticators"]


@dataclass(frozen=True)
class CurveKeys:
    """The keys of one key folder (z85-encoded bytes, as pyzmq takes them)."""

    folder: Path
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    authorized: frozenset[bytes]


def create_keys(folder: Path) -> Path:
    """Make a key folder: a server and a client key pair, the client authorized.

    A folder that exists already must be this user's and writable by no one else (a folder
    that is not there yet is made mode 0700), so no one can plant a key or a link in it.

    Raises:
        InputError: the folder cannot be made, holds keys already, or is a link, another
            user's, or writable by others.
    """
    folder = Path(folder)
    if os.path.lexists(folder):
        _check_ours(folder, folder=True, fix=f"`chmod 700 {folder}` and check what is in it")
    if (folder / "server.key_secret").exists():
        raise InputError(f"{folder} holds keys already; remove them or pick another folder")
    authorized = folder / "authorized"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_ours(folder, folder=True, fix=f"`chmod 700 {folder}`")  # made by us, or raced
        folder.chmod(0o700)
        if os.path.lexists(authorized):
            _check_ours(authorized, folder=True, fix=f"remove {authorized}")
        authorized.mkdir(mode=0o700, exist_ok=True)
        for name in ("server", "client"):
            zmq.auth.create_certificates(str(folder), name)
            (folder / f"{name}.key_secret").chmod(0o600)
        shutil.copy(folder / "client.key", authorized / "client.key")
    except OSError as exc:
        raise InputError(f"{folder}: cannot write keys ({exc.strerror})") from exc
    return folder


def load_keys(folder: Path) -> CurveKeys:
    """Read a key folder, refusing keys that others could read or replace.

    The folder, ``authorized/`` and every key file read must be this user's, no link, and
    writable by no one else (secret files: readable by no one else): whoever could write
    ``authorized/`` could let their own producer in.

    Raises:
        InputError: a missing or unreadable key file, or a folder or key file that is a
            link, another user's or open to others (the message says what to fix).
    """
    folder = Path(folder)
    _check_ours(folder, folder=True, fix=f"`chmod 700 {folder}` and check what is in it")
    secrets = {}
    for name in ("server", "client"):
        path = folder / f"{name}.key_secret"
        info = _check_ours(path, folder=False, fix=f"`chmod 600 {path}`")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise InputError(
                f"{path} is open to others (mode {stat.S_IMODE(info.st_mode):o}); "
                f"`chmod 600 {path}` and start again"
            )
        try:
            secrets[name] = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a key file ({exc})") from exc
    authorized = set()
    if os.path.lexists(folder / "authorized"):  # none there: no client is let in
        fix = f"`chmod 700 {folder / 'authorized'}` and check the keys in it"
        _check_ours(folder / "authorized", folder=True, fix=fix)
    for key_file in sorted((folder / "authorized").glob("*.key")):
        _check_ours(key_file, folder=False, fix=f"`chmod go-w {key_file}`")
        try:
            public, _ = zmq.auth.load_certificate(str(key_file))
        except (OSError, ValueError) as exc:
            raise InputError(f"{key_file}: not a public key file ({exc})") from exc
        authorized.add(public)
    return CurveKeys(
        folder,
        server_public=secrets["server"][0],
        server_secret=secrets["server"][1],
        client_public=secrets["client"][0],
        client_secret=secrets["client"][1],
        authorized=frozenset(authorized),
    )


def _check_ours(path: Path, *, folder: bool, fix: str) -> os.stat_result:
    """Refuse ``path`` unless it is a real folder (or file) of this user, writable by no other.

    ``fix`` says what to do when it is only writable by others.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise InputError(f"{path}: missing ({exc.strerror}); make keys with "
                         "`ser-stream keys DIR`") from exc  # fmt: skip
    kind = "folder" if folder else "file"
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{path} is a symbolic link; give the {kind} it points to, if it is yours")
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(info.st_mode):
        raise InputError(f"{path} is not a {kind}; remove it or pick another key folder")
    if info.st_uid != os.getuid():
        raise InputError(
            f"{path} belongs to another user (uid {info.st_uid}), who could let any key in; "
            "make a key folder of your own with `ser-stream keys DIR`"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); {fix} "
            "and start again"
        )
    return info


class _Keyring:
    """The authenticator's question: is this client key one of ours? Refusals are logged."""

    def __init__(self, authorized: frozenset[bytes], where: str) -> None:
        self.authorized = authorized
        self.log = get_logger(component="security", where=where)

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.authorized:
            return True
        self.log.warning("connection refused: unknown CURVE key", client_key=key.decode()[:12])
        return False


def secure(
    sock: zmq.Socket,
    endpoint: str,
    keys: CurveKeys | None,
    *,
    server: bool,
    authenticators: dict | None = None,
) -> None:
    """Make ``sock`` a CURVE server (it binds) or client (it connects) if ``endpoint`` is tcp://.

    ``authenticators`` caches the one authenticator per ZeroMQ context that servers need
    (it answers for every server socket of that context); pass the same dict for every
    socket of a process. Call before ``bind``/``connect``.
    """
    if keys is None or not endpoint.startswith("tcp://"):
        return
    if server:
        if authenticators is not None:
            context = sock.context
            key = id(context)
            if key not in authenticators:
                # A sync shadow: the authenticator's thread must not get asyncio sockets.
                shadow = zmq.Context.shadow(context.underlying)
                auth = ThreadAuthenticator(shadow)
                auth.start()
                auth.configure_curve_callback(
                    domain="*", credentials_provider=_Keyring(keys.authorized, endpoint)
                )
                authenticators[key] = auth
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public
        sock.curve_server = True
    else:
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public


def stop_authenticators(authenticators: dict) -> None:
    """Stop the authenticators :func:`secure` started (before the context ends)."""
    for auth in authenticators.values():
        auth.stop()
    authenticators.clear()
