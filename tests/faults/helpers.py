"""What the fault-injection tests share beyond :mod:`ser_stream.testing`.

`up` as they run it, the ledger's checks, a stranger, a folder open to everyone.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import zmq

from ser_stream import testing
from tests.fixtures import SYNTHETIC_SPEECH_VAD


def start_up(
    source: str,
    jsonl: Path,
    *extra: str,
    default_publish: bool = False,
    log_level: str | None = "info",
    **popen,
) -> subprocess.Popen:
    """`ser-stream up` on ``source`` with a JSONL sink, one window per utterance.

    It publishes on an endpoint of the test's own (a user's `up` may run beside the tests)
    unless ``default_publish``; ``log_level`` None keeps ser-stream's own.
    """
    return testing.start_up(
        *SYNTHETIC_SPEECH_VAD, "--source", source, "--no-stop-on-silence", "--first-window", "0",
        *extra, jsonl=jsonl, log_level=log_level, private_publish=not default_publish, **popen,
    )  # fmt: skip


def assert_ledger_holds(summary: dict, predictions: list[dict]) -> None:
    """Emitted = predicted + dropped, balanced, and no result published twice."""
    assert summary["ledger"] == "balanced", summary
    assert summary["windows"] == summary["predicted"] + summary["dropped"], summary
    assert sum(summary["dropped_reasons"].values()) == summary["dropped"], summary
    spans = [(p["stream"], p["t_start"], p["t_end"]) for p in predictions]
    assert len(spans) == len(set(spans)), "a result was published twice"
    seqs = [(p["stream"], p["seq"]) for p in predictions]
    assert len(seqs) == len(set(seqs)), "a sequence number was used twice"
    assert summary["predicted"] == len(predictions)


def as_stranger(attack) -> dict:
    """Run ``attack()`` in a forked child as the ``nobody`` user (needs root); return its dict.

    The child reports anything it raises as ``{"failed": repr(exc)}`` and never returns into
    pytest.
    """
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the stranger
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result = attack()
        except BaseException as exc:  # report anything, never return into pytest
            result = {"failed": repr(exc)}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(text)


@pytest.fixture
def shared_tmp(monkeypatch):
    """A temporary folder open to everyone (mode 1777, as /tmp), with no $XDG_RUNTIME_DIR.

    Use it in a test module as ``shared_tmp = helpers.shared_tmp``.
    """
    folder = Path(tempfile.mkdtemp(prefix="shared-", dir="/tmp"))
    folder.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


STRANGERS = ("missing", "plain", "wrong")
"""Clients without the session's keys: no security, PLAIN credentials, a CURVE key of their own."""


def stranger_socket(context: zmq.Context, kind: int, stranger: str, endpoint: str) -> zmq.Socket:
    """A socket of ``kind`` connected to ``endpoint`` as one of the :data:`STRANGERS`."""
    sock = context.socket(kind)
    if stranger == "plain":
        sock.plain_username, sock.plain_password = b"u", b"p"
    elif stranger == "wrong":
        public, secret = zmq.curve_keypair()
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = zmq.curve_keypair()[0]
    sock.connect(endpoint)
    return sock
