"""A custom sink: subscribe to a running pipeline and print each emotion as it is predicted.

Only pyzmq, json and numpy: no ser-stream import, so it shows the wire schema itself
(docs/wire.md). Run `ser-stream up` in one terminal and this in another:

    python examples/python_sink.py [ENDPOINT]      # default: where `ser-stream up` publishes
"""

import argparse
import json
import os
import tempfile

import numpy as np
import zmq

LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised", "calm"]


def main() -> None:
    """Print predictions until stopped (or --count of them)."""
    default = f"ipc://{tempfile.gettempdir()}/ser-stream-{os.getuid()}.pub"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", nargs="?", default=default)
    parser.add_argument("--count", type=int, default=0, help="stop after N predictions (0: never)")
    args = parser.parse_args()

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(args.endpoint)
    seen = 0
    last_seq = {}
    while True:
        frames = sub.recv_multipart()
        header = json.loads(frames[0])
        stream = header["stream"]
        if stream in last_seq and header["seq"] != last_seq[stream] + 1:
            print(f"gap: {header['seq'] - last_seq[stream] - 1} messages of {stream} missed")
        last_seq[stream] = header["seq"]
        if header["kind"] == "prediction":
            probabilities = np.frombuffer(frames[1], dtype="<f4")
            top = int(np.argmax(probabilities))
            print(
                f"{stream} {header['t_start']:6.2f}-{header['t_end']:6.2f} s: "
                f"{LABELS[top]} {probabilities[top]:.0%}",
                flush=True,
            )
            seen += 1
            if args.count and seen >= args.count:
                break
        elif header["kind"] == "end_of_stream":
            print(f"{stream} ended ({header['reason']})", flush=True)
    context.destroy(linger=0)


if __name__ == "__main__":
    main()
