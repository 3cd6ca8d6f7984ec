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


def runtime_dir() -> str:
    """The private folder where `ser-stream up` binds its endpoints (see docs/wire.md)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "ser-stream")
    default = os.path.join(tempfile.gettempdir(), f"ser-stream-{os.getuid()}")
    if os.path.lexists(default) and os.lstat(default).st_uid != os.getuid():
        return os.path.expanduser("~/.cache/ser-stream-run")  # another user took the name
    return default


def main() -> None:
    """Print predictions until stopped (or --count of them)."""
    default = f"ipc://{runtime_dir()}/pub"
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
        if header["kind"] == "heartbeat" or stream == "-":  # liveness, or a report of no stream
            continue
        seq, previous = header["seq"], last_seq.get(stream)
        # A restarted stage numbers from its new generation (seq >> 32): not a gap.
        if previous is not None and seq >> 32 == previous >> 32 and seq != previous + 1:
            print(f"gap: {seq - previous - 1} messages of {stream} missed")
        last_seq[stream] = seq
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
