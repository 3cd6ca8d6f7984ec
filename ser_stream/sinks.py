"""Sinks of ``ser-stream up``: the live console view and the JSON-lines file.

Both render the same records, the contract other programs rely on (``docs/records.md``):
``prediction``, ``event``, ``error`` and, last, ``session_end``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from ser_stream.errors import InputError
from ser_stream.messages import ErrorMsg, Event, Prediction
from ser_stream.wire import Envelope

__all__ = ["ConsoleSink", "JSONLSink", "Sink", "parse_sink", "prediction_record"]


def prediction_record(envelope: Envelope, labels: tuple[str, ...]) -> dict:
    """The JSON record of a prediction; latency from the capture of its last sample."""
    body: Prediction = envelope.body  # type: ignore[assignment]
    ts = envelope.timestamps
    latency = (ts["model"] - ts["capture"]) / 1e6 if {"model", "capture"} <= set(ts) else None
    return {
        "kind": "prediction",
        "stream": envelope.stream,
        "seq": envelope.seq,
        "t_start": round(body.t_start, 3),
        "t_end": round(body.t_end, 3),
        "label": body.label,
        "probabilities": {
            k: round(float(v), 6) for k, v in zip(labels, body.probabilities, strict=True)
        },
        "latency_ms": None if latency is None else round(latency, 2),
    }


def event_record(envelope: Envelope) -> dict:
    """The JSON record of a speech event."""
    body: Event = envelope.body  # type: ignore[assignment]
    return {
        "kind": "event",
        "stream": envelope.stream,
        "event": body.name,
        "t": round(body.t, 3),
        **body.data,
    }


def error_record(envelope: Envelope) -> dict:
    """The JSON record of an error reported by a stage."""
    body: ErrorMsg = envelope.body  # type: ignore[assignment]
    return {"kind": "error", "stream": envelope.stream, "stage": body.stage, "reason": body.reason}


class Sink:
    """Receives every record of a session, in order."""

    def open(self, labels: tuple[str, ...]) -> None:
        """The session starts."""

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """A window was classified."""

    def event(self, envelope: Envelope) -> None:
        """Speech started or ended, silence, window count."""

    def error(self, envelope: Envelope) -> None:
        """A stage reported a problem."""

    def close(self, reason: str, summary: dict) -> None:
        """The session ended; ``summary`` is the ``session_end`` summary."""


class JSONLSink(Sink):
    """One JSON object per line, flushed as it comes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def open(self, labels: tuple[str, ...]) -> None:
        """Create the file."""
        try:
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot write {self.path} ({exc.strerror}); pick a writable path"
            ) from exc

    def _write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Render one prediction."""
        self._write(prediction_record(envelope, labels))

    def event(self, envelope: Envelope) -> None:
        """Render one event."""
        self._write(event_record(envelope))

    def error(self, envelope: Envelope) -> None:
        """Render one error."""
        self._write(error_record(envelope))

    def close(self, reason: str, summary: dict) -> None:
        """Write the end of the session."""
        self._write({"kind": "session_end", "reason": reason, "summary": summary})
        if self._file is not None:
            self._file.close()


class ConsoleSink(Sink):
    """A readable live view: one line per window with the top emotions as bars."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Render one prediction."""
        record = prediction_record(envelope, labels)
        top = sorted(record["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        bars = "  ".join(f"{label:<9} {'█' * round(p * 10):<10} {p:4.0%}" for label, p in top)
        print(
            f"[{record['t_start']:7.2f}-{record['t_end']:7.2f} s] {bars}", file=self.out, flush=True
        )

    def event(self, envelope: Envelope) -> None:
        """Render one event."""
        body: Event = envelope.body  # type: ignore[assignment]
        if body.name in ("speech_start", "speech_end", "silence"):
            print(f"[{body.t:7.2f} s] {body.name.replace('_', ' ')}", file=self.out, flush=True)

    def error(self, envelope: Envelope) -> None:
        """Render one error."""
        print(f"error: {error_record(envelope)['reason']}", file=self.out, flush=True)

    def close(self, reason: str, summary: dict) -> None:
        """Write the end of the session."""
        mean = sorted(summary["mean_probabilities"].items(), key=lambda kv: -kv[1])
        counts = (
            f"{summary['predicted']} of {summary['windows']} windows predicted, "
            f"{summary['dropped']} dropped {summary['dropped_reasons'] or ''}"
        ).rstrip()
        print(
            f"session ended ({reason}) after {summary['duration_s']:.1f} s: {counts}", file=self.out
        )
        print(
            "mean: " + "  ".join(f"{label} {p:.0%}" for label, p in mean), file=self.out, flush=True
        )


def parse_sink(text: str) -> Sink:
    """``console`` or ``jsonl:PATH``.

    Raises:
        InputError: any other form.
    """
    if text == "console":
        return ConsoleSink()
    kind, _, target = text.partition(":")
    if kind == "jsonl" and target:
        return JSONLSink(target)
    raise InputError(f"sink {text!r} is not console or jsonl:PATH")
