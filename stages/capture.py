"""Capture stage: the pipeline's sources, cutting any input into 30 ms frames of 16 kHz int16.

Sources are plain iterators of :class:`~ser_stream.messages.Audio` frames, so the same code
feeds a stage process, a test, or a batch job. ``mic[:DEVICE]`` records a microphone
(:mod:`ser_stream.stages.mic`); ``file:PATH`` reads any format and rate; ``stdin`` reads raw
16-bit PCM of a given rate; ``zmq:ENDPOINT`` takes audio from other programs (a socket on
the capture's loop, so it lives beside the runtime: :mod:`ser_stream.producer_source`, its
rules in :mod:`ser_stream.producers`). The source runtime paces file and stdin frames at real
time unless asked to go as fast as backpressure allows.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ser_stream.audio import SAMPLE_RATE, check_audio_file, stream_audio
from ser_stream.errors import InputError
from ser_stream.messages import Audio
from ser_stream.settings import FRAME_MS

__all__ = [
    "CaptureConfig",
    "check_endpoint",
    "file_frames",
    "frames_of",
    "parse_source",
    "pcm_frames",
]

FAST_FRAME_MS = 960
"""Length of a frame when a file goes as fast as it can: fewer, larger messages (nothing waits
for them at the speed of the audio), the same samples."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """Where audio comes from.

    Attributes:
        kind: ``mic``, ``file``, ``stdin`` or ``zmq``.
        target: the device (``mic``: index or name, empty for the default input), the file
            path (``file``) or endpoint (``zmq``); empty for ``stdin``.
        rate: sample rate of raw PCM on stdin, in Hz.
        realtime: pace frames at the speed of the audio (a live feel, and the latency a
            microphone would give); otherwise as fast as backpressure allows.
    """

    kind: str
    target: str = ""
    rate: int = SAMPLE_RATE
    realtime: bool = True


SOURCE_FORMS = "mic, mic:DEVICE, file:PATH, stdin or zmq:ENDPOINT"


def parse_source(text: str, *, rate: int = SAMPLE_RATE, realtime: bool = True) -> CaptureConfig:
    """Parse ``mic``, ``mic:DEVICE``, ``file:PATH``, ``stdin`` or ``zmq:ENDPOINT``.

    Raises:
        InputError: anything else, with the accepted forms.
    """
    kind, _, target = text.partition(":")
    if kind == "mic":
        return CaptureConfig("mic", target, rate, realtime)
    if kind == "file" and target:
        return CaptureConfig("file", target, rate, realtime)
    if kind == "stdin" and not target:
        return CaptureConfig("stdin", "", rate, realtime)
    if kind == "zmq" and target:
        return CaptureConfig("zmq", target, rate, realtime)
    raise InputError(f"source {text!r} is not {SOURCE_FORMS}; see ser-stream up --help")


def check_source(source: CaptureConfig, *, decode_all: bool = True) -> None:
    """Fail fast, before any process starts, on a source that cannot deliver.

    ``decode_all``: decode a file to its end (its first hour), so that a truncated file or
    NaN samples part-way are known now; without it only its header is read (the capture
    process itself, which meets the rest as it reads).

    Raises:
        InputError: a missing, unreadable, empty, corrupt or non-audio file, an endpoint
            that cannot be bound, a rate that is not positive, or a microphone that cannot
            be opened; the message says what to do.
    """
    import os

    if source.kind == "file":
        if not os.path.isfile(source.target):
            raise InputError(f"{source.target}: no such file; check --source file:PATH")
        if not os.access(source.target, os.R_OK):
            raise InputError(f"{source.target}: not readable; check its permissions")
        if decode_all:
            check_audio_file(source.target)  # empty, corrupt, truncated, NaN: fails here
        else:
            stream_audio(source.target)  # empty, corrupt header, not audio: fails here
    elif source.kind == "zmq":
        check_endpoint(source.target)
    elif source.kind == "stdin" and source.rate <= 0:
        raise InputError(f"--rate {source.rate} is not a sample rate; give the PCM rate in Hz")
    elif source.kind == "mic":
        from ser_stream.stages.mic import open_check

        open_check(source.target)


_TCP_ENDPOINT = re.compile(r"tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
IPC_PATH_MAX = 107
"""The longest ipc:// path the system takes (a Unix socket address)."""


def check_endpoint(endpoint: str) -> None:
    """An endpoint a producer source can bind: ``ipc://PATH`` or ``tcp://HOST:PORT``.

    Raises:
        InputError: anything else, with the forms that work.
    """
    import os
    import socket

    usage = "give zmq:ipc://PATH or zmq:tcp://HOST:PORT"
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path:
            raise InputError(f"zmq:{endpoint}: no path; {usage}")
        if len(path.encode()) > IPC_PATH_MAX:
            raise InputError(f"zmq:{endpoint}: the path is longer than {IPC_PATH_MAX} bytes; "
                             "use a shorter one")  # fmt: skip
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"zmq:{endpoint}: {folder} is not a folder this user can write "
                             "in; pick another path")  # fmt: skip
        return
    match = _TCP_ENDPOINT.fullmatch(endpoint)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise InputError(f"zmq:{endpoint} is not an endpoint; {usage}")
    host = match.group(1).strip("[]")
    try:  # a trial bind: a port another program holds is said now, before anything starts
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.bind(("" if host == "*" else host, int(match.group(2))))
    except OSError as exc:
        reason = f"zmq:{endpoint}: cannot bind ({exc.strerror}); another program may hold"
        raise InputError(f"{reason} the port, or the address is not this machine's") from exc


def frames_of(samples: np.ndarray, *, frame_ms: int = FRAME_MS) -> Iterator[Audio]:
    """Cut canonical float audio into int16 frames (the last one may be shorter)."""
    size = SAMPLE_RATE * frame_ms // 1000
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    for start in range(0, pcm.size, size):
        yield Audio(pcm[start : start + size], SAMPLE_RATE, start / SAMPLE_RATE)


def file_frames(path: str, *, frame_ms: int = FRAME_MS, start_s: float = 0.0) -> Iterator[Audio]:
    """Frames of an audio file of any format, rate and channel count, from ``start_s``.

    The file is read block by block (a long recording is never held whole); frame times
    count from the start of the file, also when reading starts later (a capture that was
    restarted resumes where its predecessor stopped).

    Raises:
        InputError: the file cannot be opened (raised before the first frame), or holds
            invalid samples (raised when reached).
    """
    blocks = stream_audio(path, start_s=start_s)
    return _frames_of_blocks(blocks, frame_ms, round(start_s * SAMPLE_RATE))


def _frames_of_blocks(blocks: Iterator[np.ndarray], frame_ms: int, start: int) -> Iterator[Audio]:
    size = SAMPLE_RATE * frame_ms // 1000
    pending = np.zeros(0, dtype=np.float32)
    position = start
    for block in blocks:
        pending = np.concatenate([pending, block]) if pending.size else block
        whole = pending.size - pending.size % size
        for frame in frames_of(pending[:whole], frame_ms=frame_ms):
            yield Audio(frame.samples, SAMPLE_RATE, position / SAMPLE_RATE)
            position += frame.samples.size
        pending = pending[whole:]
    if pending.size:
        yield Audio(next(frames_of(pending, frame_ms=frame_ms)).samples, SAMPLE_RATE,
                    position / SAMPLE_RATE)  # fmt: skip


def pcm_frames(
    stream: BinaryIO | None = None,
    *,
    rate: int = SAMPLE_RATE,
    chunk_frames: int = 1,
    start_s: float = 0.0,
) -> Iterator[Audio]:
    """Frames of raw little-endian 16-bit mono PCM at ``rate`` (resampled to 16 kHz as it flows).

    An odd trailing byte is dropped. Frame times count from ``start_s`` (a restarted capture
    goes on reading the same pipe, later in the stream).
    """
    import soxr

    source = stream if stream is not None else sys.stdin.buffer
    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "int16")
    size = SAMPLE_RATE * FRAME_MS // 1000
    read_bytes = max(2, 2 * round(size * rate / SAMPLE_RATE) * chunk_frames)
    pending = np.zeros(0, dtype=np.int16)
    position = round(start_s * SAMPLE_RATE)
    while True:
        data = source.read(read_bytes)
        last = not data
        if data:
            usable = len(data) - len(data) % 2
            chunk = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        else:
            chunk = np.zeros(0, dtype=np.int16)
        if resampler is not None:
            chunk = resampler.resample_chunk(chunk, last=last)
        pending = np.concatenate([pending, chunk])
        while pending.size >= size or (last and pending.size):
            frame, pending = pending[:size], pending[size:]
            yield Audio(frame, SAMPLE_RATE, position / SAMPLE_RATE)
            position += frame.size
        if last:
            return
