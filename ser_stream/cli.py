"""The ``ser-stream`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ser_stream.errors import OutputClosed, SerStreamError

__all__ = ["main", "self_command"]


def self_command() -> list[str]:
    """How a process of this package starts another: ``python -m ser_stream``.

    With ``-P`` (Python 3.11+) the working folder does not come first on the module path,
    so a plain install run from the project's checkout starts the installed package, not
    the checkout's ``ser_stream/`` folder (where ``ser_stream.stages`` is not).
    """
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-m", "ser_stream"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.run in (_up, _serve, _stage, _predict, _bench):  # training keeps the libraries' pools
        from ser_stream.threads import limit_numeric_threads

        limit_numeric_threads()  # before numpy loads (see ser_stream.threads)
    from ser_stream.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return args.run(args)
    except OutputClosed:  # `ser-stream ... | head`: the reader has what it wanted
        return 0
    except SerStreamError as exc:
        print(f"ser-stream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ser-stream", description="Real-time speech emotion recognition."
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="classify the emotion of audio files")
    predict.add_argument("files", nargs="+", metavar="FILE", help="wav, flac, ogg or mp3 files")
    predict.add_argument("--json", action="store_true", help="one JSON object per file per line")
    predict.add_argument("--model", metavar="DIR", help="model artifact folder (default: shipped)")
    predict.add_argument("--workers", type=int, help="worker processes (default: by batch size)")
    predict.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default=None,
        help="VAD engine (default: the model's, as every other mode)",
    )
    predict.set_defaults(run=_predict)

    data_help = "folder with ravdess/ and tess/ (default: $SER_STREAM_DATA or ../shared/data)"
    recipe_help = "training recipe by name (default: the shipped model's)"
    train = commands.add_parser("train", help="train the model on RAVDESS and TESS")
    train.add_argument("--data", metavar="DIR", help=data_help)
    train.add_argument("--out", metavar="DIR", default="model", help="artifact folder to write")
    train.add_argument(
        "--cache", metavar="DIR", help="feature cache (default: ~/.cache/ser-stream)"
    )
    train.add_argument("--recipe", metavar="NAME", help=recipe_help)
    train.add_argument(
        "--calibration-from",
        metavar="METRICS.json",
        help="take the temperature from a speaker-independent evaluation of the same recipe",
    )
    train.add_argument("--epochs", type=int, help="training epochs")
    train.add_argument("--no-augment", action="store_true", help="train on clean audio only")
    train.add_argument("--workers", type=int, default=None, help="feature worker processes")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="run the evaluation protocols")
    evaluate.add_argument("--data", metavar="DIR", help=data_help)
    evaluate.add_argument(
        "--protocol",
        choices=["seed", "speaker", "corpus", "channel", "room", "all"],
        action="append",
        help="which protocol (repeatable; default all: seed, speaker, corpus, channel, room)",
    )
    evaluate.add_argument("--recipe", metavar="NAME", help=recipe_help)
    evaluate.add_argument(
        "--folds", metavar="K,K", help="speaker/channel/room: only these folds (1-6)"
    )
    evaluate.add_argument(
        "--model",
        metavar="DIR",
        help="judge this trained artifact on the corpora it never trained on, instead of "
        "training fresh models (clean, every channel condition, room sessions)",
    )
    evaluate.add_argument("--out", metavar="DIR", default="model", help="folder for the results")
    evaluate.add_argument("--cache", metavar="DIR", help="feature cache")
    evaluate.add_argument("--epochs", type=int, help="training epochs per split")
    evaluate.add_argument("--no-augment", action="store_true", help="train on clean audio only")
    evaluate.add_argument("--workers", type=int, default=None, help="feature worker processes")
    evaluate.set_defaults(run=_evaluate)
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
        help="end the session after this much silence following speech (default 2)",
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
        help="first emotion of an utterance after this much speech (default 0.8; 0: full window)",
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
    up.set_defaults(run=_up)

    serve = commands.add_parser(
        "serve", help="serve predictions and live streams over HTTP and WebSocket"
    )
    from ser_stream.web.serve import add_arguments

    add_arguments(serve)
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="make CURVE keys for tcp:// endpoints")
    keys.add_argument("folder", metavar="KEYDIR", help="folder to write (mode 0700)")
    keys.set_defaults(run=_keys)

    bench = commands.add_parser(
        "bench", help="measure the whole pipeline: latency, throughput, streams, memory"
    )
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    bench.add_argument(
        "--out", metavar="DIR", default="benchmarks/results", help="report folder (Markdown, PNG)"
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
    bench.set_defaults(run=_bench)

    devices = commands.add_parser("devices", help="list the microphones (audio inputs)")
    devices.set_defaults(run=_devices)

    tap = commands.add_parser("tap", help="print what a running pipeline publishes")
    tap.add_argument("endpoint", nargs="?", help="PUB endpoint (default: where up publishes)")
    tap.add_argument("--once", action="store_true", help="exit after the first end of stream")
    tap.add_argument("--curve", metavar="KEYDIR", help="CURVE keys for a tcp:// endpoint")
    tap.set_defaults(run=_tap)

    stage = commands.add_parser("stage", help="run one pipeline stage in this process")
    stage.add_argument("name", help="capture, vad, denoise, features or model")
    stage.add_argument(
        "--in", dest="inputs", action="append", default=[], help="upstream endpoint (repeatable)"
    )
    stage.add_argument("--source", help="capture: mic[:DEVICE], file:PATH, stdin or zmq:ENDPOINT")
    stage.add_argument("--rate", type=int, default=16_000, help="capture: stdin PCM rate (Hz)")
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
    stage.add_argument("--hwm", type=int, default=64, help="socket high-water mark (messages)")
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
    stage.set_defaults(run=_stage)
    return parser


def _stage(args: argparse.Namespace) -> int:
    import asyncio

    from ser_stream.artifact import load_artifact
    from ser_stream.errors import InputError
    from ser_stream.runtime import Endpoints, RuntimeSettings, StageRuntime
    from ser_stream.stage import StageContext
    from ser_stream.stages import STAGES

    if args.name == "capture":
        return _capture(args)
    if args.name not in STAGES:
        names = ", ".join(["capture", *STAGES])
        raise InputError(f"no stage {args.name!r}; choose one of {names}")
    if not args.inputs:
        raise InputError(f"stage {args.name} needs --in ENDPOINT (its upstream)")
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
        RuntimeSettings(hwm=args.hwm),
        generation=args.generation,
        keys=_curve_keys(args.curve),
        resume=_resume(args.resume),
        listen_fds=_listen_fds(args.listen_fds),
    )
    return asyncio.run(runtime.run())


def _listen_fds(items: list[str]) -> dict[str, int]:
    from ser_stream.errors import InputError

    fds = {}
    for item in items:
        endpoint, sep, fd = item.rpartition("=")
        if not sep or not fd.isdigit():
            raise InputError(f"--listen-fd {item!r} is not ENDPOINT=FD")
        fds[endpoint] = int(fd)
    return fds


def _resume(text: str | None) -> dict[str, float]:
    from ser_stream.errors import InputError

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


def _curve_keys(folder: str | None):
    """The CURVE keys of ``--curve KEYDIR`` (None without it)."""
    if not folder:
        return None
    from ser_stream.security import load_keys

    return load_keys(Path(folder))


def _keys(args: argparse.Namespace) -> int:
    from ser_stream.security import create_keys

    folder = create_keys(Path(args.folder))
    print(f"keys written to {folder}: give producers client.key and client.key_secret "
          "(and server.key); add other clients' public keys to authorized/")  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ser_stream.web.serve import options_from, serve

    return serve(options_from(args, _replicas(args.replicas)))


def _up(args: argparse.Namespace) -> int:
    from ser_stream.artifact import load_artifact
    from ser_stream.audio import bundled_sample
    from ser_stream.sinks import PlotSink, parse_sink
    from ser_stream.stages.capture import check_source, parse_source
    from ser_stream.supervisor import (
        PipelineConfig,
        check_stage_settings,
        claim_publish_endpoint,
        load_toml,
        run_pipeline,
    )

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
        "replicas": _replicas(args.replicas) or None,
        "streams": args.streams,
        "curve": args.curve,
        "publish_plaintext": args.publish_plaintext or None,
    }
    settings.update({key: value for key, value in flags.items() if value is not None})
    if args.no_stop_on_silence:
        settings["stop_on_silence_s"] = None
    vad = {
        "engine": args.vad,
        "first_window_s": args.first_window,
        "no_speech_timeout_s": args.no_speech_timeout,
    }
    vad = {key: value for key, value in vad.items() if value is not None}
    if vad:
        stages = {name: dict(options) for name, options in settings.get("stages", {}).items()}
        stages["vad"] = {**stages.get("vad", {}), **vad}
        settings["stages"] = stages
    plot = settings.pop("plot", None)
    plot = args.plot or plot  # the flag overrides the file
    artifact = load_artifact(settings.get("model"))
    sinks = [parse_sink(text) for text in settings.pop("sinks", None) or ["console"]]
    if plot:
        sinks.append(PlotSink(plot))
    if "source" not in settings:
        settings["source"] = [_default_source(bundled_sample())]
    sources = [parse_source(text, rate=settings.get("rate", 16_000)) for text in settings["source"]]
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
        _curve_keys(settings["curve"])  # key files that others can read: refuse now
    settings["sources"] = tuple(settings.pop("source"))
    settings["publish"] = settings.get("publish") or claim_publish_endpoint()
    config = PipelineConfig(**settings)
    check_stage_settings(config, artifact)  # a stage must not die of a wrong setting
    if config.publish_in_the_clear:
        print(f"ser-stream: {config.publish} publishes every record in the clear to anyone "
              "who reaches the port (--publish-plaintext)", file=sys.stderr)  # fmt: skip

    def ready() -> None:
        speak = " (speak now)" if any(source.kind == "mic" for source in sources) else ""
        print(
            f"ser-stream: ready{speak}; publishing on {config.publish}", file=sys.stderr, flush=True
        )

    run = run_pipeline(config, sinks, artifact.labels, on_ready=ready)
    failed = any(session.reason == "error" for session in run.streams.values())
    return 1 if failed or run.reason == "error" else 0


def _replicas(items: list[str]) -> dict[str, int]:
    """``["model=2", "vad=2,features=3"]`` -> ``{"model": 2, "vad": 2, "features": 3}``."""
    from ser_stream.errors import InputError

    counts = {}
    for item in ",".join(items).split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--replicas {item!r} is not STAGE=N (e.g. model=2)")
        counts[name.strip()] = int(value)
    return counts


def _bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ser_stream.bench.main import BenchOptions, run_bench

    options = BenchOptions.smoke_run() if args.smoke else BenchOptions()
    changes: dict = {"replicas": _replicas(args.replicas) or options.replicas}
    if not args.smoke and changes["replicas"] is None:
        changes["replicas"] = {"vad": 2}  # Silero (the model's VAD) is what many streams wait on
    if args.max_streams:
        changes["max_streams"] = args.max_streams
    if args.no_original:
        changes["original"] = False
    options = replace(options, **changes)
    out = Path(args.out)
    result = run_bench(options, out, Path(args.json) if args.json else None)
    print(f"ser-stream: report written to {out / 'bench.md'}", file=sys.stderr)
    for name, row in result["targets"].items():
        print(f"{name:<45} {row['figure']:>10}  {'met' if row['met'] else 'NOT met'}")
    return 0


def _default_source(sample: Path) -> str:
    """The microphone when one can record, else the bundled sample (said on stderr)."""
    from ser_stream.errors import InputError
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
    from ser_stream.supervisor import default_publish_endpoint
    from ser_stream.tap import records

    endpoint = args.endpoint or default_publish_endpoint()
    print(f"ser-stream: listening on {endpoint}", file=sys.stderr, flush=True)
    for record in records(endpoint, keys=_curve_keys(args.curve)):
        try:
            print(json.dumps(record), flush=True)
        except BrokenPipeError:  # `ser-stream tap | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if args.once and record["kind"] == "end_of_stream":
            return 0
    return 0


def _capture(args: argparse.Namespace) -> int:
    import asyncio

    from ser_stream.errors import InputError
    from ser_stream.producers import zmq_frames
    from ser_stream.runtime import RuntimeSettings, SourceRuntime
    from ser_stream.stages.capture import (
        FAST_FRAME_MS,
        FRAME_MS,
        SOURCE_FORMS,
        check_source,
        file_frames,
        parse_source,
        pcm_frames,
    )
    from ser_stream.stages.mic import mic_frames

    if not args.source:
        raise InputError(f"capture needs --source ({SOURCE_FORMS})")
    source = parse_source(args.source, rate=args.rate, realtime=not args.fast)
    keys = _curve_keys(args.curve)
    try:
        if source.kind != "mic":  # the microphone source opens and checks the device itself
            check_source(source, decode_all=False)  # `up` decoded it all before it started
        if source.kind == "file":
            frames = file_frames(
                source.target,
                frame_ms=FRAME_MS if source.realtime else FAST_FRAME_MS,
                start_s=args.start_s,
            )
        elif source.kind == "stdin":
            frames = pcm_frames(rate=source.rate, start_s=args.start_s)
        elif source.kind == "mic":
            frames = mic_frames(source.target, start_s=args.start_s, start_clock=args.start_clock)
        else:
            frames = zmq_frames(source.target, keys=keys)
    except InputError as exc:  # the runtime sends the reason downstream, so the session ends
        frames = _failing(exc)
    runtime = SourceRuntime(
        args.stream,
        frames,
        args.outputs,
        # A microphone and a producer pace themselves.
        realtime=source.realtime and source.kind in ("file", "stdin"),
        named_streams=source.kind == "zmq",
        settings=RuntimeSettings(hwm=args.hwm),
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


def _predict(args: argparse.Namespace) -> int:
    import gc

    from ser_stream.predict import predict_files
    from ser_stream.sinks import verdict_text
    from ser_stream.warmup import kernels_cached

    if not kernels_cached():
        print(
            "ser-stream: first run: compiling librosa's feature kernels once (20-30 s)...",
            file=sys.stderr,
            flush=True,
        )
    failed = False
    for result in predict_files(args.files, args.model, workers=args.workers, vad_engine=args.vad):
        failed |= result.error is not None
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
        elif result.error is not None:
            print(f"{result.file}: error: {result.error}", flush=True)
        else:
            top = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:3]
            shares = "  ".join(f"{label} {p:.0%}" for label, p in top)
            count = len(result.windows)
            windows = f"{count} window" + ("" if count == 1 else "s")
            label = result.label or ""
            verdict = verdict_text(label, result.probabilities.get(label, 0.0), result.confident)
            print(f"{result.file}: {verdict}  ({shares}; {windows})")
    # The process ends next: frozen objects skip the interpreter's final collection passes
    # over everything librosa, numba and scipy allocated (~0.2 s of a one-file run).
    gc.freeze()
    return 1 if failed else 0


def _recipe(args: argparse.Namespace):
    from ser_stream.train.recipe import get_recipe

    recipe = get_recipe(args.recipe).with_epochs(args.epochs)
    return recipe.without_augmentation() if args.no_augment else recipe


def _train(args: argparse.Namespace) -> int:
    from ser_stream.train.pipeline import train_default

    out = train_default(
        _recipe(args),
        data=args.data,
        out=Path(args.out),
        cache=args.cache,
        workers=args.workers,
        calibration_from=Path(args.calibration_from) if args.calibration_from else None,
    )
    print(f"model written to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ser_stream.errors import InputError
    from ser_stream.train.pipeline import PROTOCOLS, evaluate_model, evaluate_protocols

    if args.model:
        report = evaluate_model(Path(args.model), data=args.data, out=Path(args.out))
        for line in _summary("baseline", report):
            print(line)
        return 0

    named = args.protocol or ["all"]
    protocols = list(PROTOCOLS) if "all" in named else [p for p in PROTOCOLS if p in named]
    try:
        folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    except ValueError as exc:
        raise InputError(f"--folds {args.folds!r} is not a comma-separated list of 1-6") from exc
    if folds and not set(folds) <= set(range(1, 7)):
        raise InputError(f"--folds {args.folds!r}: the folds are numbered 1-6")
    recipe = _recipe(args)
    flags = (" --no-augment" if args.no_augment else "") + (
        f" --epochs {args.epochs}" if args.epochs else ""
    )
    command = f"ser-stream evaluate --recipe {recipe.name}{flags}"
    results = evaluate_protocols(
        protocols,
        recipe,
        data=args.data,
        out=Path(args.out),
        cache=args.cache,
        workers=args.workers,
        folds=folds,
        command=command,
    )
    for name, result in results.items():
        for line in _summary(name, result):
            print(line)
    return 0


def _summary(name: str, result: dict) -> list[str]:
    if name == "seed":
        test = result["test"]
        return [
            f"seed: test accuracy {test['accuracy']:.2%} (unweighted "
            f"{test['unweighted_accuracy']:.2%}), validation accuracy "
            f"{result['validation']['accuracy']:.2%}"
        ]
    if name == "speaker":
        calibration = result["calibration"]
        return [
            f"speaker: mean accuracy {result['mean_accuracy']:.2%}, mean unweighted accuracy "
            f"{result['mean_unweighted_accuracy']:.2%}, mean macro-F1 "
            f"{result['mean_macro_f1']:.2%}; clip ECE {calibration['clip_ece_before']:.3f} -> "
            f"{calibration['clip_ece_after']:.3f} calibrated; heard as live sessions: mean UA "
            f"{result['session_mean_unweighted_accuracy']:.2%}",
            f"speaker: mean UA over speakers {result['speaker_mean_unweighted_accuracy']:.2%}"
            + (
                f", EmoBox RAVDESS folds {result['emobox_ravdess_mean_unweighted_accuracy']:.2%}"
                if result.get("emobox_ravdess_mean_unweighted_accuracy") is not None
                else ""
            ),
        ]
    if name == "corpus":
        return [
            f"corpus {held}: strict UA {entry['strict']['unweighted_accuracy']:.2%}, calm as "
            f"neutral UA {entry['calm_as_neutral']['unweighted_accuracy']:.2%} (trained on "
            f"{', '.join(entry['trained_on'])})"
            for held, entry in result["held_out"].items()
        ] + [f"corpus: mean strict UA {result['mean_strict_unweighted_accuracy']:.2%}"]
    if name == "room":
        return [
            f"room: mean UA {result['mean_unweighted_accuracy']:.2%} against "
            f"{result['alone_mean_unweighted_accuracy']:.2%} for the same clips alone "
            f"({result['missed']} of {result['clips']} clips not heard)"
        ]
    if name == "baseline":
        clean = result["clean"]["strict"]["unweighted_accuracy"]
        lines = [f"model on {', '.join(result['judged_on'])}: strict UA {clean:.2%}"]
        lines += [
            f"  {condition}: strict UA {entry['strict']['unweighted_accuracy']:.2%} "
            f"({-100 * entry['loss_vs_clean']:+.1f} points vs the same clips clean)"
            for condition, entry in result["conditions"].items()
        ]
        if "room" in result:
            lines.append(f"  room: {-100 * result['room']['loss_vs_alone']:+.1f} points vs alone")
        return lines
    if name == "cross":
        return [
            f"cross {direction}: strict UA {result[direction]['strict']['unweighted_accuracy']:.2%}"
            f", calm as neutral UA "
            f"{result[direction]['calm_as_neutral']['unweighted_accuracy']:.2%}"
            for direction in ("ravdess_to_tess", "tess_to_ravdess")
        ]
    return [
        f"channel {condition}: mean UA {entry['mean_unweighted_accuracy']:.2%} "
        f"({-100 * entry['loss_vs_clean']:+.1f} points vs clean)"
        for condition, entry in result["conditions"].items()
    ]
