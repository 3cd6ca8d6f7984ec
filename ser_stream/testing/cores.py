"""Driving streaming cores and fuzzing wire decoders, in-process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def run_core(core, chunks: Iterable[np.ndarray]) -> list:
    """Push every chunk through a streaming core, then flush it; return all outputs in order."""
    outputs: list = []
    for chunk in chunks:
        outputs.extend(core.push(chunk))
    outputs.extend(core.flush())
    return outputs


def mutated_messages(count: int, *, seed: int = 0) -> Iterator[list[bytes]]:
    """``count`` malformed or odd variants of valid wire messages, for fuzzing decoders.

    Each starts from a valid message of every kind and changes one to four things: flipped,
    cut or inserted header bytes, a field replaced by a value of any JSON type, huge
    integers, deep nesting, or a cut array frame. Deterministic for a ``seed``.
    """
    import json
    import random

    from ser_stream import messages as m
    from ser_stream.labels import LABELS
    from ser_stream.wire import Envelope, encode

    rng = random.Random(seed)
    samples = np.zeros(480, np.int16)
    floats = samples.astype(np.float32)
    bodies = [
        m.Audio(samples, 16_000, 0.0), m.Window(floats, 0.0, 0.03, 0, 0),
        m.Noise(floats, 0.0, 0.03), m.Features(np.zeros((4, 3), np.float32), 0, 1, 0),
        m.Prediction(np.full(len(LABELS), 1 / len(LABELS), np.float32), LABELS[0], 0.0, 3.0, 0),
        m.Event("gap", 1.0, {"dropped_s": 0.5}), m.EndOfStream("eof"), m.ErrorMsg("x", "vad"),
        m.Heartbeat("vad"),
    ]  # fmt: skip
    valid = [encode(Envelope("s", k, body, {"capture": 1})) for k, body in enumerate(bodies)]
    odd_values = [None, True, -1, 2**63, 1e308, "", "x" * 200, [], {}, [1, [2]], {"a": 1}, -0.0]

    def odd_value():
        kind = rng.randrange(4)
        if kind == 0:
            return rng.choice(odd_values)
        if kind == 1:  # nesting
            value: list = []
            for _ in range(rng.randint(1, 50)):
                value = [value]
            return value
        if kind == 2:
            return rng.getrandbits(rng.choice([8, 64, 200]))
        return rng.uniform(-1e9, 1e9)

    for _ in range(count):
        frames = list(rng.choice(valid))
        header = bytearray(frames[0])
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(6)
            if action == 0 and header:
                header[rng.randrange(len(header))] = rng.randrange(256)
            elif action == 1 and header:
                header = header[: rng.randrange(len(header) + 1)]
            elif action == 2:
                at = rng.randrange(len(header) + 1)
                header[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif action == 3:
                try:
                    parsed = json.loads(bytes(header))
                except (ValueError, RecursionError):
                    continue
                if isinstance(parsed, dict) and parsed:
                    parsed[rng.choice(sorted(parsed))] = odd_value()
                    header = bytearray(json.dumps(parsed).encode())
            elif action == 4:
                depth = rng.choice([10, 1000, 100_000])
                header = bytearray(b'{"v":1,"kind":"event","stream":"s","seq":0,"ts":'
                                   + b"[" * depth + b"]" * depth + b"}")  # fmt: skip
            elif len(frames) > 1:
                frames[1] = frames[1][: rng.randrange(len(frames[1]) + 1)]
        yield [bytes(header), *frames[1:]]
