"""Capture stage: the pipeline's sources, cutting any input into 30 ms frames of 16 kHz int16.

Sources are plain iterators of :class:`~ser_stream.messages.Audio` frames, so the same code
feeds a stage process, a test, or a batch job. ``mic[:DEVICE]`` records a microphone
(:mod:`ser_stream.stages.mic`); ``file:PATH`` reads any format and rate; ``stdin`` reads raw
16-bit PCM of a given rate; ``zmq:ENDPOINT`` takes audio from another program. The source
runtime paces file and stdin frames at real time unless asked to go as fast as backpressure
allows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from ser_stream.audio import SAMPLE_RATE, stream_audio
from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream, ErrorMsg, Heartbeat
from ser_stream.stage import MAX_OPEN_STREAMS

if TYPE_CHECKING:
    from ser_stream.security import CurveKeys

__all__ = [
    "FRAME_MS",
    "CaptureConfig",
    "file_frames",
    "frames_of",
    "parse_source",
    "pcm_frames",
    "zmq_frames",
]

FRAME_MS = 30
"""Length of one captured frame."""

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


def check_source(source: CaptureConfig) -> None:
    """Fail fast, before any process starts, on a source that cannot deliver.

    Raises:
        InputError: a missing, unreadable, empty or non-audio file, a rate that is not
            positive, or a microphone that cannot be opened; the message says what to do.
    """
    import os

    if source.kind == "file":
        if not os.path.isfile(source.target):
            raise InputError(f"{source.target}: no such file; check --source file:PATH")
        if not os.access(source.target, os.R_OK):
            raise InputError(f"{source.target}: not readable; check its permissions")
        stream_audio(source.target)  # an empty, corrupt or non-audio file fails here
    elif source.kind == "stdin" and source.rate <= 0:
        raise InputError(f"--rate {source.rate} is not a sample rate; give the PCM rate in Hz")
    elif source.kind == "mic":
        from ser_stream.stages.mic import open_check

        open_check(source.target)


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


PRODUCER_SILENT_S = 10.0
"""A producer's stream that sends nothing this long is ended (its producer is gone): a live
producer sends audio all the time, silence included."""


def _log_refusals(monitor, log) -> None:
    """Log each connection the CURVE server refused (never waits)."""
    from zmq.utils.monitor import recv_monitor_message

    while monitor.poll(0):
        event = recv_monitor_message(monitor)
        log.warning("connection refused: handshake failed", zmq_event=int(event["event"]),
                    endpoint=event["endpoint"].decode(errors="replace"))  # fmt: skip


def zmq_frames(
    endpoint: str,
    *,
    idle_timeout_s: float | None = None,
    silent_s: float = PRODUCER_SILENT_S,
    max_streams: int = MAX_OPEN_STREAMS,
    keys: CurveKeys | None = None,
) -> Iterator[Heartbeat | tuple]:
    """Streams from external producers that PUSH ``audio`` messages to ``endpoint``.

    The capture binds a PULL socket there; any number of producers connect, each naming its
    stream in the messages' ``stream`` field, and each stream keeps that id through the
    pipeline. Audio of any rate is resampled to 16 kHz as it flows; a producer's
    ``end_of_stream`` ends its stream (only), and so does ``silent_s`` without a message
    from it (reason ``error``, with an error record saying so). A malformed message is logged
    and skipped, and an :class:`ErrorMsg` saying why goes downstream under stream ``-`` for
    the accounting. The ``ts`` a producer puts on its audio travel on with it (the capture
    adds its own). At most ``max_streams`` streams are open at once: a message of one more
    is refused with an error record under ``-``. With ``keys``, a tcp:// endpoint takes
    only producers that hold an authorized CURVE key (see :mod:`ser_stream.security`). While
    no producer sends, a
    :class:`Heartbeat` comes every half second, so the caller can notice a stop request.
    """
    import soxr
    import zmq

    from ser_stream.errors import WireError
    from ser_stream.logs import get_logger
    from ser_stream.security import secure, stop_authenticators
    from ser_stream.wire import MAX_FRAME_BYTES, decode

    log = get_logger(stage="capture", source=endpoint)
    context = zmq.Context()
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    authenticators: dict = {}
    secure(sock, endpoint, keys, server=True, authenticators=authenticators)
    refusals = None
    if keys is not None and endpoint.startswith("tcp://"):
        # A NULL or PLAIN client fails the handshake before any key is asked for: only the
        # socket's own events tell of it.
        refusals = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
    sock.bind(endpoint)
    resamplers: dict[tuple[str, int], soxr.ResampleStream] = {}
    positions: dict[str, int] = {}
    heard: dict[str, float] = {}  # when each open stream last sent something
    idle_since = time.monotonic()

    def close(stream: str, reason: str) -> Iterator[tuple[str, Audio | EndOfStream]]:
        """The end of one stream: the resamplers' last samples, then its end of stream."""
        heard.pop(stream, None)
        for key in [key for key in resamplers if key[0] == stream]:
            tail = resamplers.pop(key).resample_chunk(np.zeros(0, np.int16), last=True)
            if tail.size:
                yield stream, Audio(tail, SAMPLE_RATE, positions.get(stream, 0) / SAMPLE_RATE)
                positions[stream] = positions.get(stream, 0) + tail.size
        positions.pop(stream, None)
        yield stream, EndOfStream(reason)

    try:
        while True:
            for stream, at in list(heard.items()):
                if time.monotonic() - at > silent_s:
                    log.warning("producer went silent", stream=stream, seconds=silent_s)
                    message = f"the producer of stream {stream} sent nothing for {silent_s:.0f} s; "
                    yield stream, ErrorMsg(message + "its stream was ended", "capture")
                    yield from close(stream, "error")
            if refusals is not None:
                _log_refusals(refusals, log)
            if not sock.poll(500):
                if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    return
                yield Heartbeat("capture")
                continue
            idle_since = time.monotonic()
            try:
                envelope = decode(sock.recv_multipart())
            except WireError as exc:
                log.warning("malformed message skipped", reason=str(exc))
                yield (
                    "-",
                    ErrorMsg(f"producer message skipped: {exc}; follow docs/wire.md", "capture"),
                )
                continue
            stream, body = envelope.stream, envelope.body
            if stream == "-":
                yield (
                    "-",
                    ErrorMsg("stream id '-' is reserved; name your stream otherwise", "capture"),
                )
                continue
            if isinstance(body, EndOfStream):
                yield from close(stream, body.reason)
                continue
            if stream not in heard and len(heard) >= max_streams:
                reason = (f"producer stream {stream} refused: {max_streams} streams are open; "
                          "end one first")  # fmt: skip
                log.warning("message skipped", reason=reason)
                yield "-", ErrorMsg(reason, "capture")
                continue
            heard[stream] = time.monotonic()
            if not isinstance(body, Audio):
                reason = f"producer sent {envelope.kind.value}, not audio; send audio messages"
                log.warning("message skipped", reason=reason, stream=stream)
                yield stream, ErrorMsg(reason, "capture")
                continue
            samples = np.asarray(body.samples)
            if samples.dtype != np.int16:
                samples = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
            if body.sample_rate != SAMPLE_RATE:
                key = (stream, body.sample_rate)
                if key not in resamplers:
                    resamplers[key] = soxr.ResampleStream(body.sample_rate, SAMPLE_RATE, 1, "int16")
                samples = resamplers[key].resample_chunk(samples)
            if samples.size:
                position = positions.get(stream, 0)
                audio = Audio(samples, SAMPLE_RATE, position / SAMPLE_RATE)
                # the producer's own timestamps travel on (a producer's clock: "produced")
                # a producer's own timestamps ride along only when it sent some
                yield (stream, audio, envelope.timestamps) if envelope.timestamps else (
                    stream, audio)  # fmt: skip
                positions[stream] = position + samples.size
    finally:
        if refusals is not None:
            sock.disable_monitor()
            refusals.close(linger=0)
        sock.close(linger=0)
        stop_authenticators(authenticators)
        context.term()
