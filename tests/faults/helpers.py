"""What the fault-injection tests share: a long spoken file, `up` on it, its records, its pids."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.testing import noise, voiced
from tests.fixtures import SYNTHETIC_SPEECH_VAD

SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))


def talk(path: Path, utterances: int, *, speech_s: float = 2.5) -> Path:
    """Utterances of synthetic speech between stretches of room noise (never digital silence)."""
    parts = [noise(0.5)]
    for i in range(utterances):
        parts += [voiced(speech_s, f0=120 + 10 * (i % 8), seed=i), noise(0.6, seed=100 + i)]
    soundfile.write(path, np.concatenate(parts), 16_000, subtype="PCM_16")
    return path


def start_up(
    source: str, jsonl: Path, *extra: str, default_publish: bool = False, **popen
) -> subprocess.Popen:
    """`ser-stream up` on ``source`` with a JSONL sink.

    It publishes on an endpoint of the test's own (a user's `up` may run beside the tests)
    unless ``default_publish``.
    """
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    publish = [] if default_publish else ["--publish", f"ipc://{jsonl.parent}/pub"]
    return subprocess.Popen(
        [SER_STREAM, "--log-level", "info", "up", *SYNTHETIC_SPEECH_VAD, "--source", source,
         "--no-stop-on-silence", "--first-window", "0", "--sink", f"jsonl:{jsonl}",
         *publish, *extra],
        text=True, **popen,
    )  # fmt: skip


def records(jsonl: Path) -> list[dict]:
    """Every record the session wrote."""
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


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
    """The live processes of stage ``name`` under ``parent``."""
    return {
        pid
        for pid, cmdline in children(parent).items()
        if "stage" in cmdline and cmdline[cmdline.index("stage") + 1] == name
    }


def wait_for(condition, timeout_s: float, step_s: float = 0.05):
    """Poll ``condition`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError(f"not within {timeout_s} s")


def finish(up: subprocess.Popen, timeout_s: float = 120.0) -> str:
    """Wait for `up` to end (killing it if it does not); return its stderr."""
    try:
        _, stderr = up.communicate(timeout=timeout_s)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    return stderr or ""


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
