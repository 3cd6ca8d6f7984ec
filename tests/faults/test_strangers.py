"""Another local user, hostile: cannot subscribe, inject, steal audio, or take the endpoint.

These run the stranger as a forked child that drops to the ``nobody`` user, so they need
root (they skip otherwise); the pipeline runs as this user, as ``ser-stream up`` would.
"""

from __future__ import annotations

import json
import os

import pytest
import zmq

from ser_stream.testing import children, finish, records, talk, wait_for_records
from tests.faults import helpers
from tests.faults.helpers import as_stranger, start_up

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


shared_tmp = helpers.shared_tmp  # the fixture, under its name in this module


def endpoint_of(up_pid: int, stage: str, flag: str) -> str:
    for cmdline in children(up_pid).values():
        if "stage" in cmdline and cmdline[cmdline.index("stage") + 1] == stage:
            return cmdline[cmdline.index(flag) + 1]
    raise LookupError(stage)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stranger_cannot_listen_inject_steal_or_lock(shared_tmp, tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 4), tmp_path / "s.jsonl"
    # The default publish endpoint, as a user gets it: no --publish.
    up = start_up(f"file:{source}", jsonl, default_publish=True)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=90)
        runtime = shared_tmp / f"ser-stream-{os.getuid()}"
        publish = f"ipc://{runtime}/pub"
        capture_out = endpoint_of(up.pid, "capture", "--out")
        results = endpoint_of(up.pid, "model", "--out")

        def attack() -> dict:
            context = zmq.Context()
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(publish)
            thief = context.socket(zmq.PULL)
            thief.connect(capture_out)
            fake = context.socket(zmq.PUSH)
            fake.setsockopt(zmq.SNDTIMEO, 500)
            fake.connect(results)
            header = {"v": 1, "kind": "error", "stream": "stream-1", "seq": 0, "ts": {},
                      "reason": "INJECTED", "stage": "model"}  # fmt: skip
            injected = 0
            try:
                fake.send_multipart([json.dumps(header).encode()])
                injected = 1
            except zmq.Again:
                pass
            heard = sum(1 for _ in range(30) if sub.poll(100) and sub.recv_multipart())
            stolen = sum(1 for _ in range(10) if thief.poll(100) and thief.recv_multipart())
            try:
                os.open(runtime / "pub.lock", os.O_RDWR)
                lock = "opened"
            except OSError as exc:
                lock = exc.strerror
            try:
                listing = os.listdir(runtime)
            except OSError as exc:
                listing = exc.strerror
            context.destroy(linger=0)
            return {"heard": heard, "stolen": stolen, "injected_sent": injected,
                    "lock": lock, "listing": listing}  # fmt: skip

        found = as_stranger(attack)
        stderr = finish(up)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    assert found["heard"] == 0 and found["stolen"] == 0, found
    assert found["lock"] == "Permission denied" and found["listing"] == "Permission denied"
    session = records(jsonl)
    assert not [r for r in session if "INJECTED" in json.dumps(r)]
    assert session[-1]["summary"]["ledger"] == "balanced"
