"""What every session of ``ser-stream bench`` shares: its audio, its sink, its settings.

Every figure comes from the timestamps the messages carry: each stage stamps a message when
it arrives (``STAGE.in``) and when it leaves (``STAGE``), the capture when the last sample of
its frame was heard, and the bench's sink when the record reached it. Audio is real speech
(the bundled sample) with pauses of room noise, never digital silence.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_stream.audio import SAMPLE_RATE, bundled_sample, load_audio
from ser_stream.settings import PipelineConfig
from ser_stream.sinks import Sink
from ser_stream.supervisor.ledger import Run
from ser_stream.wire import Envelope

__all__ = [
    "PAUSE_S",
    "Arrival",
    "Recorder",
    "bench_audio",
    "bench_config",
    "pipeline_labels",
    "rss_mb",
    "workdir",
    "write_wav",
]

ROOM_DBFS = -50.0
"""Level of the noise under and between the speech."""
PAUSE_S = 1.5
"""The pause after each utterance of the bench's audio."""


def bench_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Real speech (the bundled sample) with pauses, over room noise, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    speech = load_audio(str(bundled_sample()))
    pause = np.zeros(round(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        pieces += [speech, pause]
        total += speech.size + pause.size
    audio = np.concatenate(pieces)[: round(seconds * SAMPLE_RATE)]
    room = rng.standard_normal(audio.size).astype(np.float32) * 10 ** (ROOM_DBFS / 20)
    return np.clip(audio + room, -1.0, 1.0)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """16-bit WAV of canonical audio."""
    import soundfile

    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


@dataclass
class Arrival:
    """A record as the bench's sink received it."""

    at_ns: int
    envelope: Envelope


@dataclass
class Recorder(Sink):
    """A sink that keeps every prediction and event with the time it arrived."""

    predictions: list[Arrival] = field(default_factory=list)
    events: list[Arrival] = field(default_factory=list)
    ended_ns: dict[str, int] = field(default_factory=dict)

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Keep it."""
        self.predictions.append(Arrival(time.time_ns(), envelope))

    def event(self, envelope: Envelope) -> None:
        """Keep it."""
        self.events.append(Arrival(time.time_ns(), envelope))

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Note when it ended."""
        self.ended_ns[stream] = time.time_ns()

    def first_capture_ns(self) -> int:
        """When the capture sent the earliest record seen (its process start excluded)."""
        return min(
            a.envelope.timestamps["capture"]
            for a in [*self.predictions, *self.events]
            if "capture" in a.envelope.timestamps
        )

    def wall_ns(self, t: float) -> float:
        """When stream time ``t`` was heard, from the first prediction's capture stamp.

        A window's capture stamp is the moment its last sample (``t_end``) was heard.
        """
        first = self.predictions[0]
        return first.envelope.timestamps["capture"] + (t - first.envelope.body.t_end) * 1e9  # type: ignore[union-attr]

    def latencies_ms(self) -> list[float]:
        """Capture of each window's last sample to its prediction at this sink."""
        return [
            (a.at_ns - a.envelope.timestamps["capture"]) / 1e6
            for a in self.predictions
            if "capture" in a.envelope.timestamps
        ]


def pipeline_labels() -> tuple[str, ...]:
    """The emotion labels every session's summary counts."""
    from ser_stream.labels import LABELS

    return LABELS


def bench_config(sources: tuple[str, ...], folder: Path, **options) -> PipelineConfig:
    """A session of ``sources`` that never stops on silence, publishing inside ``folder``."""
    return PipelineConfig(
        sources=sources, stop_on_silence_s=None, publish=f"ipc://{folder}/publish", **options
    )


def rss_mb(run: Run) -> dict:
    """Peak resident memory of the session's processes, with their total."""
    return {"total": round(sum(run.peak_rss_mb.values()), 1), **run.peak_rss_mb}


def workdir() -> tempfile.TemporaryDirectory:
    """A private folder for the bench's audio files and endpoints."""
    return tempfile.TemporaryDirectory(prefix="ser-stream-bench-")
