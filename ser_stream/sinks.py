"""Sinks of ``ser-stream up``: the live console view, the JSON-lines file and the plot.

Both render the same records, the contract other programs rely on (``docs/records.md``):
``prediction``, ``event``, ``error``, ``stream_end`` when a stream ends and, last,
``session_end``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from ser_stream.errors import InputError, OutputClosed
from ser_stream.messages import ErrorMsg, Event, Prediction
from ser_stream.wire import Envelope

__all__ = [
    "ConsoleSink",
    "JSONLSink",
    "PlotSink",
    "Sink",
    "dominant_text",
    "parse_sink",
    "prediction_record",
    "summary_table",
    "verdict_text",
]


def verdict_text(label: str, probability: float, confident: bool | None) -> str:
    """What to show for a prediction: its label, or ``uncertain (angry? 31%)`` below threshold.

    Unknown confidence (a model without a threshold) shows the label.
    """
    if confident is False:
        return f"uncertain ({label}? {probability:.0%})"
    return label


def _record_verdict(record: dict) -> str:
    """:func:`verdict_text` of a prediction record."""
    label = record["label"]
    return verdict_text(label, record["probabilities"][label], record["confident"])


def dominant_text(summary: dict) -> str | None:
    """The summary's dominant emotion, or ``uncertain (...)`` when no window was confident."""
    dominant = summary.get("dominant")
    if dominant is None:
        return None
    sure_of_none = summary.get("uncertain", 0) > 0 and summary.get("confident", 0) == 0
    probability = summary["mean_probabilities"].get(dominant, 0.0)
    return verdict_text(dominant, probability, False if sure_of_none else None)


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
        "confident": body.confident,
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

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """One stream ended (the others go on); ``summary`` is that stream's summary."""

    def close(self, reason: str, summary: dict) -> None:
        """The session ended; ``summary`` is the ``session_end`` summary of every stream."""


def _refuse_link(path: Path) -> None:
    """Raise :class:`InputError` if ``path`` is a symbolic link."""
    if os.path.islink(path):
        raise InputError(
            f"{path} is a symbolic link; give the file it points to, if it is yours, "
            "or pick another path"
        )


def _open_for_writing(path: Path) -> int:
    """Create or empty ``path`` for writing, never through a link; return its descriptor."""
    # A link planted where the file goes (in a shared folder, by another user) would
    # otherwise have this user overwrite whatever it points to.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        _refuse_link(path)  # ELOOP on Linux, EMLINK on FreeBSD
        raise InputError(f"cannot write {path} ({exc.strerror}); pick a writable path") from exc


class JSONLSink(Sink):
    """One JSON object per line, flushed as it comes; a link at the path is refused."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def open(self, labels: tuple[str, ...]) -> None:
        """Create the file (or empty an existing one)."""
        self._file = os.fdopen(_open_for_writing(self.path), "w", encoding="utf-8")

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

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Write the end of one stream with its summary."""
        self._write({"kind": "stream_end", "stream": stream, "reason": reason, "summary": summary})

    def close(self, reason: str, summary: dict) -> None:
        """Write the end of the session."""
        self._write({"kind": "session_end", "reason": reason, "summary": summary})
        if self._file is not None:
            self._file.close()


class ConsoleSink(Sink):
    """The live view: bars for the latest window, redrawn in place on a terminal.

    On a terminal (rich) one panel shows a bar per emotion for the latest window, the current
    label, speech or silence, and the latency; it is redrawn as records come. Anywhere else
    (a pipe, a log, CI) each window is one plain line. The session ends with a summary table.
    """

    def __init__(self, out: TextIO | None = None, *, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self._view: LiveView | None = None
        self._ended: list[str] = []
        self._streams: set[str] = set()
        self._closed = False  # the reader went away

    def open(self, labels: tuple[str, ...]) -> None:
        """Start the live panel (on a terminal)."""
        if self.live:
            self._view = LiveView(labels, self.out)

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Render one prediction."""
        record = prediction_record(envelope, labels)
        self._streams.add(envelope.stream)
        if self._view is not None:
            self._view.prediction(record)
            return
        top = sorted(record["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        bars = "  ".join(f"{label:<9} {'█' * round(p * 10):<10} {p:4.0%}" for label, p in top)
        if record["confident"] is False:
            bars = f"{_record_verdict(record)}  {bars}"
        stream = f"{envelope.stream} " if len(self._streams) > 1 else ""
        self._print(f"{stream}[{record['t_start']:7.2f}-{record['t_end']:7.2f} s] {bars}")

    def event(self, envelope: Envelope) -> None:
        """Render one event."""
        body: Event = envelope.body  # type: ignore[assignment]
        if self._view is not None:
            self._view.event(body)
            return
        if body.name == "gap":
            self._print(
                f"[{body.t:7.2f} s] gap: {body.data.get('dropped_s', 0):.2f} s of audio lost"
            )
        elif body.name in ("speech_start", "speech_end", "silence", "no_speech"):
            self._print(f"[{body.t:7.2f} s] {body.name.replace('_', ' ')}")

    def error(self, envelope: Envelope) -> None:
        """Render one error."""
        reason = error_record(envelope)["reason"]
        if self._view is not None:
            self._view.error(reason)
            return
        self._print(f"error: {reason}")

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """With several streams, one line per stream that ends (the table comes at the end)."""
        self._ended.append(stream)
        if len(self._ended) > 1 or len(self._streams) > 1:
            self._print(
                f"stream {stream} ended ({reason}): {summary['predicted']} of "
                f"{summary['windows']} windows predicted, dominant {dominant_text(summary)}"
            )

    def close(self, reason: str, summary: dict) -> None:
        """Write the end of the session and its summary table."""
        if self._view is not None:
            self._view.stop()
        counts = (
            f"{summary['predicted']} of {summary['windows']} windows predicted, "
            f"{summary['dropped']} dropped {summary['dropped_reasons'] or ''}"
        ).rstrip()
        self._print(f"session ended ({reason}) after {summary['duration_s']:.1f} s: {counts}")
        mean = sorted(summary["mean_probabilities"].items(), key=lambda kv: -kv[1])
        self._print("mean: " + "  ".join(f"{label} {p:.0%}" for label, p in mean))
        for line in summary_table(summary, reason):
            self._print(line)

    def _print(self, line: str) -> None:
        if self._closed:
            return
        try:
            print(line, file=self.out, flush=True)
        except BrokenPipeError:
            # The reader is gone (``up | head``): nothing more can be shown, and the
            # interpreter must not complain at exit while flushing what is left.
            self._closed = True
            if self.out is sys.stdout:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            raise OutputClosed("the output was closed; stopping") from None


def summary_table(summary: dict, reason: str) -> list[str]:
    """The session summary as an aligned text table (one row per emotion, then the facts)."""
    mean = sorted(summary["mean_probabilities"].items(), key=lambda kv: -kv[1])
    dominant = summary.get("dominant")
    rows = [f"  {'emotion':<10} {'mean':>6}  distribution"]
    for label, p in mean:
        mark = " <" if label == dominant else ""
        rows.append(f"  {label:<10} {p:>6.1%}  {'█' * round(p * 30)}{mark}")
    rows.append(f"  {'dominant':<10} {dominant_text(summary) or 'none (no speech heard)'}")
    rows.append(f"  {'duration':<10} {summary['duration_s']:.1f} s (ended by {reason})")
    rows.append(f"  {'windows':<10} {summary['predicted']} predicted of {summary['windows']}")
    judged = summary.get("confident", 0) + summary.get("uncertain", 0)
    if judged:  # the model has a confidence threshold
        rows.append(
            f"  {'confident':<10} {summary['confident']} of {judged} windows "
            f"({summary['uncertain']} uncertain)"
        )
    dropped = f"{summary['dropped']} windows"
    if summary.get("audio_dropped_s"):
        dropped += f", {summary['audio_dropped_s']:.2f} s of audio"
    rows.append(f"  {'dropped':<10} {dropped}")
    return rows


class LiveView:
    """The redrawn-in-place terminal panel of :class:`ConsoleSink` (rich)."""

    def __init__(self, labels: tuple[str, ...], out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.labels = labels
        self.state = "waiting for speech"
        self.latest: dict | None = None
        self.note = ""
        self._live = Live(
            self._render(), console=Console(file=out), auto_refresh=False, transient=False
        )
        self._live.start()

    def prediction(self, record: dict) -> None:
        self.latest = record
        self._refresh()

    def event(self, body: Event) -> None:
        states = {"speech_start": "speech", "speech_end": "pause", "silence": "silence",
                  "no_speech": "no speech heard"}  # fmt: skip
        if body.name in states:
            self.state = states[body.name]
        elif body.name == "gap":
            self.note = (
                f"gap: {body.data.get('dropped_s', 0):.2f} s of audio lost at {body.t:.1f} s"
            )
        self._refresh()

    def error(self, reason: str) -> None:
        self.note = f"error: {reason}"
        self._refresh()

    def stop(self) -> None:
        self._live.stop()

    def _refresh(self) -> None:
        self._live.update(self._render(), refresh=True)

    def _render(self):
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        table.add_column(width=10)
        table.add_column(width=32)
        table.add_column(justify="right", width=5)
        record = self.latest
        probabilities = record["probabilities"] if record else dict.fromkeys(self.labels, 0.0)
        top = max(probabilities, key=probabilities.get) if record else None
        unsure = bool(record) and record["confident"] is False
        for label in self.labels:
            p = probabilities[label]
            style = ("yellow" if unsure else "bold green") if label == top else "cyan"
            table.add_row(Text(label), Text("█" * round(p * 32), style=style), Text(f"{p:.0%}"))
        title = Text(self.state)
        if record:
            title = Text.assemble(
                self._verdict(record),
                f"  ·  {self.state}  ·  {record['t_start']:.1f}-{record['t_end']:.1f} s  ·  "
                f"latency {record['latency_ms'] or 0:.0f} ms",
            )
        subtitle = Text(self.note) if self.note else None
        return Panel(table, title=title, subtitle=subtitle, expand=False)

    @staticmethod
    def _verdict(record: dict):
        """The label in bold, or "uncertain" in bold with the best guess dimmed."""
        from rich.text import Text

        if record["confident"] is not False:
            return Text(record["label"], style="bold")
        guess = _record_verdict(record)
        return Text.assemble(("uncertain", "bold yellow"), (guess[len("uncertain") :], "dim"))


class PlotSink(Sink):
    """``--plot PATH``: at the session's end, a PNG of its mean distribution and timeline.

    With several streams it draws the first one (its own summary). A link at the path is
    refused, at the start and when the PNG is written.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._stream: str | None = None
        self._summary: dict | None = None
        self._labels: tuple[str, ...] = ()
        self._predictions: list[dict] = []
        self._speech: list[tuple[str, float]] = []

    def open(self, labels: tuple[str, ...]) -> None:
        """Check the folder exists and the path is no link now, not after a long session."""
        self._labels = labels
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise InputError(f"--plot {self.path}: no folder {folder}; create it or pick another")
        _refuse_link(self.path)

    def _mine(self, stream: str) -> bool:
        if self._stream is None:
            self._stream = stream
        return stream == self._stream

    def prediction(self, envelope: Envelope, labels: tuple[str, ...]) -> None:
        """Keep one window's distribution."""
        if self._mine(envelope.stream):
            self._predictions.append(prediction_record(envelope, labels))

    def event(self, envelope: Envelope) -> None:
        """Keep speech starts and ends for shading."""
        body: Event = envelope.body  # type: ignore[assignment]
        if body.name in ("speech_start", "speech_end") and self._mine(envelope.stream):
            self._speech.append((body.name, body.t))

    def stream_end(self, stream: str, reason: str, summary: dict) -> None:
        """Keep the drawn stream's own summary."""
        if stream == self._stream:
            self._summary, self._reason = summary, reason

    def close(self, reason: str, summary: dict) -> None:
        """Draw and write the PNG."""
        import tempfile

        from ser_stream.plots import plot_session

        if self._summary is not None and summary.get("streams", 1) > 1:
            summary, reason = self._summary, self._reason
        # Drawn in a private folder, then copied into a file opened without following links.
        with tempfile.TemporaryDirectory(prefix="ser-stream-plot-") as private:
            try:
                drawn = plot_session(Path(private) / "session.png", self._labels,
                                     self._predictions, self._speech, summary, reason)  # fmt: skip
                png = drawn.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot draw the plot ({exc.strerror}); free some space "
                                 "in the temporary folder") from exc  # fmt: skip
        with os.fdopen(_open_for_writing(self.path), "wb") as out:
            try:
                out.write(png)
            except OSError as exc:
                raise InputError(
                    f"cannot write {self.path} ({exc.strerror}); pick a writable path"
                ) from exc


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
