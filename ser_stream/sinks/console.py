"""The console sink: a live panel on a terminal, plain lines elsewhere, a summary at the end."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ser_stream.errors import OutputClosed
from ser_stream.messages import Event
from ser_stream.sinks.base import Sink
from ser_stream.sinks.records import dominant_text, error_record, prediction_record, record_verdict
from ser_stream.wire import Envelope

__all__ = ["ConsoleSink", "summary_table"]


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
            bars = f"{record_verdict(record)}  {bars}"
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
        guess = record_verdict(record)
        return Text.assemble(("uncertain", "bold yellow"), (guess[len("uncertain") :], "dim"))
