"""``ser-stream serve``: the pipeline's stage processes behind an HTTP and WebSocket server.

The supervisor of ``up`` runs on the main thread (it owns the signals: Ctrl-C or SIGTERM
ends every stream, each client gets its ``stream_end`` and ``session_end``, then the server
stops); uvicorn serves on a second thread. The listening socket is bound before anything
starts, so a port in use is one clear line and no process is left behind.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ser_stream.errors import InputError
from ser_stream.logs import get_logger
from ser_stream.private import hold, runtime_dir
from ser_stream.settings import STOP_ON_SILENCE_S
from ser_stream.web.limits import ServiceLimits

__all__ = ["ServeOptions", "serve"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
EXTRA_CONNECTIONS = 256
"""Connections served at once besides the WebSocket streams (HTTP clients, keep-alive)."""
DRAIN_S = 3.0
"""After the pipeline ends, how long clients get to receive their last records."""


@dataclass(frozen=True)
class ServeOptions:
    """What ``ser-stream serve`` runs (its flags)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    limits: ServiceLimits = ServiceLimits()
    model: str | None = None
    stop_on_silence_s: float | None = STOP_ON_SILENCE_S
    stages: dict[str, dict] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: one the system picks).

    Raises:
        InputError: the port is taken, or the address is not this machine's.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except (socket.gaierror, OSError) as exc:
        raise InputError(
            f"cannot listen on {host}: {exc}; give --host an address of this machine"
        ) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {host} is in use; stop what holds it or choose --port"
            ) from None
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --host or --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def serve(options: ServeOptions, *, announce=None) -> int:
    """Run the service until SIGINT/SIGTERM; return the exit status.

    ``announce`` gets the lines a person should see (where it serves, when it is ready);
    by default they go to stderr.
    """
    import uvicorn

    from ser_stream.artifact import load_artifact
    from ser_stream.predict import Predictor
    from ser_stream.settings import PipelineConfig, check_stage_settings
    from ser_stream.supervisor.ledger import Run
    from ser_stream.supervisor.pipeline import run_pipeline
    from ser_stream.web.app import create_app
    from ser_stream.web.gateway import Gateway, GatewaySink
    from ser_stream.web.metrics import Metrics, MetricsSink
    from ser_stream.web.service import ServiceSettings

    def say(line: str) -> None:
        if announce is not None:
            announce(line)
        else:
            print(f"ser-stream: {line}", file=sys.stderr, flush=True)

    if (options.tls_cert is None) != (options.tls_key is None):
        raise InputError("give both --tls-cert and --tls-key, or neither")
    artifact = load_artifact(options.model)
    log = get_logger(component="serve")
    # named after this process: a later `up` or `serve` sweeps it if this one is killed
    with tempfile.TemporaryDirectory(prefix=f"serve-{os.getpid()}-", dir=runtime_dir()) as folder:
        hold(Path(folder) / ".lock")  # until this process ends: a later `up` leaves it be
        endpoint = f"ipc://{folder}/in"
        config = PipelineConfig(
            sources=(f"zmq:{endpoint}",),
            stop_on_silence_s=options.stop_on_silence_s,
            model=options.model,
            stages=options.stages,
            replicas=options.replicas,
        )
        check_stage_settings(config, artifact)  # a stage must not die of a wrong setting
        listener = listen(options.host, options.port)
        port = listener.getsockname()[1]
        run = Run()
        gateway = Gateway(
            endpoint,
            max_streams=options.limits.max_streams,
            max_per_client=options.limits.max_streams_per_client,
        )
        metrics = Metrics(run, gateway)
        loopback = is_loopback(options.host)
        settings = ServiceSettings(
            limits=options.limits,
            token=options.token,
            allowed_hosts=(*LOOPBACK_HOSTS, options.host) if loopback else ("*",),
            allowed_origins=options.allowed_origins,
        )
        app = create_app(gateway, Predictor(artifact), metrics, settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                ws_max_size=options.limits.max_message_kb * 1024,
                # No proxy in front unless one is set up: a client must not name its address.
                proxy_headers=False,
                # Connections beyond the streams and some HTTP clients get 503, not memory.
                limit_concurrency=options.limits.max_streams + EXTRA_CONNECTIONS,
                timeout_graceful_shutdown=int(DRAIN_S),
                ssl_certfile=options.tls_cert,
                ssl_keyfile=options.tls_key,
            )
        )
        web = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[listener])), name="web", daemon=True
        )
        scheme = "https" if options.tls_cert else "http"
        shown = f"[{options.host}]" if ":" in options.host else options.host
        say(f"serving on {scheme}://{shown}:{port} (the pipeline is starting)")
        if not loopback and options.token is None:
            say(f"{options.host} is reachable from other machines and no --token is set: "
                "anyone who reaches it can use the service")  # fmt: skip
        web.start()

        def ready() -> None:
            gateway.mark_ready()
            say(f"ready: open {scheme}://{shown}:{port}/ or POST to /v1/predict")

        try:
            run_pipeline(
                config,
                [GatewaySink(gateway), MetricsSink(metrics)],
                artifact.labels,
                on_ready=ready,
                should_stop=lambda: not web.is_alive(),
                run=run,
                on_stopping=gateway.mark_stopping,
            )
        finally:
            gateway.mark_stopping()
            deadline = time.monotonic() + DRAIN_S
            while gateway.clients and web.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)  # let each client take its stream_end and session_end
            # A stream the pipeline never saw a record of has no end to send: say why.
            gateway.notify_all("the service stopped before this stream ended")
            time.sleep(0.1 if gateway.clients else 0.0)
            crashed = not web.is_alive() and not server.should_exit
            server.should_exit = True
            web.join(timeout=DRAIN_S + 2)
            listener.close()
            log.info("stopped", streams=len(run.streams))
    if crashed:
        raise InputError("the web server stopped unexpectedly; see the log above")
    return 0


def add_arguments(parser) -> None:
    """The flags of ``ser-stream serve`` (on an ``argparse`` parser)."""
    defaults = ServiceLimits()
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: loopback only; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one)")
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token every route but /healthz requires (default: $SER_STREAM_TOKEN; "
        "none: no token)",
    )
    for flag, kind, default, text in (
        ("--max-upload-mb", float, defaults.max_upload_mb, "largest upload"),
        ("--max-upload-seconds", float, defaults.max_upload_seconds, "longest recording "
         "an upload may hold (at up to 48 kHz stereo)"),
        ("--max-streams", int, defaults.max_streams, "WebSocket streams at once"),
        ("--max-streams-per-client", int, defaults.max_streams_per_client, "WebSocket "
         "streams one client address may hold at once"),
        ("--max-predictions", int, defaults.max_predictions, "/v1/predict requests at once"),
        ("--max-speed", float, defaults.max_speed, "how much faster than real time a "
         "WebSocket client may send audio"),
    ):  # fmt: skip
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default %(default)s)")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=defaults.rate_per_minute,
        metavar="PER_MINUTE",
        help="requests per minute per client address (default %(default)s)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin whose pages may open /v1/stream besides this "
        "server's own, e.g. https://app.example (repeatable)",
    )
    parser.add_argument(
        "--stop-on-silence",
        type=float,
        default=STOP_ON_SILENCE_S,
        metavar="SECONDS",
        help="end a stream after this much silence following speech "
        f"(default {STOP_ON_SILENCE_S:g})",
    )
    parser.add_argument(
        "--no-stop-on-silence",
        action="store_true",
        help="streams end only when their client ends them",
    )
    parser.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default=None,
        help="VAD engine of the streams (default: the model's, as predict and up)",
    )
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="STAGE=N",
        help="processes of a stage, e.g. model=2 (repeatable)",
    )
    parser.add_argument("--model", metavar="DIR", help="model artifact folder (default: shipped)")
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="serve https and wss with this certificate"
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")


def options_from(args, replicas: dict[str, int]) -> ServeOptions:
    """:class:`ServeOptions` from parsed flags (``replicas`` already parsed)."""
    import os

    for flag, value in (
        ("--max-streams", args.max_streams),
        ("--max-streams-per-client", args.max_streams_per_client),
        ("--max-predictions", args.max_predictions),
        ("--rate-limit", args.rate_limit),
    ):
        if value < 1:
            raise InputError(f"{flag} {value}: give a positive whole number")
    for flag, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-upload-seconds", args.max_upload_seconds),
        ("--max-speed", args.max_speed),
    ):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{flag} {value}: give a positive number")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: give a port from 0 to 65535")
    limits = ServiceLimits(
        max_upload_mb=args.max_upload_mb,
        max_upload_seconds=args.max_upload_seconds,
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
        max_predictions=args.max_predictions,
        rate_per_minute=args.rate_limit,
        max_speed=args.max_speed,
    )
    token = args.token if args.token is not None else os.environ.get("SER_STREAM_TOKEN")
    return ServeOptions(
        host=args.host,
        port=args.port,
        token=token or None,
        limits=limits,
        model=args.model,
        stop_on_silence_s=None if args.no_stop_on_silence else args.stop_on_silence,
        stages={"vad": {"engine": args.vad}} if args.vad else {},
        replicas=replicas,
        allowed_origins=tuple(args.allow_origin),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
