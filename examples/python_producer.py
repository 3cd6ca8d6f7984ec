"""A custom producer: send audio into a pipeline started with `--source zmq:ENDPOINT`.

Only pyzmq, json, numpy and soundfile. Start the pipeline, then this:

    ser-stream up --source zmq:ipc:///tmp/my-audio --streams 1
    python examples/python_producer.py ipc:///tmp/my-audio recording.wav --stream alice

Audio of any rate goes out in 20 ms chunks at real time (or 10x with --fast), then an end of
stream.
The pipeline keeps the stream id you give: run several producers at once, each with its own,
and each gets its own predictions and summary (`--streams N` ends `up` after N streams;
without it, `up` serves producers until Ctrl-C).
"""

import argparse
import json
import time

import numpy as np
import soundfile
import zmq


def message(
    kind: str, stream: str, seq: int, fields: dict, array: np.ndarray | None = None
) -> list[bytes]:
    """The frames of one message: JSON header, then the int16 samples if any."""
    header = {"v": 1, "kind": kind, "stream": stream, "seq": seq, "ts": {}, **fields}
    if array is None:
        return [json.dumps(header).encode()]
    header.update(dtype="int16", shape=list(array.shape))
    return [json.dumps(header).encode(), array.astype("<i2").tobytes()]


def main() -> None:
    """Send the file, then the end of stream."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="send at 10x real time (a zmq: source takes a stream at most 20x)",
    )
    parser.add_argument("--stream", default="producer", help="the stream id (default: producer)")
    args = parser.parse_args()

    audio, rate = soundfile.read(args.file, dtype="int16", always_2d=True)
    mono = audio.mean(axis=1).astype(np.int16)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(args.endpoint)
    chunk = rate // 50
    seq = 0
    for start in range(0, mono.size, chunk):
        samples = mono[start : start + chunk]
        fields = {"sample_rate": rate, "t_start": start / rate}
        push.send_multipart(message("audio", args.stream, seq, fields, samples))
        seq += 1
        time.sleep(samples.size / rate / (10.0 if args.fast else 1.0))
    push.send_multipart(message("end_of_stream", args.stream, seq, {"reason": "eof"}))
    push.close(linger=30_000)  # let the last messages leave, even if the pipeline is slow to start
    context.term()


if __name__ == "__main__":
    main()
