"""Sinks of ``ser-stream up``: the live console view, the JSON-lines file and the plot.

They render the same records, the contract other programs rely on (``docs/records.md``):
``prediction``, ``event``, ``error``, ``stream_end`` when a stream ends and, last,
``session_end``.

==============  ============================================================
``base``        :class:`Sink`, what every sink receives
``records``     the JSON record of each envelope, shared with ``tap`` and ``serve``
``console``     :class:`ConsoleSink`: the live panel or plain lines, the summary table
``files``       :class:`JSONLSink` and :class:`PlotSink`
==============  ============================================================
"""

from __future__ import annotations

from ser_stream.errors import InputError
from ser_stream.sinks.base import Sink
from ser_stream.sinks.console import ConsoleSink, summary_table
from ser_stream.sinks.files import JSONLSink, PlotSink
from ser_stream.sinks.records import (
    dominant_text,
    error_record,
    event_record,
    prediction_record,
    verdict_text,
)

__all__ = [
    "ConsoleSink",
    "JSONLSink",
    "PlotSink",
    "Sink",
    "dominant_text",
    "error_record",
    "event_record",
    "parse_sink",
    "prediction_record",
    "summary_table",
    "verdict_text",
]


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
