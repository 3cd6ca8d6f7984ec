from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ser_stream.errors import WireError
from ser_stream.messages import (
    Audio,
    EndOfStream,
    ErrorMsg,
    Event,
    Features,
    Heartbeat,
    Noise,
    Prediction,
    Window,
)
from ser_stream.wire import Envelope, Kind, decode, encode

BODIES = [
    Audio(np.arange(480, dtype=np.int16), 16_000, 0.03),
    Window(np.linspace(-1, 1, 4800, dtype=np.float32), 0.5, 0.8, 0, 3, True),
    Noise(np.zeros(160, dtype=np.float32), 0.0, 0.01),
    Features(np.ones((94, 68), dtype=np.float32), 0.5, 3.5, 2),
    Prediction(np.full(8, 0.125, dtype=np.float32), "calm", 0.5, 3.5, 2),
    Event("silence", 12.5, {"duration_s": 2.0}),
    EndOfStream("silence"),
    ErrorMsg("bad frame; resend", "vad"),
    Heartbeat("model"),
]


def header_of(envelope: Envelope) -> dict:
    return json.loads(encode(envelope)[0])


def frames_with(header_changes: dict, body=BODIES[1]) -> list[bytes]:
    frames = encode(Envelope("s", 1, body))
    header = json.loads(frames[0])
    for key, value in header_changes.items():
        if value is ...:
            header.pop(key)
        else:
            header[key] = value
    return [json.dumps(header).encode(), *frames[1:]]


def same(a, b) -> bool:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return type(a) is type(b)


class TestRoundTrip:
    @pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
    def test_every_kind_decodes_to_what_was_encoded(self, body):
        """decode(encode(x)) gives back x, timestamps and routing included."""
        envelope = Envelope("mic-1", 42, body, {"capture": 1_700_000_000_000_000_000, "vad": 5})
        decoded = decode(encode(envelope))
        assert decoded.stream == "mic-1" and decoded.seq == 42
        assert decoded.timestamps == envelope.timestamps
        assert decoded.kind == envelope.kind
        assert same(decoded.body, body)

    def test_kinds_without_arrays_are_one_frame(self):
        """Events, ends of stream, errors and heartbeats carry no array frame."""
        for body in BODIES[5:]:
            assert len(encode(Envelope("s", 0, body))) == 1

    def test_header_names_kind_version_dtype_and_shape(self):
        """The documented header fields are present."""
        header = header_of(Envelope("s", 3, BODIES[3]))
        assert header["v"] == 1 and header["kind"] == "features"
        assert header["dtype"] == "float32" and header["shape"] == [94, 68]

    @settings(max_examples=60, deadline=None)
    @given(
        samples=hnp.arrays(
            st.sampled_from([np.int16, np.float32]),
            st.integers(0, 2000),
            elements={"allow_nan": False, "allow_infinity": False},
        ),
        rate=st.integers(1, 192_000),
        stream=st.text(min_size=1, max_size=128),
        seq=st.integers(0, 2**62),
    )
    def test_any_audio_round_trips(self, samples, rate, stream, seq):
        """Audio of any length, dtype, rate and stream id survives the wire unchanged."""
        body = Audio(samples, rate, 0.0)
        decoded = decode(encode(Envelope(stream, seq, body)))
        assert decoded.stream == stream and decoded.seq == seq
        assert same(decoded.body, body)


class TestMalformed:
    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"v": 2}, "version"),
            ({"v": ...}, "version"),
            ({"kind": "video"}, "unknown kind"),
            ({"stream": ""}, "stream id"),
            ({"stream": 5}, "stream id"),
            ({"seq": -1}, "seq"),
            ({"seq": True}, "seq"),
            ({"ts": {"vad": "soon"}}, "ts"),
            ({"extra": 1}, "unknown fields"),
            ({"t_end": ...}, "lacks"),
            ({"final": 1}, "type"),
            ({"index": 2.5}, "type"),
            ({"dtype": "int64"}, "dtype"),
            ({"shape": [4801]}, "bytes"),
            ({"shape": [2, 2, 2, 2]}, "shape"),
            ({"t_end": 0.1}, "ends before"),
        ],
    )
    def test_bad_headers_are_refused_with_the_reason(self, changes, reason):
        """Each malformed header raises WireError naming what is wrong."""
        with pytest.raises(WireError, match=reason):
            decode(frames_with(changes))

    def test_non_json_header_is_refused(self):
        """Garbage bytes are a WireError, not a crash."""
        with pytest.raises(WireError, match="JSON"):
            decode([b"\xff\x00garbage", b""])

    def test_wrong_frame_counts_are_refused(self):
        """Zero, three, or a missing/unexpected array frame are refused."""
        window = encode(Envelope("s", 0, BODIES[1]))
        event = encode(Envelope("s", 0, BODIES[5]))
        for frames in ([], [*window, b""], window[:1], [*event, b"x"]):
            with pytest.raises(WireError):
                decode(frames)

    def test_oversized_array_is_refused(self):
        """An array beyond the size limit is refused before it is parsed."""
        with pytest.raises(WireError, match="limit"):
            decode(encode(Envelope("s", 0, BODIES[1])), max_payload=1000)

    def test_nan_samples_are_refused(self):
        """Float arrays must be finite."""
        body = Window(np.full(10, np.nan, dtype=np.float32), 0.0, 1.0, 0, 0)
        frames = encode(Envelope("s", 0, body))
        with pytest.raises(WireError, match="NaN"):
            decode(frames)

    def test_unknown_body_type_cannot_be_encoded(self):
        """Only schema types go on the wire."""
        with pytest.raises(WireError):
            encode(Envelope("s", 0, "hello"))  # type: ignore[arg-type]

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
    def test_random_frames_never_crash(self, frames):
        """Whatever arrives, decode returns an envelope or raises WireError."""
        try:
            decode(frames)
        except WireError:
            pass


def test_kind_values_are_the_documented_names():
    """The kinds on the wire are lowercase words."""
    assert {k.value for k in Kind} == {
        "audio",
        "window",
        "noise",
        "features",
        "prediction",
        "event",
        "end_of_stream",
        "error",
        "heartbeat",
    }


def test_heartbeat_counts_round_trip_and_negative_ones_are_refused():
    beat = Envelope("-", 0, Heartbeat("vad.0", positions={"a": 1.5}, streams=3, queued=7))
    assert decode(encode(beat)).body == beat.body
    header = json.loads(encode(beat)[0])
    for field in ("streams", "queued"):
        bad = {**header, field: -1}
        with pytest.raises(WireError, match="must not be negative"):
            decode([json.dumps(bad).encode()])
    old = {key: value for key, value in header.items() if key not in ("streams", "queued")}
    assert decode([json.dumps(old).encode()]).body.streams == 0  # an older sender's heartbeat


class TestPredictionConfidence:
    PROBABILITIES = np.full(8, 0.125, dtype=np.float32)

    @pytest.mark.parametrize("confident", [True, False, None])
    def test_the_flag_round_trips(self, confident):
        """``confident`` comes back as sent: True, False, or None (unknown)."""
        body = Prediction(self.PROBABILITIES, "calm", 0.5, 3.5, 2, confident)
        assert decode(encode(Envelope("s", 0, body))).body.confident is confident

    def test_unknown_confidence_is_left_off_the_wire(self):
        """A prediction without a threshold encodes as before, so older receivers take it."""
        header = header_of(Envelope("s", 0, Prediction(self.PROBABILITIES, "calm", 0, 3, 0)))
        assert "confident" not in header
        flagged = Prediction(self.PROBABILITIES, "calm", 0, 3, 0, np.bool_(False))
        assert header_of(Envelope("s", 0, flagged))["confident"] is False

    @pytest.mark.parametrize("value", [..., None])
    def test_an_older_or_null_flag_decodes_as_unknown(self, value):
        """A prediction header without ``confident``, or with null, decodes as None."""
        body = Prediction(self.PROBABILITIES, "calm", 0.5, 3.5, 2, True)
        assert decode(frames_with({"confident": value}, body)).body.confident is None

    @pytest.mark.parametrize("value", [1, "yes", 0.9])
    def test_a_flag_that_is_not_a_boolean_is_refused(self, value):
        """Only true, false or null are a confidence flag."""
        body = Prediction(self.PROBABILITIES, "calm", 0.5, 3.5, 2, True)
        with pytest.raises(WireError, match="confident"):
            decode(frames_with({"confident": value}, body))


def test_a_heartbeat_is_recognised_without_parsing_and_nothing_else_is():
    from ser_stream.messages import EndOfStream, Heartbeat
    from ser_stream.wire import is_heartbeat

    assert is_heartbeat(encode(Envelope("s", 0, Heartbeat("vad"))))
    assert is_heartbeat([memoryview(f) for f in encode(Envelope("s", 0, Heartbeat("vad")))])
    assert not is_heartbeat(encode(Envelope("s", 0, EndOfStream("eof"))))
    assert not is_heartbeat([b'{"v":1,"kind":"heartbea'])
    assert not is_heartbeat([b""])
    assert not is_heartbeat([])
