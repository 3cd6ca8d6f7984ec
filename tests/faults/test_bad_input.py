"""Bad input, as a new user or another program gives it: one line that says what to do."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile
import zmq

from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream
from ser_stream.testing import SER_STREAM, finish, noise, records, voiced
from ser_stream.wire import Envelope, encode
from tests.faults.helpers import start_up
from tests.fixtures import SYNTHETIC_SPEECH_VAD


def up(tmp_path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [SER_STREAM, "up", *SYNTHETIC_SPEECH_VAD, "--publish", f"ipc://{tmp_path}/pub", *args],
        input=stdin, capture_output=True, timeout=60,
    )  # fmt: skip


def bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("hello, not audio\n" * 50)
    header_only = tmp_path / "header.wav"
    soundfile.write(header_only, np.zeros(0, np.float32), 16_000)
    flac = tmp_path / "whole.flac"
    soundfile.write(flac, np.concatenate([noise(1.0), voiced(8.0), noise(1.0)]), 16_000)
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(flac.read_bytes()[: flac.stat().st_size // 3])
    with_nan = tmp_path / "nan.wav"
    audio = np.concatenate([noise(1.0), voiced(1.0)]).astype(np.float32)
    audio[20_000] = np.inf
    soundfile.write(with_nan, audio, 16_000, subtype="FLOAT")
    return {
        "truncated": (f"file:{truncated}", "the file is truncated or corrupt: re-export"),
        "NaN mid-file": (f"file:{with_nan}", "NaN or infinite samples; fix or re-export"),
        "not an endpoint": ("zmq:foo", "give zmq:ipc://PATH or zmq:tcp://HOST:PORT"),
        "missing": (f"file:{tmp_path}/missing.wav", "no such file; check --source file:PATH"),
        "0-byte": (f"file:{empty}", "pass a valid wav, flac, ogg or mp3 file"),
        "not audio": (f"file:{text}", "pass a valid wav, flac, ogg or mp3 file"),
        "no samples": (f"file:{header_only}", "audio is empty; pass at least one sample"),
        "unknown scheme": ("ftp://host/a.wav", "see ser-stream up --help"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "0-byte", "not audio", "no samples", "unknown scheme", "truncated",
     "NaN mid-file", "not an endpoint"],
)  # fmt: skip
def test_a_source_that_cannot_deliver_is_one_line_before_anything_starts(tmp_path, case):
    source, advice = bad_files(tmp_path)[case]
    done = up(tmp_path, "--source", source)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ser-stream: ") and advice in lines[0], lines
    assert b"Traceback" not in done.stderr


def test_a_rate_of_zero_on_stdin_is_one_line(tmp_path):
    done = up(tmp_path, "--source", "stdin", "--rate", "0", stdin=b"\0\0" * 100)
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "ser-stream: --rate 0 is not a sample rate; give the PCM rate in Hz"
    ]


def test_a_file_that_fails_part_way_through_is_an_input_error_not_a_crash(tmp_path):
    """Past the pre-flight check's reach (its first hour), a decoder failure is one line."""
    from ser_stream.stages.capture import file_frames

    flac = tmp_path / "whole.flac"
    soundfile.write(flac, np.concatenate([noise(1.0), voiced(8.0), noise(1.0)]), 16_000)
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        for _ in file_frames(str(truncated)):
            pass
    # an InputError makes the capture send its reason and exit 2, which is not restarted


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_garbage_from_a_producer_is_counted_and_the_next_message_goes_through(tmp_path):
    endpoint = f"ipc://{tmp_path}/audio-in"
    jsonl = tmp_path / "s.jsonl"
    session = start_up(f"zmq:{endpoint}", jsonl, "--streams", "1")
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.connect(endpoint)
        garbage = [[b"\xff\xfe not json"], [b'{"v": 1, "kind": "audio"}'], [b"[" * 100_000]]
        for frames in garbage:
            push.send_multipart(frames)
        pcm = (np.concatenate([noise(0.5), voiced(2.0), noise(1.0)]) * 32767).astype(np.int16)
        for k, start in enumerate(range(0, pcm.size, 480)):
            audio = Audio(pcm[start : start + 480], 16_000, start / 16_000)
            push.send_multipart(encode(Envelope("caller", k, audio)))
        push.send_multipart(encode(Envelope("caller", k + 1, EndOfStream("eof"))))
        stderr = finish(session, 90)
    finally:
        context.destroy(linger=0)
    assert session.returncode == 0, stderr
    found = records(jsonl)
    summary = found[-1]["summary"]
    assert summary["errors"] == len(garbage)
    assert summary["predicted"] >= 1 and summary["ledger"] == "balanced"
    skipped = [r for r in found if r["kind"] == "error"]
    assert len(skipped) == len(garbage)
    assert all("follow docs/wire.md" in r["reason"] for r in skipped)


def test_a_tcp_publish_endpoint_without_keys_is_refused_unless_asked_for(tmp_path):
    """Case 4: every record in the clear to anyone on the machine, unless the user says so."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = f"file:{tmp_path / 'talk.wav'}"
    soundfile.write(tmp_path / "talk.wav", np.concatenate([noise(0.5), voiced(1.0)]), 16_000)
    refused = subprocess.run(
        [SER_STREAM, "up", "--source", source, "--publish", f"tcp://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "in the clear" in line and "--curve KEYDIR" in line and "--publish-plaintext" in line
    allowed = subprocess.run(
        [SER_STREAM, "up", *SYNTHETIC_SPEECH_VAD, "--source", source, "--fast", "--publish",
         f"tcp://127.0.0.1:{port}", "--publish-plaintext", "--sink", f"jsonl:{tmp_path}/o.jsonl"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert "publishes every record in the clear" in allowed.stderr


def test_a_zmq_source_on_a_port_another_program_holds_is_one_line_before_anything_starts(
    tmp_path,
):
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = up(tmp_path, "--source", f"zmq:tcp://127.0.0.1:{port}")
    assert done.returncode == 2
    (line,) = done.stderr.decode().strip().splitlines()
    assert "cannot bind (Address already in use); another program may hold the port" in line
    assert line.startswith("ser-stream: zmq:tcp:")
