"""The JSON records of a session (``docs/records.md``), the contract other programs rely on.

Every sink, ``tap`` and the web gateway render envelopes with these functions, so a record
reads the same wherever it is seen.
"""

from __future__ import annotations

from ser_stream.messages import ErrorMsg, Event, Prediction
from ser_stream.wire import Envelope

__all__ = [
    "dominant_text",
    "error_record",
    "event_record",
    "prediction_record",
    "record_verdict",
    "verdict_text",
]


def verdict_text(label: str, probability: float, confident: bool | None) -> str:
    """What to show for a prediction: its label, or ``uncertain (angry? 31%)`` below threshold.

    Unknown confidence (a model without a threshold) shows the label.
    """
    if confident is False:
        return f"uncertain ({label}? {probability:.0%})"
    return label


def record_verdict(record: dict) -> str:
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
