"""``up`` and ``serve``: the whole pipeline, on the console or behind a web server."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ser_stream.cli.common import curve_keys, replicas
from ser_stream.errors import InputError
from ser_stream.settings import FIRST_WINDOW_S, STOP_ON_SILENCE_S

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``up`` and ``serve`` to the command line."""
    up = commands.add_parser("up", help="run the whole pipeline, one process per stage")
    up.add_argument(
        "--source",
        action="append",
        default=None,
        help="mic, mic:DEVICE, file:PATH, stdin or zmq:ENDPOINT; repeat for several streams "
        "(default: the microphone if there is one, else the bundled sample)",
    )
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="STAGE=N",
        help="processes of a stage, e.g. model=2 (repeatable; default 1 each)",
    )
    up.add_argument(
        "--streams",
        type=int,
        default=None,
        metavar="N",
        help="end after N streams have ended (default: when the sources are done; "
        "a zmq: source serves until Ctrl-C)",
    )
    up.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    up.add_argument("--fast", action="store_true", default=None, help="do not pace a file")
    up.add_argument("--rate", type=int, default=None, help="sample rate of stdin PCM (Hz)")
    up.add_argument("--sink", action="append", default=[], help="console (default), jsonl:PATH")
    up.add_argument(
        "--stop-on-silence",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end the session after this much silence following speech "
        f"(default {STOP_ON_SILENCE_S:g})",
    )
    up.add_argument("--no-stop-on-silence", action="store_true", help="predict to the end")
    up.add_argument(
        "--no-speech-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="end the session if no speech comes this long after the start (default: wait)",
    )
    up.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default=None,
        help="VAD engine, paced or --fast (default: the model's, as predict)",
    )
    up.add_argument(
        "--first-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="first emotion of an utterance after this much speech "
        f"(default {FIRST_WINDOW_S:g}; 0: full window)",
    )
    up.add_argument("--plot", metavar="PATH.png", help="write the session's plot at its end")
    up.add_argument("--model", metavar="DIR", help="model artifact folder (default: shipped)")
    up.add_argument("--publish", metavar="ENDPOINT", help="PUB endpoint for subscribers (tap)")
    up.add_argument(
        "--publish-plaintext",
        action="store_true",
        help="allow a tcp:// --publish endpoint without CURVE (anyone reaching it reads all)",
    )
    up.add_argument("--tcp", action="store_true", help="tcp:// on loopback between stages")
    up.add_argument(
        "--curve",
        metavar="KEYDIR",
        help="CURVE keys for tcp:// endpoints, zmq:tcp:// sources included "
        "(made by `ser-stream keys`; --tcp alone makes keys for the session)",
    )
    up.add_argument(
        "--engine",
        choices=["local", "ray"],
        default=None,
        help="what runs the stage processes: local children (default) or Ray actors on a "
        "cluster's nodes (needs `pip install 'ser-stream[ray]'`)",
    )
    up.add_argument(
        "--address",
        metavar="ADDR",
        help="--engine ray: the cluster to join, e.g. 10.0.0.5:6379 (default: a Ray "
        "started on this machine for the session)",
    )
    up.add_argument(
        "--place",
        action="append",
        default=[],
        metavar="STAGE=WHERE",
        help="--engine ray: run a stage only on nodes with this Ray resource (model=gpu) or "
        "node label (model=zone:eu); repeatable",
    )
    up.set_defaults(run=_up, one_thread=True)

    serve = commands.add_parser(
        "serve", help="serve predictions and live streams over HTTP and WebSocket"
    )
    from ser_stream.web.serve import add_arguments

    add_arguments(serve)
    serve.set_defaults(run=_serve, one_thread=True)


def _serve(args: argparse.Namespace) -> int:
    from ser_stream.web.serve import options_from, serve

    return serve(options_from(args, replicas(args.replicas)))


def _settings(args: argparse.Namespace) -> dict:
    """The settings file's, with the flags over them (a flag not given leaves the file's)."""
    from ser_stream.settings import load_toml, with_stage_options

    settings = load_toml(args.config) if args.config else {}
    flags = {
        "source": args.source,
        "fast": args.fast,
        "sinks": args.sink or None,
        "stop_on_silence_s": args.stop_on_silence,
        "model": args.model,
        "publish": args.publish,
        "tcp": args.tcp or None,
        "rate": args.rate,
        "replicas": replicas(args.replicas) or None,
        "streams": args.streams,
        "curve": args.curve,
        "publish_plaintext": args.publish_plaintext or None,
        "engine": args.engine,
        "address": args.address,
        "place": _place(args.place) or None,
    }
    settings.update({key: value for key, value in flags.items() if value is not None})
    if args.no_stop_on_silence:
        settings["stop_on_silence_s"] = None
    vad = {
        "engine": args.vad,
        "first_window_s": args.first_window,
        "no_speech_timeout_s": args.no_speech_timeout,
    }
    stages = with_stage_options(settings.get("stages", {}), "vad", vad)
    if stages:
        settings["stages"] = stages
    plot = settings.pop("plot", None)
    settings["plot"] = args.plot or plot  # the flag overrides the file
    return settings


def _place(items: list[str]) -> dict[str, str]:
    """``--place STAGE=WHERE`` flags as a table."""
    place = {}
    for item in items:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise InputError(f"--place {item!r} is not STAGE=WHERE (e.g. model=gpu)")
        place[name] = where
    return place


def _up(args: argparse.Namespace) -> int:
    from ser_stream.artifact import load_artifact
    from ser_stream.audio import SAMPLE_RATE, bundled_sample
    from ser_stream.settings import PipelineConfig, check_stage_settings
    from ser_stream.sinks import PlotSink, parse_sink
    from ser_stream.stages.capture import check_source, parse_source
    from ser_stream.supervisor.folder import claim_publish_endpoint
    from ser_stream.supervisor.pipeline import run_pipeline

    settings = _settings(args)
    plot = settings.pop("plot")
    artifact = load_artifact(settings.get("model"))
    sinks = [parse_sink(text) for text in settings.pop("sinks", None) or ["console"]]
    if plot:
        sinks.append(PlotSink(plot))
    if "source" not in settings:
        settings["source"] = [_default_source(bundled_sample())]
    rate = settings.get("rate", SAMPLE_RATE)
    sources = [parse_source(text, rate=rate) for text in settings["source"]]
    for source in sources:
        check_source(source)  # fail before any process starts
        if (
            source.kind == "zmq"
            and source.target.startswith("tcp://")
            and not settings.get("curve")
        ):
            print(f"ser-stream: {source.target} takes audio from any program that reaches "
                  "the port; give --curve KEYDIR to require keys", file=sys.stderr)  # fmt: skip
    if settings.get("curve"):
        curve_keys(settings["curve"])  # key files that others can read: refuse now
    settings["sources"] = tuple(settings.pop("source"))
    with contextlib.ExitStack() as held:
        if not settings.get("publish"):  # held until the session ends
            settings["publish"] = held.enter_context(claim_publish_endpoint()).endpoint
        config = PipelineConfig(**settings)
        check_stage_settings(config, artifact)  # a stage must not die of a wrong setting
        if config.publish_in_the_clear:
            print(f"ser-stream: {config.publish} publishes every record in the clear to anyone "
                  "who reaches the port (--publish-plaintext)", file=sys.stderr)  # fmt: skip

        def ready() -> None:
            speak = " (speak now)" if any(source.kind == "mic" for source in sources) else ""
            print(f"ser-stream: ready{speak}; publishing on {config.publish}", file=sys.stderr,
                  flush=True)  # fmt: skip

        run = run_pipeline(config, sinks, artifact.labels, on_ready=ready)
    failed = any(session.reason == "error" for session in run.streams.values())
    return 1 if failed or run.reason == "error" else 0


def _default_source(sample: Path) -> str:
    """The microphone when one can record, else the bundled sample (said on stderr)."""
    from ser_stream.stages.mic import open_check

    try:
        name = open_check("")
    except InputError as exc:
        print(f"ser-stream: {exc}", file=sys.stderr)
        print(f"ser-stream: playing the bundled sample instead: {sample}", file=sys.stderr)
        return f"file:{sample}"
    print(f"ser-stream: recording from {name!r} (--source mic:DEVICE picks another)",
          file=sys.stderr)  # fmt: skip
    return "mic"
