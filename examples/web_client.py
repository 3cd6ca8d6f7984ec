"""Stream a recording to `ser-stream serve` over its WebSocket, as a microphone would.

Only the `websockets` package and soundfile: it shows the protocol itself (docs/web.md).
Start `ser-stream serve` in one terminal and this in another:

    python examples/web_client.py talk.wav [--url ws://127.0.0.1:8000/v1/stream] [--token T]

Each record is printed as one JSON line as it arrives; the last is the session_end.
"""

import argparse
import json
import os
import time

import soundfile
from websockets.sync.client import connect


def main() -> None:
    """Send the file at real time (--speed to go faster), print every record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="any file soundfile reads (wav, flac, ogg)")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    parser.add_argument("--token", default=os.environ.get("SER_STREAM_TOKEN"))
    parser.add_argument("--speed", type=float, default=1.0, help="x real time (at most 4)")
    args = parser.parse_args()

    audio, rate = soundfile.read(args.file, dtype="int16", always_2d=True)
    mono = audio.mean(axis=1).astype("int16")  # the service takes one channel
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with connect(args.url, additional_headers=headers) as socket:
        socket.send(json.dumps({"sample_rate": rate}))  # first: the sample rate
        step = rate // 10  # 100 ms of 16-bit little-endian PCM per message
        for start in range(0, mono.size, step):
            socket.send(mono[start : start + step].tobytes())
            time.sleep(0.1 / args.speed)
        socket.send(json.dumps({"type": "end"}))  # no more audio: finish the stream
        for message in socket:  # until the server closes, after the session_end
            print(message, flush=True)


if __name__ == "__main__":
    main()
