"""A producer that floods malformed messages between its good audio keeps its good stream.

Over a `zmq:` source under `--fast`, five malformed messages follow every good frame, sent
as fast as the socket takes them. The good stream must end as its producer ended it, with
its windows predicted, never as "producer went silent" (time the capture spent blocked on
the stages is not the producer's silence), and every malformed message must be counted in
the error records under stream ``-``.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from ser_stream.messages import Audio, EndOfStream
from ser_stream.testing import finish, noise, voiced, wait_for
from ser_stream.wire import Envelope, encode
from tests.faults.helpers import assert_ledger_holds, start_up

BAD_PER_FRAME = 5
FRAME = 320  # 20 ms at 16 kHz
SPEECH = np.round(
    np.concatenate(
        [noise(0.5), voiced(2.5), noise(0.8), voiced(2.5, f0=160), noise(0.8), voiced(2.5),
         noise(1.0)]
    ) * 32767
).astype(np.int16)  # fmt: skip

MALFORMED = (
    [b"\xff not json"],
    [b'{"v": 1, "kind": "audio"}'],
    [b'{"v": 99, "kind": "audio", "stream": "good", "seq": 0, "ts": {}}'],
    [b'{"v": 1, "kind": "no such kind", "stream": "good", "seq": 0, "ts": {}}'],
    [b"[1, 2, 3]"],
)
assert len(MALFORMED) == BAD_PER_FRAME


def flood(endpoint: str, sent: list[int], done: threading.Event) -> None:
    """The good stream in 20 ms frames, each followed by the malformed messages.

    Appends the count of malformed messages to ``sent`` once all are sent, and keeps its
    socket open until ``done`` (a producer that closes at once may leave the last messages
    unsent: they would not reach the capture for as long as the socket lingers).
    """
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    bad = 0
    seq = 0
    for seq, at in enumerate(range(0, SPEECH.size, FRAME)):
        body = Audio(SPEECH[at : at + FRAME], 16_000, at / 16_000)
        push.send_multipart(encode(Envelope("good", seq, body)))
        for message in MALFORMED:
            push.send_multipart(message)
            bad += 1
    push.send_multipart(encode(Envelope("good", seq + 1, EndOfStream("eof"))))
    sent.append(bad)
    done.wait()
    push.close(linger=0)
    context.term()


def written(jsonl: Path) -> list[dict]:
    """The records written so far (a line being written is left for the next look)."""
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines(keepends=True)
            if line.endswith("\n")]  # fmt: skip


def counted_malformed(found: list[dict]) -> int:
    """Malformed messages the error records under ``-`` account for."""
    total = 0
    for record in found:
        if record["kind"] != "error" or record["stream"] != "-":
            continue
        more = re.match(r"(\d+) more producer messages skipped", record["reason"])
        total += int(more.group(1)) if more else record["reason"].startswith(
            "producer message skipped")  # fmt: skip
    return total


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_flood_of_malformed_messages_keeps_the_good_stream(tmp_path):
    endpoint = f"ipc://{tmp_path}/in"
    jsonl = tmp_path / "s.jsonl"
    with (tmp_path / "up.log").open("w") as log:
        up = start_up(f"zmq:{endpoint}", jsonl, "--fast", stderr=log)
    sent: list[int] = []
    done = threading.Event()
    producer = threading.Thread(target=flood, args=(endpoint, sent, done), daemon=True)
    try:
        wait_for(jsonl.exists, 120)  # the sinks open once every stage is up
        producer.start()

        def good_ended() -> list[dict]:
            return [r for r in written(jsonl) if r["kind"] == "stream_end"]

        (end,) = wait_for(good_ended, 240)
        wait_for(lambda: sent, 60)
        # The last counts are told once nothing else waits in the capture.
        wait_for(lambda: counted_malformed(written(jsonl)) >= sent[0], 60)
    finally:
        done.set()
        up.send_signal(signal.SIGINT)
        finish(up, 60)
    found = written(jsonl)
    assert end["stream"] == "good" and end["reason"] == "eof", end  # never ended as silent
    predictions = [r for r in found if r["kind"] == "prediction" and r["stream"] == "good"]
    assert_ledger_holds(end["summary"], predictions)
    assert end["summary"]["predicted"] >= 3 and end["summary"]["dropped"] == 0, end
    assert not [r for r in found if r["kind"] == "error" and r["stream"] == "good"]
    assert sent == [BAD_PER_FRAME * -(-SPEECH.size // FRAME)]
    assert counted_malformed(found) == sent[0]


def test_time_the_capture_spends_blocked_downstream_is_not_the_producers_silence(tmp_path):
    """The source on a loop and transport as the capture runs it, held up after its first
    items longer than the silence that ends a stream.

    Each hold stands for a send that waits on a full queue downstream (the loop runs on, the
    source waits at its last item): the producer has sent on meanwhile, so its stream must
    end as it ended it, every malformed message counted.
    """
    import asyncio
    from collections import Counter

    from ser_stream.logs import get_logger
    from ser_stream.messages import ErrorMsg, Heartbeat
    from ser_stream.producer_source import producer_frames
    from ser_stream.transport import RuntimeSettings, Transport

    endpoint = f"ipc://{tmp_path}/in"
    sent: list[int] = []
    done = threading.Event()
    found: list[dict] = []

    async def capture() -> tuple[str, str] | None:
        transport = Transport(RuntimeSettings(), Counter(), get_logger(stage="test"))
        transport.start(signals=False)
        frames = producer_frames(transport, endpoint, silent_s=0.1)
        ending = None
        held = 0
        try:
            assert isinstance(await anext(frames), Heartbeat)  # bound: the producer may connect
            threading.Thread(target=flood, args=(endpoint, sent, done), daemon=True).start()
            async for item in frames:
                if isinstance(item, Heartbeat):
                    continue
                stream, body = item[0], item[1]
                if isinstance(body, ErrorMsg):
                    found.append({"kind": "error", "stream": stream, "reason": body.reason})
                elif isinstance(body, EndOfStream):
                    ending = (stream, body.reason)
                if ending and sent and counted_malformed(found) >= sent[0]:
                    break
                if held < 10:
                    held += 1
                    await asyncio.sleep(0.2)  # blocked downstream, twice the silence that ends
        finally:
            done.set()
            await frames.aclose()
            transport.finish()
        return ending

    assert asyncio.run(capture()) == ("good", "eof")
    assert all(record["stream"] == "-" for record in found), found
    assert counted_malformed(found) == sent[0]
