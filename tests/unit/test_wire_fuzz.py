"""Messages from other programs: whatever comes, decode returns an envelope or a WireError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.errors import WireError
from ser_stream.labels import LABELS
from ser_stream.messages import Audio, Event, Prediction
from ser_stream.testing import mutated_messages
from ser_stream.wire import Envelope, decode, encode

VALID = [
    encode(Envelope("s", 0, Audio(np.zeros(480, np.int16), 16_000, 0.0))),
    encode(Envelope("s", 1, Event("gap", 1.0, {"dropped_s": 0.5}))),
    encode(Envelope("s", 2, Prediction(np.full(len(LABELS), 0.125, np.float32), "calm", 0, 3, 0))),
]


def header_of(frames: list[bytes]) -> dict:
    return json.loads(frames[0])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: h.update(v=True), "version"),
        (lambda h: h.update(dtype=["int16"]), "dtype"),
        (lambda h: h.update(shape=[2**63, 0]), "shape"),
    ],
)
def test_the_crashes_found_by_fuzzing_are_wire_errors(change, reason):
    frames = list(VALID[0])
    header = header_of(frames)
    change(header)
    frames[0] = json.dumps(header).encode()
    with pytest.raises(WireError, match=reason):
        decode(frames)


def test_deep_nesting_and_huge_integers_are_wire_errors():
    deep = b'{"v": 1, "kind": "audio", "stream": "s", "ts": ' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(WireError):
        decode([deep + b"}"])
    digits = b'{"v": 1, "kind": "event", "stream": "s", "seq": ' + b"9" * 5000 + b"}"
    with pytest.raises(WireError):
        decode([digits])


def test_event_data_must_be_finite_numbers():
    for bad in ("NaN", "Infinity", '"text"', "true", "[1]"):
        frames = list(VALID[1])
        text = frames[0].decode().replace('"dropped_s":0.5', f'"dropped_s":{bad}')
        with pytest.raises(WireError, match="event data"):
            decode([text.encode()])


def test_a_prediction_has_one_probability_per_label():
    body = Prediction(np.full(3, 1 / 3, np.float32), "calm", 0, 3, 0)
    with pytest.raises(WireError, match="one per label"):
        decode(encode(Envelope("s", 0, body)))


def mutate(frames: list[bytes], data) -> list[bytes]:
    header = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "field"]))
        if action == "flip" and header:
            i = data.draw(st.integers(0, len(header) - 1))
            header[i] = data.draw(st.integers(0, 255))
        elif action == "cut" and header:
            header = header[: data.draw(st.integers(0, len(header)))]
        elif action == "insert":
            i = data.draw(st.integers(0, len(header)))
            header[i:i] = data.draw(st.binary(max_size=8))
        else:
            try:
                parsed = json.loads(bytes(header))
            except ValueError:
                continue
            if isinstance(parsed, dict) and parsed:
                key = data.draw(st.sampled_from(sorted(parsed)))
                parsed[key] = data.draw(
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(max_size=5), st.lists(st.integers(), max_size=3),
                              st.dictionaries(st.text(max_size=3), st.floats(), max_size=2))
                )  # fmt: skip
                header = bytearray(json.dumps(parsed).encode())
    rest = list(frames[1:])
    if rest and data.draw(st.booleans()):
        rest[0] = rest[0][: data.draw(st.integers(0, len(rest[0])))]
    return [bytes(header), *rest]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_any_mutation_decodes_or_is_a_wire_error(frames, data):
    try:
        envelope = decode(mutate(frames, data))
    except WireError:
        return
    assert isinstance(envelope, Envelope)


def test_ten_thousand_generated_messages_decode_or_are_wire_errors():
    """The CI share of the fuzzing (``python -m benchmarks.bench_fuzz`` runs 100,000)."""
    outcomes = {"decoded": 0, "refused": 0}
    for frames in mutated_messages(10_000, seed=13):
        try:
            decode(frames)
            outcomes["decoded"] += 1
        except WireError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 5_000 and outcomes["decoded"] > 0
