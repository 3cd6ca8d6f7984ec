"""`ser-stream up` as a user runs it: start it, wait for what it says and writes, end it.

Every wait gives up after a timeout so that a hung test fails; no timeout bounds a speed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))
"""The ``ser-stream`` command of the running interpreter's environment."""

T = TypeVar("T")
READY = "ser-stream: ready"
"""What ``ser-stream up`` and ``serve`` say on stderr once every stage runs."""


def _up_command(
    args: Iterable[str], jsonl: Path | None, log_level: str | None, private: bool
) -> list[str]:
    args = list(args)
    if private and "--publish" not in args:  # a user's own `ser-stream up` may run beside
        args += ["--publish", f"ipc://{tempfile.mkdtemp(prefix='ser-stream-test-')}/pub"]
    if jsonl is not None:
        args += ["--sink", f"jsonl:{jsonl}"]
    level = [] if log_level is None else ["--log-level", log_level]
    return [SER_STREAM, *level, "up", *args]


def start_up(
    *args: str,
    jsonl: Path | None = None,
    log_level: str | None = None,
    private_publish: bool = True,
    **popen,
) -> subprocess.Popen:
    """Start ``ser-stream up ARGS`` (with a JSONL sink at ``jsonl``, when given).

    It publishes on an endpoint of its own unless ``args`` name ``--publish`` or
    ``private_publish`` is false (the default endpoint). At ``log_level`` ``info`` it logs what
    the supervisor does (a stage restarted, back in service) for :func:`wait_for_log`.
    ``popen`` goes to :class:`subprocess.Popen`; by default stdout is discarded and stderr is a
    text pipe (read it with :func:`wait_ready` and :func:`finish`).
    """
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("text", True)
    return subprocess.Popen(_up_command(args, jsonl, log_level, private_publish), **popen)


def run_up(
    *args: str,
    jsonl: Path | None = None,
    log_level: str | None = None,
    private_publish: bool = True,
    timeout_s: float = 300,
    **run,
) -> subprocess.CompletedProcess:
    """Run ``ser-stream up ARGS`` to its end, as :func:`start_up` starts it; output captured."""
    run.setdefault("capture_output", True)
    run.setdefault("text", True)
    command = _up_command(args, jsonl, log_level, private_publish)
    return subprocess.run(command, timeout=timeout_s, **run)


def wait_for_line(process: subprocess.Popen, pattern: str, timeout_s: float = 120) -> list[str]:
    """Read ``process``'s stderr up to a line ``pattern`` (a regex) is found in.

    Returns every line read, that one last. Fails (AssertionError) when the process ends
    first, with what it said. A process that goes quiet without ending holds the read: the
    test's own timeout ends that.
    """
    return _read_until(process, re.compile(pattern).search, pattern, timeout_s)


def wait_for_log(
    process: subprocess.Popen, event: str, timeout_s: float = 120, **fields: object
) -> list[str]:
    """Read ``process``'s stderr up to the structured log record of ``event`` with ``fields``.

    As :func:`wait_for_line`; a process whose stderr is no terminal logs JSON lines.
    """

    def matches(line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return False
        wanted = {"event": event, **fields}
        return isinstance(record, dict) and all(record.get(k) == v for k, v in wanted.items())

    return _read_until(process, matches, f"{event} {fields}", timeout_s)


def _read_until(
    process: subprocess.Popen, matches: Callable[[str], object], what: str, timeout_s: float
) -> list[str]:
    assert process.stderr is not None, "start it with stderr=subprocess.PIPE"
    lines: list[str] = []

    def read() -> bool:
        line = process.stderr.readline()
        lines.append(line)
        assert line, f"ser-stream ended before saying {what}:\n" + "".join(lines)
        return bool(matches(line))

    wait_for(read, timeout_s, step_s=0)
    return lines


def wait_ready(process: subprocess.Popen, log: Path | None = None, timeout_s: float = 120) -> str:
    """Wait for ``process``'s ``ready`` line (every stage runs); return what it said so far.

    It reads the process's stderr pipe, or ``log`` where its stderr goes to that file. Fails
    (AssertionError) when the process ends first, with what it said.
    """
    if log is None:
        return "".join(wait_for_line(process, READY, timeout_s))

    def said() -> str:
        text = log.read_text()
        assert READY in text or process.poll() is None, f"ser-stream ended:\n{text}"
        return text if READY in text else ""

    return wait_for(said, timeout_s, step_s=0.1)


def finish(process: subprocess.Popen, timeout_s: float = 240) -> str:
    """Wait for ``process`` to end (killing it if it does not); return its stderr."""
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stderr or ""


def records(jsonl: Path, kind: str | None = None) -> list[dict]:
    """The records written to ``jsonl`` so far (of ``kind``, when given).

    A line still being written is left for the next read.
    """
    if not jsonl.exists():
        return []
    text = jsonl.read_text()
    rows = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def wait_for_records(
    jsonl: Path,
    count: int = 1,
    *,
    kind: str | None = None,
    where: Callable[[dict], bool] = lambda record: True,
    timeout_s: float = 120,
) -> list[dict]:
    """Wait until ``jsonl`` holds ``count`` records of ``kind`` that satisfy ``where``.

    Returns those records (every one that matches, ``count`` or more).
    """

    def found() -> list[dict]:
        matching = [r for r in records(jsonl, kind) if where(r)]
        return matching if len(matching) >= count else []

    return wait_for(found, timeout_s)


def wait_for(condition: Callable[[], T], timeout_s: float, step_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something true and return that.

    ``timeout_s`` only gives up on a hung wait (TimeoutError); it asserts no speed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError(f"the awaited condition did not hold within {timeout_s} s")
