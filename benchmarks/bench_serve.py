"""The web service: upload latency, and live WebSocket streams as their clients see them.

Run: ``.venv/bin/python -m benchmarks.bench_serve [--requests 50] [--clients 1,10,20]``
Writes ``benchmarks/reports/serve.json``. It starts ``ser-stream serve`` (WebRTC VAD, the
shipped model) on a free loopback port, then:

- ``POST /v1/predict`` of a 3 s recording, ``--requests`` times one after another: the
  time from sending to the answer (the first request, which loads the libraries, apart);
- for each number of ``--clients``, that many WebSocket clients at once, each streaming
  its own synthetic utterances at real time in 20 ms messages. A prediction's delay, as
  its client sees it, runs from the moment the client sent the last sample of the window
  (the window's ``t_end`` after its first message) to the prediction's arrival; the
  pipeline's own ``latency_ms`` (capture to model) is reported beside it. The last window
  of an utterance is reported apart: it ends where speech ends, and is known only once the
  VAD's hangover has passed (silence after the speech). Every stream must end with a balanced
  ledger;
- the server process's peak RSS (its stage processes are measured by ``ser-stream bench``).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile
from websockets.sync.client import connect

from benchmarks.common import machine, percentiles, write_report
from ser_stream.testing import SER_STREAM, noise, status_mb, voiced

RATE = 16_000
CHUNK_S = 0.02


def start() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [SER_STREAM, "serve", "--port", "0", "--vad", "webrtc", "--max-streams", "64",
         "--max-streams-per-client", "64"],  # every client comes from 127.0.0.1
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = ""
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"serving on (http://\S+)", line)
        url = found.group(1) if found else url
        if "ready:" in line:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, url
    raise RuntimeError("serve ended before it was ready")


def talk(seed: int, utterances: int = 3) -> np.ndarray:
    pieces = [noise(0.4, seed=seed)]
    for k in range(utterances):
        pieces += [voiced(2.0 + k % 2, f0=130 + 9 * (seed % 9), seed=seed * 7 + k),
                   noise(0.7, seed=seed * 7 + k + 1)]  # fmt: skip
    return np.round(np.concatenate(pieces) * 32767).astype(np.int16)


def upload_latency(url: str, requests: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "three-seconds.wav"
        soundfile.write(path, talk(0, 1)[: 3 * RATE], RATE)
        times = []
        with httpx.Client(timeout=60) as client:
            for _ in range(requests + 1):
                with path.open("rb") as handle:
                    began = time.perf_counter()
                    response = client.post(f"{url}/v1/predict", files={"file": handle})
                    times.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
    return {"first_ms": round(times[0], 1), **percentiles(times[1:]), "requests": requests}


def one_client(url: str, seed: int, out: dict) -> None:
    audio = talk(seed)
    step = int(RATE * CHUNK_S)
    arrivals: list[tuple[float, dict]] = []
    with connect(url, open_timeout=30) as socket:
        socket.send(json.dumps({"sample_rate": RATE}))
        json.loads(socket.recv(timeout=30))

        def receive() -> None:
            for message in socket:
                arrivals.append((time.perf_counter(), json.loads(message)))

        reader = threading.Thread(target=receive, daemon=True)
        began = time.perf_counter()
        reader.start()
        for k, first in enumerate(range(0, audio.size, step)):
            socket.send(audio[first : first + step].tobytes())
            time.sleep(max(0.0, began + (k + 1) * CHUNK_S - time.perf_counter()))
        socket.send(json.dumps({"type": "end"}))
        reader.join(60)
    records = [record for _, record in arrivals]
    ends = [r["t"] for r in records if r["kind"] == "event" and r["event"] == "speech_end"]
    for at, record in arrivals:
        if record["kind"] != "prediction":
            continue
        # An utterance's last window is known only once the VAD's hangover has passed.
        last = any(abs(record["t_end"] - t) < 0.02 for t in ends)
        key = "last_delays_ms" if last else "delays_ms"
        out.setdefault(key, []).append((at - began - record["t_end"]) * 1000)
    out["pipeline_ms"] = [r["latency_ms"] for r in records if r["kind"] == "prediction"]
    out["end"] = records[-1] if records else {}


def streams(url: str, clients: int) -> dict:
    results = [{} for _ in range(clients)]
    threads = [
        threading.Thread(target=one_client, args=(url, seed, results[seed]))
        for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # clients arrive one after another, as people do
    for thread in threads:
        thread.join(180)
    ends = [r.get("end", {}) for r in results]
    balanced = sum(
        1 for e in ends if e.get("kind") == "session_end" and e["summary"]["ledger"] == "balanced"
    )
    delays = [d for r in results for d in r.get("delays_ms", [])]
    last = [d for r in results for d in r.get("last_delays_ms", [])]
    return {
        "clients": clients,
        "streams_ended_balanced": balanced,
        "predictions": len(delays) + len(last),
        "windows": sum(e.get("summary", {}).get("windows", 0) for e in ends),
        "client_delay": percentiles(delays),
        "client_delay_last_window": percentiles(last),
        "pipeline_latency": percentiles([d for r in results for d in r.get("pipeline_ms", [])]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", default="1,10,20")
    args = parser.parse_args()
    process, url = start()
    try:
        report = {"machine": machine(), "upload_3s": upload_latency(url, args.requests)}
        ws_url = url.replace("http://", "ws://") + "/v1/stream"
        report["websocket"] = [streams(ws_url, int(n)) for n in args.clients.split(",")]
        report["server_peak_rss_mb"] = round(status_mb(process.pid, "VmHWM") or float("nan"), 1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    write_report("serve", report)


if __name__ == "__main__":
    main()
