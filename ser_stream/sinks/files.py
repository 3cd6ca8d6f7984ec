"""The file sinks: the JSON-lines record file and the session plot, never written through a link."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from ser_stream.errors import InputError
from ser_stream.messages import Event
from ser_stream.sinks.base import Sink
from ser_stream.sinks.records import error_record, event_record, prediction_record
from ser_stream.wire import Envelope

__all__ = ["JSONLSink", "PlotSink"]


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
