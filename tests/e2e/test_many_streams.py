"""Many streams through one `ser-stream up`: several sources, many producers, replicas."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import soundfile

from ser_stream import testing
from ser_stream.testing import noise, records, stage_pid, voiced, wait_for_records, wait_ready
from tests.fixtures import SYNTHETIC_SPEECH_VAD


def up(*args: str) -> subprocess.Popen:
    return testing.start_up(*SYNTHETIC_SPEECH_VAD, *args)


def finish(process: subprocess.Popen) -> str:
    """Wait for the session to end; it must end well."""
    stderr = testing.finish(process)
    assert process.returncode == 0, stderr
    return stderr


def talk(seed: int, utterances: int = 2) -> np.ndarray:
    pieces = [noise(0.5, seed=seed)]
    for k in range(utterances):
        pieces += [voiced(2.0 + k, f0=150 + 40 * seed, seed=seed + k), noise(0.8, seed=seed + k)]
    return np.concatenate(pieces)


def by_stream(rows: list[dict], kind: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row["kind"] == kind:
            out.setdefault(row["stream"], []).append(row)
    return out


def test_several_sources_with_replicas_give_each_stream_its_own_predictions(tmp_path):
    """Two files, VAD sharded over 2 and the model over 2: each stream as if alone, in order."""
    files = []
    for seed in (1, 2):
        files.append(tmp_path / f"talk{seed}.wav")
        soundfile.write(files[-1], talk(seed, utterances=2 + seed), 16_000, subtype="PCM_16")
    together = tmp_path / "together.jsonl"
    process = up("--fast", "--replicas", "vad=2,model=2", "--source", f"file:{files[0]}",
                 "--source", f"file:{files[1]}", "--sink", f"jsonl:{together}")  # fmt: skip
    finish(process)
    alone = []
    for k, path in enumerate(files):
        alone.append(tmp_path / f"alone{k}.jsonl")
        finish(up("--fast", "--source", f"file:{path}", "--sink", f"jsonl:{alone[-1]}"))

    rows = records(together)
    predictions = by_stream(rows, "prediction")
    assert sorted(predictions) == ["stream-1", "stream-2"]
    for k, stream in enumerate(("stream-1", "stream-2")):
        got = predictions[stream]
        assert [p["seq"] for p in got] == sorted(p["seq"] for p in got)  # order kept
        want = [p for p in records(alone[k]) if p["kind"] == "prediction"]
        assert len(got) == len(want) >= 2
        for mine, single in zip(got, want, strict=True):
            assert (mine["t_start"], mine["t_end"], mine["label"]) == (
                single["t_start"], single["t_end"], single["label"])  # fmt: skip
            for label, p in mine["probabilities"].items():
                assert abs(p - single["probabilities"][label]) < 1e-5
    ends = by_stream(rows, "stream_end")
    assert sorted(ends) == ["stream-1", "stream-2"]
    for stream, [end] in ends.items():
        assert end["reason"] == "eof"
        assert end["summary"]["predicted"] == end["summary"]["windows"] == len(predictions[stream])
    session = rows[-1]
    assert session["kind"] == "session_end" and session["summary"]["streams"] == 2
    assert session["summary"]["windows"] == sum(len(p) for p in predictions.values())


def produce(endpoint: str, stream: str, audio: np.ndarray, chunk_s: float = 0.1) -> None:
    import zmq

    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    pcm = np.round(audio * 32767).astype("<i2")
    size = round(16_000 * chunk_s)
    seq = 0
    for start in range(0, pcm.size, size):
        chunk = pcm[start : start + size]
        header = {"v": 1, "kind": "audio", "stream": stream, "seq": seq, "ts": {},
                  "sample_rate": 16_000, "t_start": start / 16_000, "dtype": "int16",
                  "shape": [chunk.size]}  # fmt: skip
        push.send_multipart([json.dumps(header).encode(), chunk.tobytes()])
        seq += 1
        time.sleep(chunk_s / 4)  # four times real time: the streams overlap
    end = {"v": 1, "kind": "end_of_stream", "stream": stream, "seq": seq, "ts": {},
           "reason": "eof"}  # fmt: skip
    push.send_multipart([json.dumps(end).encode()])
    push.close(linger=30_000)
    context.term()


def test_producers_name_their_streams_and_one_ending_leaves_the_others_going(tmp_path):
    endpoint = f"ipc://{tmp_path}/audio-in"
    jsonl = tmp_path / "session.jsonl"
    process = up("--source", f"zmq:{endpoint}", "--streams", "3", "--no-stop-on-silence",
                 "--sink", f"jsonl:{jsonl}")  # fmt: skip
    wait_ready(process)
    lengths = {"alice": 1, "bob": 3, "carol": 4}  # utterances: alice ends first
    producers = [
        threading.Thread(target=produce, args=(endpoint, name, talk(seed, count)))
        for seed, (name, count) in enumerate(lengths.items(), start=1)
    ]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(timeout=120)
    finish(process)
    rows = records(jsonl)
    predictions = by_stream(rows, "prediction")
    assert sorted(predictions) == ["alice", "bob", "carol"]
    ends = {row["stream"]: i for i, row in enumerate(rows) if row["kind"] == "stream_end"}
    assert sorted(ends) == ["alice", "bob", "carol"]
    # alice's end came while the others were still being predicted
    later = [row for row in rows[ends["alice"] :] if row["kind"] == "prediction"]
    assert {row["stream"] for row in later} == {"bob", "carol"}
    for name in lengths:
        summary = rows[ends[name]]["summary"]
        assert summary["windows"] == summary["predicted"] == len(predictions[name])
    assert len(predictions["carol"]) > len(predictions["alice"])
    assert rows[-1]["summary"]["streams"] == 3


def test_a_killed_replica_is_restarted_and_the_streams_go_on(tmp_path):
    path = tmp_path / "talk.wav"
    soundfile.write(path, talk(3, utterances=4), 16_000, subtype="PCM_16")
    jsonl = tmp_path / "session.jsonl"
    process = up("--replicas", "model=2", "--no-stop-on-silence", "--source", f"file:{path}",
                 "--sink", f"jsonl:{jsonl}")  # fmt: skip
    wait_for_records(jsonl, kind="prediction")  # the replicas serve the stream
    os.kill(stage_pid(process.pid, "model"), signal.SIGKILL)
    finish(process)
    rows = records(jsonl)
    summary = rows[-1]["summary"]
    assert sum(summary["restarts"].values()) == 1
    assert next(iter(summary["restarts"])).startswith("model.")
    assert summary["windows"] == summary["predicted"] + summary["dropped"]
    seqs = [row["seq"] for row in rows if row["kind"] == "prediction"]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
