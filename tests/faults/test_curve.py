"""CURVE on tcp:// endpoints: the right key gets in; wrong, missing, PLAIN or NULL do not."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import zmq

from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream
from ser_stream.security import create_keys, load_keys
from ser_stream.testing import (
    children,
    finish,
    noise,
    records,
    stage_pids,
    talk,
    voiced,
    wait_for,
    wait_for_line,
    wait_ready,
)
from ser_stream.wire import Envelope, encode
from tests.faults.helpers import STRANGERS, start_up, stranger_socket

REFUSALS = ("unknown CURVE key", "handshake failed")
"""What the capture says of the wrong key (its authenticator) and of NULL and PLAIN (its
socket)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def speech_frames(stream: str) -> list[list[bytes]]:
    pcm = (np.concatenate([noise(0.5), voiced(2.0), noise(1.0)]) * 32767).astype(np.int16)
    frames = [
        encode(Envelope(stream, k, Audio(pcm[at : at + 480], 16_000, at / 16_000)))
        for k, at in enumerate(range(0, pcm.size, 480))
    ]
    return [*frames, encode(Envelope(stream, len(frames), EndOfStream("eof")))]


def producer(context: zmq.Context, endpoint: str, kind: str, keys) -> zmq.Socket:
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    if kind == "right":
        push.curve_secretkey, push.curve_publickey = keys.client_secret, keys.client_public
        push.curve_serverkey = keys.server_public
    elif kind == "wrong":
        public, secret = zmq.curve_keypair()
        push.curve_secretkey, push.curve_publickey = secret, public
        push.curve_serverkey = keys.server_public
    elif kind == "plain":
        push.plain_username, push.plain_password = b"user", b"password"
    push.connect(endpoint)
    return push


def test_secret_keys_open_to_others_are_refused(tmp_path):
    folder = create_keys(tmp_path / "keys")
    (folder / "client.key_secret").chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_keys(folder)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_only_a_producer_with_the_right_key_reaches_the_vad(tmp_path):
    keys = load_keys(create_keys(tmp_path / "keys"))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    jsonl = tmp_path / "s.jsonl"
    up = start_up(f"zmq:{endpoint}", jsonl, "--curve", str(keys.folder), "--streams", "1")
    context = zmq.Context()
    try:
        said = wait_ready(up)
        strangers = {kind: producer(context, endpoint, kind, keys)
                     for kind in ("wrong", "missing", "plain")}  # fmt: skip
        for kind, push in strangers.items():
            for frames in speech_frames(f"stranger-{kind}"):
                try:
                    push.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:  # no connection completed: nothing can leave
                    break
        while not all(refusal in said for refusal in REFUSALS):  # every one refused
            said += "".join(wait_for_line(up, "|".join(REFUSALS)))
        friend = producer(context, endpoint, "right", keys)
        for frames in speech_frames("friend"):
            friend.send_multipart(frames)
        stderr = said + finish(up, 90)
    finally:
        context.destroy(linger=0)
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    session = records(jsonl)
    streams = {r.get("stream") for r in session} - {None}
    assert streams == {"friend"}, streams
    assert session[-1]["summary"]["predicted"] >= 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tcp_stages_take_no_stranger(tmp_path):
    """`up --tcp`: a client without the session's keys takes no frame from the capture."""
    source, jsonl = talk(tmp_path / "talk.wav", 5), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl, "--tcp")
    context = zmq.Context()
    try:
        (capture,) = wait_for(lambda: stage_pids(up.pid, "capture"), 60)
        argv = children(up.pid)[capture]
        endpoint = argv[argv.index("--out") + 1]
        thieves = [stranger_socket(context, zmq.PULL, kind, endpoint) for kind in STRANGERS]
        stolen = 0
        while up.poll() is None:  # they try for the whole session
            for thief in thieves:
                if thief.poll(50):
                    thief.recv_multipart()
                    stolen += 1
        stderr = finish(up, 90)
    finally:
        context.destroy(linger=0)
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr
    assert stolen == 0
    summary = records(jsonl)[-1]["summary"]
    assert summary["ledger"] == "balanced" and summary["windows"] == 5 == summary["predicted"]
