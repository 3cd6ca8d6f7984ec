"""`ser-stream tap` prints a session's records and ends with the session, saying so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ser_stream.audio import bundled_sample

SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tap_ends_with_the_session_and_says_so(tmp_path):
    endpoint = f"ipc://{tmp_path}/publish"
    # tap first: it waits for `up` to bind the endpoint.
    tap = subprocess.Popen(
        [SER_STREAM, "--log-level", "info", "tap", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        up = subprocess.run(
            [SER_STREAM, "up", "--fast", "--source", f"file:{bundled_sample()}",
             "--sink", f"jsonl:{tmp_path / 'session.jsonl'}", "--publish", endpoint],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        # Not stopped by anyone: it returns because the session ended.
        out, err = tap.communicate(timeout=60)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.wait()
    assert tap.returncode == 0, err
    assert "ser-stream: the session ended; tap stops" in err, err
    tapped = [json.loads(line) for line in out.splitlines()]
    assert any(r["kind"] == "prediction" for r in tapped), tapped
    assert tapped[-1] == {"kind": "end_of_stream", "stream": "stream-1", "reason": "eof"}
    assert {r["kind"] for r in tapped} <= {"prediction", "event", "error", "end_of_stream"}
