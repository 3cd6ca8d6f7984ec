"""The wire format: one versioned multipart ZeroMQ message per :class:`Envelope`.

Frame 1 is a UTF-8 JSON header; frame 2 (only for kinds that carry an array) is the raw
array buffer, C order, little-endian::

    {"v": 1, "kind": "window", "stream": "mic-1", "seq": 7,
     "ts": {"capture": 1764080000123456789, "vad": 1764080000125000000},
     "dtype": "float32", "shape": [48000],
     "t_start": 0.51, "t_end": 3.51, "utterance": 0, "index": 0, "final": false}

Decoding validates everything and raises :class:`~ser_stream.errors.WireError` with the
reason; it never returns a half-valid message. This is the only module that encodes or
decodes messages; ``docs/wire.md`` documents the schema for other programs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

import numpy as np

from ser_stream.errors import WireError
from ser_stream.labels import LABELS
from ser_stream.messages import (
    Audio,
    EndOfStream,
    ErrorMsg,
    Event,
    Features,
    Heartbeat,
    Kind,
    Noise,
    Prediction,
    Window,
)

__all__ = [
    "is_heartbeat",
    "MAX_FRAME_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "VERSION",
    "Body",
    "Envelope",
    "Kind",
    "decode",
    "encode",
]

VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Largest array accepted (16 MiB: over 8 minutes of 16 kHz float32 audio)."""
MAX_STREAM_ID = 128
MAX_FRAME_BYTES = max(MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES)
"""Largest frame a receiving socket takes (``ZMQ_MAXMSGSIZE``): a peer that sends a larger one
is disconnected before the frame is read into memory."""

Body = Audio | Window | Noise | Features | Prediction | Event | EndOfStream | ErrorMsg | Heartbeat


@dataclass(frozen=True, slots=True)
class _Schema:
    cls: type
    array: str | None  # the body field sent as frame 2
    scalars: dict[str, tuple[type, ...]]
    optional: frozenset[str] = frozenset()  # scalars a sender may leave out (their default)


_NUMBER = (int, float)
_SCHEMAS: dict[Kind, _Schema] = {
    Kind.AUDIO: _Schema(Audio, "samples", {"sample_rate": (int,), "t_start": _NUMBER}),
    Kind.WINDOW: _Schema(
        Window,
        "samples",
        {
            "t_start": _NUMBER,
            "t_end": _NUMBER,
            "utterance": (int,),
            "index": (int,),
            "final": (bool,),
        },
    ),
    Kind.NOISE: _Schema(Noise, "samples", {"t_start": _NUMBER, "t_end": _NUMBER}),
    Kind.FEATURES: _Schema(
        Features, "matrix", {"t_start": _NUMBER, "t_end": _NUMBER, "index": (int,)}
    ),
    Kind.PREDICTION: _Schema(
        Prediction,
        "probabilities",
        {
            "label": (str,),
            "t_start": _NUMBER,
            "t_end": _NUMBER,
            "index": (int,),
            "confident": (bool, type(None)),
        },
        frozenset({"confident"}),  # left out when unknown: older receivers take the message
    ),
    Kind.EVENT: _Schema(Event, None, {"name": (str,), "t": _NUMBER, "data": (dict,)}),
    Kind.END_OF_STREAM: _Schema(EndOfStream, None, {"reason": (str,)}),
    Kind.ERROR: _Schema(ErrorMsg, None, {"reason": (str,), "stage": (str,)}),
    Kind.HEARTBEAT: _Schema(
        Heartbeat,
        None,
        {
            "stage": (str,),
            "position_s": _NUMBER,
            "positions": (dict,),
            "streams": (int,),
            "queued": (int,),
            "received": (int,),
            "sent": (int,),
            "oldest_s": _NUMBER,
            "stalled_s": _NUMBER,
        },
        frozenset(
            {
                "position_s",
                "positions",
                "streams",
                "queued",
                "received",
                "sent",
                "oldest_s",
                "stalled_s",
            }
        ),  # fmt: skip
    ),
}
_KIND_OF = {schema.cls: kind for kind, schema in _SCHEMAS.items()}
_DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_ENVELOPE_KEYS = {"v", "kind", "stream", "seq", "ts", "dtype", "shape"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its routing facts.

    Attributes:
        stream: id of the audio stream it belongs to (stateful stages keep state per stream).
        seq: sequence number within the stream and kind family, from 0; gaps reveal losses.
        body: the message itself.
        timestamps: wall-clock nanoseconds per stage name (``capture``, ``vad``, ...).
    """

    stream: str
    seq: int
    body: Body
    timestamps: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> Kind:
        """The kind of the body."""
        return _KIND_OF[type(self.body)]


def encode(envelope: Envelope) -> list[bytes]:
    """Return the frames of ``envelope``.

    Raises:
        WireError: the envelope cannot be represented (unknown body, bad id, odd dtype).
    """
    body = envelope.body
    schema = _SCHEMAS.get(_KIND_OF.get(type(body)))  # type: ignore[arg-type]
    if schema is None:
        raise WireError(f"cannot encode a {type(body).__name__}; send a message type of the schema")
    _check_stream(envelope.stream)
    header: dict = {
        "v": VERSION,
        "kind": _KIND_OF[type(body)].value,
        "stream": envelope.stream,
        "seq": int(envelope.seq),
        "ts": {str(k): int(v) for k, v in envelope.timestamps.items()},
    }
    for name in schema.scalars:
        value = getattr(body, name)
        if value is None and name in schema.optional:
            continue
        header[name] = value.item() if isinstance(value, np.generic) else value
    frames = [b""]
    if schema.array is not None:
        array = np.asarray(getattr(body, schema.array))
        dtype_name = next(
            (n for n, d in _DTYPES.items() if d == array.dtype.newbyteorder("<")), None
        )
        if dtype_name is None:
            raise WireError(f"array dtype {array.dtype} is not one of {sorted(_DTYPES)}")
        header["dtype"] = dtype_name
        header["shape"] = list(array.shape)
        frames.append(np.ascontiguousarray(array, dtype=_DTYPES[dtype_name]).tobytes())
    frames[0] = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return frames


_HEARTBEAT_PREFIX = b'{"v":%d,"kind":"heartbeat",' % VERSION


def is_heartbeat(frames: list[bytes] | list[memoryview]) -> bool:
    """Whether ``frames`` is a heartbeat as :func:`encode` writes it, without parsing it.

    A cheap look for counting (a stage's queue depth counts the messages that wait to be
    processed, not an upstream's idle heartbeats); anything else, a heartbeat written
    another way included, reads as not one.
    """
    return bool(frames) and bytes(frames[0][: len(_HEARTBEAT_PREFIX)]) == _HEARTBEAT_PREFIX


def decode(
    frames: list[bytes] | list[memoryview], *, max_payload: int = MAX_PAYLOAD_BYTES
) -> Envelope:
    """Parse and validate the frames of one message.

    Messages come from other programs: nothing in them may raise anything but
    :class:`WireError` (a stage that let another exception escape would die of one message).

    Raises:
        WireError: anything off — frame count, size, JSON, version, kind, fields, types,
            array dtype or shape — with a one-line reason.
    """
    try:
        return _decode(frames, max_payload)
    except WireError:
        raise
    except (RecursionError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise WireError(f"malformed message ({type(exc).__name__})") from None


def _decode(frames: list[bytes] | list[memoryview], max_payload: int) -> Envelope:
    if not 1 <= len(frames) <= 2:
        raise WireError(f"message has {len(frames)} frames; expected a header and an array")
    raw_header = bytes(frames[0])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(raw_header)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not UTF-8 JSON ({exc.__class__.__name__})") from exc
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    if not _is_int(header.get("v")) or header.get("v") != VERSION:
        raise WireError(f"wire version {header.get('v')!r} is not {VERSION}; upgrade the sender")
    try:
        kind = Kind(header.get("kind"))
    except ValueError:
        raise WireError(f"unknown kind {header.get('kind')!r}") from None
    schema = _SCHEMAS[kind]
    stream = header.get("stream")
    _check_stream(stream)
    seq = header.get("seq")
    if not _is_int(seq) or seq < 0:
        raise WireError(f"seq {seq!r} is not a non-negative integer")
    timestamps = header.get("ts", {})
    if not isinstance(timestamps, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in timestamps.items()
    ):
        raise WireError("ts must map stage names to integer nanoseconds")
    unknown = set(header) - _ENVELOPE_KEYS - set(schema.scalars)
    if unknown:
        raise WireError(f"{kind.value} header has unknown fields {sorted(unknown)}")
    values = {}
    for name, types in schema.scalars.items():
        if name not in header:
            if name in schema.optional:
                continue
            raise WireError(f"{kind.value} header lacks {name!r}")
        value = header[name]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise WireError(f"{kind.value} field {name!r} has type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise WireError(f"{kind.value} field {name!r} is not finite")
        values[name] = value
    if schema.array is not None:
        if len(frames) != 2:
            raise WireError(f"{kind.value} message lacks its array frame")
        values[schema.array] = _array(header, frames[1], max_payload)
    elif len(frames) != 1:
        raise WireError(f"{kind.value} message carries an unexpected array frame")
    _check_body(kind, values)
    ordered = {f.name: values[f.name] for f in fields(schema.cls) if f.name in values}
    return Envelope(stream, seq, schema.cls(**ordered), dict(timestamps))


def _array(header: dict, payload: bytes | memoryview, max_payload: int) -> np.ndarray:
    name = header.get("dtype")
    dtype = _DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise WireError(f"dtype {header.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 3
        or not all(_is_int(n) and 0 <= n <= max(max_payload, MAX_PAYLOAD_BYTES) for n in shape)
    ):
        raise WireError(f"shape {shape!r} is not a list of 1-3 non-negative integers")
    size = len(payload)
    if size > max_payload:
        raise WireError(f"array of {size} bytes exceeds the {max_payload}-byte limit")
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise WireError(f"array frame has {size} bytes; dtype and shape say {expected}")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise WireError("array contains NaN or infinite values")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _check_numbers(what: str, mapping: dict) -> None:
    for key, value in mapping.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise WireError(f"{what} {key!r} is not a number")
        if not math.isfinite(value):
            raise WireError(f"{what} {key!r} is not finite")


def _check_body(kind: Kind, values: dict) -> None:
    if kind is Kind.EVENT:
        _check_numbers("event data", values["data"])
    if kind is Kind.HEARTBEAT:
        _check_numbers("heartbeat position", values.get("positions", {}))
        counts = ("streams", "queued", "received", "sent", "oldest_s", "stalled_s")
        _check_numbers("heartbeat", {key: values[key] for key in counts if key in values})
        if any(values.get(key, 0) < 0 for key in counts):
            raise WireError(f"heartbeat counts ({', '.join(counts)}) must not be negative")
    if kind is Kind.PREDICTION:
        probabilities = values["probabilities"]
        if probabilities.shape != (len(LABELS),):
            raise WireError(
                f"prediction has probabilities of shape {list(probabilities.shape)}; "
                f"expected one per label ({len(LABELS)})"
            )
    if kind is Kind.AUDIO:
        if values["sample_rate"] <= 0 or values["samples"].ndim != 1:
            raise WireError("audio needs a positive sample_rate and mono samples (1-D)")
    elif kind in (Kind.WINDOW, Kind.NOISE, Kind.FEATURES, Kind.PREDICTION):
        if values["t_end"] < values["t_start"]:
            raise WireError(f"{kind.value} ends before it starts")


def _check_stream(stream: object) -> None:
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_ID:
        raise WireError(f"stream id {stream!r} must be a string of 1-{MAX_STREAM_ID} characters")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
