"""``keys``, ``bench``, ``devices`` and ``tap``: the tools around a pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ser_stream.cli.common import curve_keys, replicas

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``keys``, ``bench``, ``devices`` and ``tap`` to the command line."""
    keys = commands.add_parser("keys", help="make CURVE keys for tcp:// endpoints")
    keys.add_argument("folder", metavar="KEYDIR", help="folder to write (mode 0700)")
    keys.set_defaults(run=_keys)

    bench = commands.add_parser(
        "bench", help="measure the whole pipeline: latency, throughput, streams, memory"
    )
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    bench.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="report folder (Markdown, PNG; default: ~/.cache/ser-stream/bench)",
    )
    bench.add_argument(
        "--smoke", action="store_true", help="a short run (CI): seconds, not minutes"
    )
    bench.add_argument("--max-streams", type=int, help="stop the concurrent sweep here")
    bench.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="STAGE=N",
        help="the replicas of a second streams sweep (default vad=2)",
    )
    bench.add_argument("--no-original", action="store_true", help="skip the original's approach")
    bench.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: the streams sweep with the model on 1, 2 and 3 simulated Ray nodes on this "
        "machine, beside the local up, and the engine's own cost (cluster.md)",
    )
    bench.set_defaults(run=_bench, one_thread=True)

    devices = commands.add_parser("devices", help="list the microphones (audio inputs)")
    devices.set_defaults(run=_devices)

    tap = commands.add_parser("tap", help="print what a running pipeline publishes")
    tap.add_argument("endpoint", nargs="?", help="PUB endpoint (default: where up publishes)")
    tap.add_argument("--once", action="store_true", help="exit after the first end of stream")
    tap.add_argument("--curve", metavar="KEYDIR", help="CURVE keys for a tcp:// endpoint")
    tap.set_defaults(run=_tap)


def _keys(args: argparse.Namespace) -> int:
    from ser_stream.security import create_keys

    folder = create_keys(Path(args.folder))
    print(f"keys written to {folder}: give producers client.key and client.key_secret "
          "(and server.key); add other clients' public keys to authorized/")  # fmt: skip
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ser_stream.bench import default_out
    from ser_stream.bench.main import BenchOptions, run_bench

    options = BenchOptions.smoke_run() if args.smoke else BenchOptions()
    changes: dict = {"replicas": replicas(args.replicas) or options.replicas}
    if not args.smoke and changes["replicas"] is None:
        changes["replicas"] = {"vad": 2}  # Silero (the model's VAD) is what many streams wait on
    if args.max_streams:
        changes["max_streams"] = args.max_streams
    if args.no_original:
        changes["original"] = False
    options = replace(options, **changes)
    out = Path(args.out) if args.out else default_out()
    if args.engine == "ray":
        return _bench_cluster(options, out, Path(args.json) if args.json else None)
    result = run_bench(options, out, Path(args.json) if args.json else None)
    print(f"ser-stream: report written to {out / 'bench.md'}", file=sys.stderr)
    for name, row in result["targets"].items():
        print(f"{name:<45} {row['figure']:>10}  {'met' if row['met'] else 'NOT met'}")
    return 0


def _bench_cluster(options, out: Path, json_path: Path | None) -> int:
    """``bench --engine ray``: the cluster sweep alone, its own report (cluster.md)."""
    import json
    import shlex

    from ser_stream.bench.cluster import markdown, measure_cluster
    from ser_stream.bench.main import STREAM_COUNTS
    from ser_stream.bench.session import workdir
    from ser_stream.bench.stats import machine
    from ser_stream.errors import InputError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise InputError("bench --engine ray needs Ray: pip install 'ser-stream[ray]'") from None
    counts = [n for n in STREAM_COUNTS if n <= options.max_streams]
    with workdir() as folder:
        result = {"machine": machine(), "command": shlex.join(["ser-stream", *sys.argv[1:]])}
        result.update(measure_cluster(counts, options.stream_s, Path(folder)))
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    (out / "cluster.json").write_text(text)
    if json_path is not None:
        json_path.write_text(text)
    (out / "cluster.md").write_text(markdown(result))
    print(f"ser-stream: report written to {out / 'cluster.md'}", file=sys.stderr)
    for name, config in result.items():
        if isinstance(config, dict) and "max_streams" in config:
            print(f"{name:<20} {config['max_streams']:>4} streams at p95 <= 100 ms")
    return 0


def _devices(args: argparse.Namespace) -> int:
    from ser_stream.stages.mic import input_devices

    found = input_devices()
    if not found:
        print("no audio input devices; plug in a microphone, or use --source file:PATH")
        return 1
    print(f"{'':2}{'#':>3}  {'name':<40} {'host API':<12} {'ch':>3} {'rate':>6}  16 kHz")
    for device in found:
        mark = "*" if device.default else " "
        native = "yes" if device.records_16k else "resampled"
        print(f"{mark:2}{device.index:>3}  {device.name[:40]:<40} {device.host_api[:12]:<12} "
              f"{device.channels:>3} {device.default_rate:>6}  {native}")  # fmt: skip
    print("* default input; record one with: ser-stream up --source mic:NUMBER (or part of a name)")
    return 0


def _tap(args: argparse.Namespace) -> int:
    from ser_stream.supervisor.folder import default_publish_endpoint
    from ser_stream.tap import records

    endpoint = args.endpoint or default_publish_endpoint()
    print(f"ser-stream: listening on {endpoint}", file=sys.stderr, flush=True)
    for record in records(endpoint, keys=curve_keys(args.curve)):
        try:
            print(json.dumps(record), flush=True)
        except BrokenPipeError:  # `ser-stream tap | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if args.once and record["kind"] == "end_of_stream":
            return 0
    print("ser-stream: the session ended; tap stops", file=sys.stderr, flush=True)
    return 0
