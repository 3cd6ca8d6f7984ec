"""``stage``: run one pipeline stage (or a capture) in this process, as the supervisor does."""

from __future__ import annotations

import argparse
import json

from ser_stream.cli.common import curve_keys
from ser_stream.errors import InputError
from ser_stream.settings import HEARTBEAT_S, HWM

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``stage`` to the command line."""
    stage = commands.add_parser("stage", help="run one pipeline stage in this process")
    stage.add_argument("name", help="capture, vad, denoise, features or model")
    stage.add_argument(
        "--in",
        dest="inputs",
        action="append",
        default=[],
        help="upstream endpoint (repeatable): tcp://HOST:PORT, ipc://PATH, dns:HOST:PORT "
        "(every address of HOST, looked up again as it changes) or file:PATH (endpoints "
        "listed one per line, read again as it changes)",
    )
    stage.add_argument("--source", help="capture: mic[:DEVICE], file:PATH, stdin or zmq:ENDPOINT")
    stage.add_argument(
        "--rate",
        type=int,
        default=None,
        help="capture: stdin PCM rate (Hz; default: the pipeline's)",
    )
    stage.add_argument("--fast", action="store_true", help="capture: do not pace at real time")
    stage.add_argument("--stream", default="stream-1", help="capture: the stream id")
    stage.add_argument(
        "--start-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="capture: start a file this far in (a restarted capture resumes)",
    )
    stage.add_argument(
        "--start-clock",
        type=float,
        default=None,
        metavar="MONOTONIC",
        help="capture (mic): the system's monotonic clock when the stream was at --start-s",
    )
    stage.add_argument(
        "--out",
        dest="outputs",
        action="append",
        required=True,
        help="endpoint to bind; repeat for one per shard of the next stage",
    )
    stage.add_argument("--publish", action="store_true", help="PUB output (for subscribers)")
    stage.add_argument(
        "--collect", action="store_true", help="connect --out to a collector that binds it"
    )
    stage.add_argument("--replica", type=int, default=0, help="which replica this is (from 0)")
    stage.add_argument(
        "--generation",
        type=int,
        default=0,
        help="restarts of this stage before this process (its sequence numbers start anew)",
    )
    stage.add_argument("--model", metavar="DIR", help="model artifact folder (default: shipped)")
    stage.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage setting, VALUE as JSON (e.g. stop_on_silence_s=null)",
    )
    stage.add_argument("--hwm", type=int, default=HWM, help="socket high-water mark (messages)")
    stage.add_argument("--control", metavar="ENDPOINT", help="supervisor endpoint for liveness")
    stage.add_argument("--curve", metavar="KEYDIR", help="CURVE keys for tcp:// endpoints")
    stage.add_argument(
        "--listen-fd",
        dest="listen_fds",
        action="append",
        default=[],
        metavar="ENDPOINT=FD",
        help="bind ENDPOINT on this inherited listening socket (up hands its tcp ports so)",
    )
    stage.add_argument(
        "--resume",
        metavar="JSON",
        help='where a predecessor got to in each stream, e.g. {"stream-1": 12.5} (seconds)',
    )
    stage.add_argument(
        "--health-file",
        metavar="PATH",
        help="say every heartbeat in PATH that the process lives and how its work goes "
        "(for an orchestrator's probe: `ser-stream health PATH`)",
    )
    stage.set_defaults(run=_stage, one_thread=True)


def _stage(args: argparse.Namespace) -> int:
    import asyncio

    from ser_stream.artifact import load_artifact
    from ser_stream.peers import check_input
    from ser_stream.runtime import Endpoints, StageRuntime
    from ser_stream.stage import StageContext
    from ser_stream.stages import STAGES
    from ser_stream.transport import RuntimeSettings

    if args.name == "capture":
        return _capture(args)
    if args.name not in STAGES:
        names = ", ".join(["capture", *STAGES])
        raise InputError(f"no stage {args.name!r}; choose one of {names}")
    if not args.inputs:
        raise InputError(f"stage {args.name} needs --in ENDPOINT (its upstream)")
    for item in args.inputs:
        check_input(item)
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    context = StageContext(args.name, options, load_artifact(args.model))
    runtime = StageRuntime(
        STAGES[args.name],
        context,
        Endpoints(
            tuple(args.inputs),
            tuple(args.outputs),
            publish=args.publish,
            collect=args.collect,
            control=args.control,
            replica=args.replica,
        ),
        RuntimeSettings(hwm=args.hwm, heartbeat_s=HEARTBEAT_S, health_file=args.health_file),
        generation=args.generation,
        keys=curve_keys(args.curve),
        resume=_resume(args.resume),
        listen_fds=_listen_fds(args.listen_fds),
    )
    return asyncio.run(runtime.run())


def _listen_fds(items: list[str]) -> dict[str, int]:
    fds = {}
    for item in items:
        endpoint, sep, fd = item.rpartition("=")
        if not sep or not fd.isdigit():
            raise InputError(f"--listen-fd {item!r} is not ENDPOINT=FD")
        fds[endpoint] = int(fd)
    return fds


def _resume(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        positions = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--resume {text!r} is not JSON") from exc
    if not isinstance(positions, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in positions.values()
    ):
        raise InputError('--resume takes {"STREAM": SECONDS, ...}')
    return {str(k): float(v) for k, v in positions.items()}


def _capture(args: argparse.Namespace) -> int:
    import asyncio
    from functools import partial

    from ser_stream.producer_source import producer_frames
    from ser_stream.settings import FRAME_MS
    from ser_stream.source_runtime import SourceRuntime, read_in_thread
    from ser_stream.stages.capture import (
        FAST_FRAME_MS,
        SOURCE_FORMS,
        check_source,
        file_frames,
        parse_source,
        pcm_frames,
    )
    from ser_stream.stages.mic import mic_frames
    from ser_stream.transport import RuntimeSettings

    if not args.source:
        raise InputError(f"capture needs --source ({SOURCE_FORMS})")
    rate = {} if args.rate is None else {"rate": args.rate}  # else the pipeline's own
    source = parse_source(args.source, **rate, realtime=not args.fast)
    keys = curve_keys(args.curve)
    try:
        if source.kind != "mic":  # the microphone source opens and checks the device itself
            check_source(source, decode_all=False)  # `up` decoded it all before it started
        if source.kind == "file":
            frames = read_in_thread(
                file_frames(
                    source.target,
                    frame_ms=FRAME_MS if source.realtime else FAST_FRAME_MS,
                    start_s=args.start_s,
                )
            )
        elif source.kind == "stdin":
            frames = read_in_thread(pcm_frames(rate=source.rate, start_s=args.start_s))
        elif source.kind == "mic":
            frames = read_in_thread(
                mic_frames(source.target, start_s=args.start_s, start_clock=args.start_clock)
            )
        else:  # on the process's loop, its socket from the runtime's transport (and keys)
            frames = partial(producer_frames, endpoint=source.target)
    except InputError as exc:  # the runtime sends the reason downstream, so the session ends
        frames = read_in_thread(_failing(exc))
    runtime = SourceRuntime(
        args.stream,
        frames,
        args.outputs,
        # A microphone and a producer pace themselves.
        realtime=source.realtime and source.kind in ("file", "stdin"),
        named_streams=source.kind == "zmq",
        settings=RuntimeSettings(
            hwm=args.hwm, heartbeat_s=HEARTBEAT_S, health_file=args.health_file
        ),
        control=args.control,
        replica=args.replica,
        generation=args.generation,
        keys=keys,
        listen_fds=_listen_fds(args.listen_fds),
    )
    return asyncio.run(runtime.run())


def _failing(exc: Exception):
    """A source that fails at its first frame with ``exc``."""
    raise exc
    yield  # a generator: the runtime pulls the failure like any frame
