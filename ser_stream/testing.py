"""Helpers for tests of cores and stages: synthetic audio and a core driver.

Shipped with the package so users testing their own cores or sinks can use them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = [
    "mutated_messages",
    "noise",
    "room_tone",
    "run_core",
    "silence",
    "tone",
    "voiced",
]

RATE = 16_000


def tone(
    seconds: float, frequency: float = 440.0, *, amplitude: float = 0.3, rate: int = RATE
) -> np.ndarray:
    """A pure sine tone, float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def silence(seconds: float, *, rate: int = RATE) -> np.ndarray:
    """Digital silence, float32."""
    return np.zeros(round(seconds * rate), dtype=np.float32)


def noise(seconds: float, *, level: float = 0.003, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Quiet white noise (room tone), float32."""
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def room_tone(
    seconds: float, dbfs: float, *, kind: str = "hiss", seed: int = 0, rate: int = RATE
) -> np.ndarray:
    """Room noise at an RMS level in dBFS, float32: a real room is never digitally silent.

    ``kind`` is ``hiss`` (white noise), ``hum`` (50 Hz mains and harmonics) or ``fan``
    (brown-ish noise, most energy low).
    """
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    if kind == "hiss":
        out = rng.standard_normal(n)
    elif kind == "hum":
        t = np.arange(n) / rate
        out = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3, 5))
        out = out + 0.05 * rng.standard_normal(n)
    elif kind == "fan":
        out = np.cumsum(rng.standard_normal(n))
        out = out - np.convolve(out, np.ones(401) / 401, mode="same")  # no drift below ~40 Hz
    else:
        raise ValueError(f"room tone kind {kind!r} is not hiss, hum or fan")
    rms = np.sqrt(np.mean(np.square(out))) + 1e-12
    return (out * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def voiced(
    seconds: float, *, f0: float = 140.0, amplitude: float = 0.4, seed: int = 0, rate: int = RATE
) -> np.ndarray:
    """A speech-like signal that WebRTC VAD takes for speech.

    A glottal-like harmonic series with a wandering pitch, shaped by syllable-rate amplitude
    modulation, over quiet noise.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))
    out = signal * envelope
    out = amplitude * out / (np.max(np.abs(out)) + 1e-9)
    return (out + noise(seconds, level=0.002, seed=seed + 1, rate=rate)).astype(np.float32)


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

    from ser_stream.labels import LABELS
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
    )  # fmt: skip
    from ser_stream.wire import Envelope, encode

    rng = random.Random(seed)
    samples = np.zeros(480, np.int16)
    floats = samples.astype(np.float32)
    bodies = [
        Audio(samples, 16_000, 0.0), Window(floats, 0.0, 0.03, 0, 0), Noise(floats, 0.0, 0.03),
        Features(np.zeros((4, 3), np.float32), 0, 1, 0),
        Prediction(np.full(len(LABELS), 1 / len(LABELS), np.float32), LABELS[0], 0.0, 3.0, 0),
        Event("gap", 1.0, {"dropped_s": 0.5}), EndOfStream("eof"), ErrorMsg("x", "vad"),
        Heartbeat("vad"),
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
