"""Wire fuzzing: generated malformed messages through every decoder that reads other programs.

Run: ``.venv/bin/python -m benchmarks.bench_fuzz [--messages 100000]``
Writes ``benchmarks/reports/fuzz.json``. Each decoder gets ``--messages`` variants of valid
messages (:func:`ser_stream.testing.mutated_messages`): the wire decoder itself (every stage,
the capture's producer socket and ``tap`` use it) and the supervisor's collector (decode,
then ordering, accounting and the sinks). Anything but an envelope or a ``WireError`` from
the decoder, or any exception from the collector, is a crash; the report counts them (the
target is zero) and times each message (p50/p95/p99).
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections import Counter

import zmq

from benchmarks.common import machine, percentiles, write_report
from ser_stream.errors import WireError
from ser_stream.labels import LABELS
from ser_stream.sinks import JSONLSink
from ser_stream.testing import mutated_messages
from ser_stream.wire import decode


def fuzz_decoder(count: int, seed: int) -> dict:
    outcomes: Counter = Counter()
    times, crashes = [], []
    for frames in mutated_messages(count, seed=seed):
        started = time.perf_counter()
        try:
            decode(frames)
            outcomes["decoded"] += 1
        except WireError:
            outcomes["wire_error"] += 1
        except Exception as exc:  # a crash: what the fuzzing is for
            outcomes["crash"] += 1
            crashes.append(f"{type(exc).__name__}: {exc}"[:200])
        times.append((time.perf_counter() - started) * 1000)
    return {
        "messages": count,
        **outcomes,
        "crashes": crashes[:10],
        "per_message": percentiles(times),
    }


def fuzz_collector(count: int, seed: int, sink_path: str) -> dict:
    from ser_stream.supervisor.collector import Collector
    from ser_stream.supervisor.ledger import Run

    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    outcomes: Counter = Counter()
    times, crashes = [], []
    sink = JSONLSink(sink_path)
    sink.open(LABELS)
    run = Run()
    collector = Collector(run, [sink], LABELS, publisher, keeps_ledger=True)
    try:
        for frames in mutated_messages(count, seed=seed):
            started = time.perf_counter()
            try:
                collector.take(frames)
                outcomes["taken"] += 1
            except Exception as exc:
                outcomes["crash"] += 1
                crashes.append("".join(traceback.format_exception_only(exc)).strip()[:200])
            times.append((time.perf_counter() - started) * 1000)
        collector.end_the_rest("signal")
        sink.close("signal", run.summary(LABELS))
    finally:
        context.destroy(linger=0)
    outcomes["counted_as_errors"] = len(run.errors)
    return {
        "messages": count,
        **outcomes,
        "crashes": crashes[:10],
        "per_message": percentiles(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = {
            "machine": machine(),
            "decoder": fuzz_decoder(args.messages, args.seed),
            "collector": fuzz_collector(args.messages, args.seed + 1, f"{folder}/s.jsonl"),
        }
    report["crashes"] = report["decoder"].get("crash", 0) + report["collector"].get("crash", 0)
    write_report("fuzz", report)


if __name__ == "__main__":
    main()
