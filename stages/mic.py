"""The capture stage's microphone source (python-sounddevice on PortAudio).

The audio callback only copies the block into a bounded buffer and never waits; the reader
(the capture stage) takes blocks out, resamples to 16 kHz if the device cannot record at
that rate, and cuts 30 ms frames. A live microphone cannot wait for a slow pipeline: when
the buffer is full the oldest block is dropped, counted, and a ``gap`` event says how much
audio was lost. Every failure is an :class:`InputError` with what to do.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.messages import Audio, Event, Heartbeat
from ser_stream.settings import FRAME_MS

__all__ = ["BlockBuffer", "InputDevice", "input_devices", "mic_frames", "open_check"]

_OR_FILE = "or use --source file:PATH"


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # sounddevice loads libportaudio when imported
        raise InputError(
            "PortAudio is not installed, so no microphone can be opened: install it "
            f"(sudo apt-get install libportaudio2) {_OR_FILE}"
        ) from exc
    return sounddevice


@dataclass(frozen=True, slots=True)
class InputDevice:
    """An audio input as ``ser-stream devices`` lists it."""

    index: int
    name: str
    host_api: str
    channels: int
    default_rate: int
    records_16k: bool
    default: bool


def input_devices() -> list[InputDevice]:
    """Every device that can record, with whether it records 16 kHz mono itself."""
    sd = _sounddevice()
    default = _default_input(sd)
    found = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_input_channels"] < 1:
            continue
        found.append(
            InputDevice(
                index=index,
                name=info["name"],
                host_api=sd.query_hostapis(info["hostapi"])["name"],
                channels=int(info["max_input_channels"]),
                default_rate=int(info["default_samplerate"]),
                records_16k=_records(sd, index, SAMPLE_RATE),
                default=index == default,
            )
        )
    return found


def _default_input(sd) -> int | None:
    index = sd.default.device[0]
    if index is None or index < 0:
        return None
    return int(index)


def _records(sd, index: int, rate: int) -> bool:
    try:
        sd.check_input_settings(device=index, channels=1, dtype="int16", samplerate=rate)
    except Exception:  # PortAudioError or ValueError: this rate is not possible here
        return False
    return True


def _resolve(sd, device: str) -> tuple[int, dict[str, Any]]:
    """The device index and info for ``device`` (empty: the default input)."""
    inputs = [i for i, info in enumerate(sd.query_devices()) if info["max_input_channels"] > 0]
    if not inputs:
        raise InputError(
            "no microphone: this machine has no audio input device; plug one in "
            f"(ser-stream devices lists them) {_OR_FILE}"
        )
    if not device:
        index = _default_input(sd)
        index = inputs[0] if index is None or index not in inputs else index
    elif device.isdigit():
        index = int(device)
        if index not in inputs:
            raise InputError(
                f"device {index} is not an audio input; ser-stream devices lists the inputs"
            )
    else:
        try:  # sounddevice matches a name, or space-separated parts of it
            index = int(sd.query_devices(device, kind="input")["index"])
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{first}; ser-stream devices lists the inputs") from exc
    return index, dict(sd.query_devices(index))


def _unavailable(name: str, exc: Exception) -> InputError:
    return InputError(
        f"cannot record from {name!r} ({str(exc).strip() or type(exc).__name__}): it may be "
        f"busy in another program or unplugged; free it, pick another with --source "
        f"mic:DEVICE (ser-stream devices lists them) {_OR_FILE}"
    )


def open_check(device: str = "") -> str:
    """Open the microphone for a moment: fail now, before a pipeline starts, if it can't record.

    Returns:
        The device's name.

    Raises:
        InputError: no PortAudio, no input device, no such device, or a device that
            cannot be opened (busy, gone).
    """
    sd = _sounddevice()
    index, info = _resolve(sd, device)
    rate = SAMPLE_RATE if _records(sd, index, SAMPLE_RATE) else int(info["default_samplerate"])
    try:
        with sd.InputStream(device=index, channels=1, samplerate=rate, dtype="int16"):
            pass
    except Exception as exc:  # PortAudio reports busy and gone devices as PortAudioError
        raise _unavailable(info["name"], exc) from exc
    return info["name"]


class BlockBuffer:
    """Blocks between the audio callback (one writer) and the capture (one reader).

    :meth:`put` never blocks: when ``capacity`` blocks wait already, the oldest is dropped
    and its samples counted in :attr:`dropped_samples`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InputError(f"buffer capacity {capacity} must be at least one block")
        self._blocks: deque[np.ndarray] = deque()
        self._capacity = capacity
        self._ready = threading.Event()
        self.dropped_samples = 0
        self.device_overflows = 0

    def put(self, block: np.ndarray, *, overflowed: bool = False) -> None:
        """From the callback: keep ``block`` (a copy the caller no longer touches)."""
        if overflowed:
            self.device_overflows += 1
        if len(self._blocks) >= self._capacity:
            try:
                self.dropped_samples += self._blocks.popleft().size
            except IndexError:  # the reader emptied it meanwhile
                pass
        self._blocks.append(block)
        self._ready.set()

    def get(self, timeout: float) -> np.ndarray | None:
        """The oldest block, waiting up to ``timeout`` seconds; ``None`` if none came."""
        if not self._blocks:
            self._ready.clear()
            if not self._blocks and not self._ready.wait(timeout):
                return None
        try:
            return self._blocks.popleft()
        except IndexError:  # the block we were woken for was dropped as the oldest
            return None


def mic_frames(
    device: str = "",
    *,
    buffer_s: float = 2.0,
    stall_s: float = 2.0,
    start_s: float = 0.0,
    start_clock: float | None = None,
) -> Iterator[Audio | Event | Heartbeat]:
    """Record ``device`` (index, name, or empty for the default input) as 30 ms frames.

    While no audio comes a :class:`Heartbeat` is yielded every half second, so the caller
    can notice a stop request. Lost audio gives an ``Event("gap", t, {"dropped_s": ...})``
    at the stream time where it is missing. Stream time counts from ``start_s``; with
    ``start_clock`` (the ``time.monotonic()`` reading, system-wide, at which the stream was
    at ``start_s``) the time since is added: a capture restarted mid-session goes on where
    the stream is now, and the VAD reports the audio missed meanwhile.

    Raises:
        InputError: the device cannot be opened, or stops delivering audio for ``stall_s``
            (unplugged).
    """
    import soxr

    from ser_stream.logs import get_logger

    sd = _sounddevice()
    index, info = _resolve(sd, device)
    name = info["name"]
    rate = SAMPLE_RATE if _records(sd, index, SAMPLE_RATE) else int(info["default_samplerate"])
    block = rate * FRAME_MS // 1000
    buffer = BlockBuffer(capacity=max(2, round(buffer_s * 1000 / FRAME_MS)))
    log = get_logger(stage="capture", device=name, rate=rate)

    def callback(indata, frames, time_info, status) -> None:
        buffer.put(indata[:, 0].copy(), overflowed=bool(status.input_overflow))

    try:
        stream = sd.InputStream(
            device=index,
            channels=1,
            samplerate=rate,
            dtype="int16",
            blocksize=block,
            callback=callback,
        )
        stream.start()
    except Exception as exc:
        raise _unavailable(name, exc) from exc
    log.info("recording")
    resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "int16")
    size = SAMPLE_RATE * FRAME_MS // 1000
    pending = np.zeros(0, dtype=np.int16)
    away_s = 0.0 if start_clock is None else max(0.0, time.monotonic() - start_clock)
    position = round((start_s + away_s) * SAMPLE_RATE)
    reported = (0, 0)
    last_audio = time.monotonic()
    try:
        while True:
            chunk = buffer.get(timeout=0.5)
            if chunk is None:
                if not stream.active or time.monotonic() - last_audio > stall_s:
                    raise InputError(
                        f"microphone {name!r} stopped delivering audio (unplugged, or taken "
                        f"by another program?); reconnect it and start again {_OR_FILE}"
                    )
                yield Heartbeat("capture")
                continue
            last_audio = time.monotonic()
            lost = (buffer.dropped_samples, buffer.device_overflows)
            if lost != reported:
                dropped_s = (lost[0] - reported[0]) / rate
                log.warning("audio dropped", dropped_s=dropped_s, device_overflows=lost[1])
                data = {"dropped_s": dropped_s, "device_overflows": float(lost[1] - reported[1])}
                yield Event("gap", position / SAMPLE_RATE, data)
                reported = lost
            if resampler is not None:
                chunk = resampler.resample_chunk(chunk)
            pending = np.concatenate([pending, chunk]) if pending.size else chunk
            while pending.size >= size:
                frame, pending = pending[:size], pending[size:]
                yield Audio(frame, SAMPLE_RATE, position / SAMPLE_RATE)
                position += size
    finally:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
