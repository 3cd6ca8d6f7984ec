"""What a sink receives: every record of a session, in order."""

from __future__ import annotations

from ser_stream.wire import Envelope

__all__ = ["Sink"]


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
