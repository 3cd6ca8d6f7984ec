"""The routes of ``ser-stream serve``: predictions, live streams, the page, health, metrics."""

from __future__ import annotations

import asyncio
import html
import json
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ser_stream import __version__
from ser_stream.logs import get_logger
from ser_stream.predict import Predictor
from ser_stream.private import runtime_dir
from ser_stream.producers import PRODUCER_SILENT_S
from ser_stream.web.gateway import Busy, ClientBusy, ClientStream, Gateway, gateway_error
from ser_stream.web.limits import (
    AudioPace,
    BodyLimit,
    ClientRates,
    ServiceLimits,
    token_matches,
    token_of,
)
from ser_stream.web.metrics import CONTENT_TYPE, Metrics

__all__ = ["ServiceSettings", "create_app"]

HELLO_TIMEOUT_S = 10.0
"""How long a WebSocket client has to announce its sample rate."""

IDLE_S = PRODUCER_SILENT_S
"""A WebSocket stream without audio this long is ended (as a silent producer's is)."""

MIN_RATE, MAX_RATE = 8_000, 192_000

MAX_SAMPLES_PER_S = 2 * 48_000
"""Decoded samples an upload may hold per second of its --max-upload-seconds."""

NO_FILE = "send the audio as the multipart field 'file' (curl -F file=@speech.wav)"

_ROUTES = ("/", "/healthz", "/metrics", "/v1/predict", "/v1/stream", "/openapi.json", "/docs")

DESCRIPTION = """\
Speech emotion recognition over HTTP, on the pipeline of `ser-stream up`.

* `POST /v1/predict`: one recording in, the JSON of `ser-stream predict --json` out.
* `WebSocket /v1/stream` (not describable in OpenAPI): send `{"sample_rate": HZ}` as the
  first text message, then binary messages of mono 16-bit little-endian PCM at that rate,
  and `{"type": "end"}` when done; receive a `stream_start` record, then the `prediction`,
  `event` and `error` records of `docs/records.md` as they happen, then `stream_end` and
  `session_end`. See `docs/web.md`.

With a token set (`ser-stream serve --token`), every route but `/healthz` needs
`Authorization: Bearer TOKEN` (or `?token=TOKEN`, for browsers).
"""


class WindowResult(BaseModel):
    """One analysed window of a recording."""

    t_start: float = Field(description="seconds from the start of the recording")
    t_end: float
    label: str
    probabilities: dict[str, float]
    confident: bool | None = Field(
        default=None,
        description="the top probability reaches the model's confidence threshold (null: the "
        "model has none); false is shown as uncertain",
    )


class PredictResult(BaseModel):
    """The result for one recording: the JSON line of ``ser-stream predict --json``."""

    file: str = Field(description="the uploaded file's name")
    label: str = Field(description="the emotion of highest mean probability over the windows")
    probabilities: dict[str, float] = Field(description="mean probability of each emotion")
    confident: bool | None = Field(
        default=None,
        description="the mean distribution's top probability reaches the model's confidence "
        "threshold (null: the model has none); false: report the label as uncertain",
    )
    windows: list[WindowResult]


class FileError(BaseModel):
    """A recording that could not be used, as ``predict --json`` reports it."""

    file: str
    error: str = Field(description="what happened; what to do")


class ErrorMessage(BaseModel):
    """A refused request."""

    error: str = Field(description="what happened; what to do")


class Health(BaseModel):
    """Whether the pipeline serves."""

    status: str = Field(description="ok, starting or stopping")
    streams: int = Field(description="WebSocket streams open now")


@dataclass(frozen=True)
class ServiceSettings:
    """What the app needs to know besides its parts."""

    limits: ServiceLimits = ServiceLimits()
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ("*",)
    allowed_origins: tuple[str, ...] = ()


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    gateway: Gateway,
    predictor: Predictor,
    metrics: Metrics,
    settings: ServiceSettings = ServiceSettings(),
) -> FastAPI:
    """The ASGI application of ``ser-stream serve``."""
    limits = settings.limits
    log = get_logger(component="web")
    rates = ClientRates(limits.rate_per_minute)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
    predicting = {"now": 0}
    labels = predictor.artifact.labels
    page = files("ser_stream.web").joinpath("live.html").read_text(encoding="utf-8")
    page = page.replace("__LABELS__", html.escape(json.dumps(list(labels))))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        gateway.attach()
        try:
            yield
        finally:
            gateway.detach()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="ser-stream",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below: it passes the page's token on to /openapi.json
    )

    @app.exception_handler(HTTPException)
    async def refused(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        return _error(400, NO_FILE)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        route = path if path in _ROUTES else "other"
        response = _refusal(request) if path != "/healthz" else None
        if response is None and path == "/v1/predict" and request.method == "POST":
            response = await _predict_turn(request, call_next)
        if response is None:
            response = await call_next(request)
        metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        return response

    async def _predict_turn(request: Request, call_next) -> Response:
        """A prediction's slot is taken before its upload is read: a 503 reads nothing."""
        if predicting["now"] >= limits.max_predictions:
            metrics.refused.labels(reason="busy").inc()
            message = f"{limits.max_predictions} predictions are in progress; retry in a moment"
            return _error(503, message, {"Retry-After": "1"})
        predicting["now"] += 1
        try:
            return await call_next(request)
        finally:
            predicting["now"] -= 1

    def _refusal(request: Request) -> JSONResponse | None:
        """429 over the client's rate (guesses of the token count), 401 without the token."""
        wait_s = rates.wait_s(_address(request))
        if wait_s:
            metrics.refused.labels(reason="rate").inc()
            headers = {"Retry-After": str(max(1, round(wait_s)))}
            return _error(429, _over_rate(limits, wait_s), headers)
        given = token_of(request.headers, request.scope["query_string"])
        if not token_matches(settings.token, given):
            metrics.refused.labels(reason="token").inc()
            return _error(
                401,
                "missing or wrong token; send the header 'Authorization: Bearer TOKEN'",
                {"WWW-Authenticate": "Bearer"},
            )
        return None

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """200 once every stage of the pipeline is up, 503 before and while stopping."""
        status = "stopping" if gateway.stopping.is_set() else "starting"
        status = "ok" if gateway.serving else status
        body = {"status": status, "streams": len(gateway.clients)}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def prometheus() -> Response:
        """Prometheus text format: windows, drops, latency, queue depth per stage, restarts."""
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        token = request.query_params.get("token")
        url = "/openapi.json" + (f"?{urlencode({'token': token})}" if token else "")
        return get_swagger_ui_html(openapi_url=url, title="ser-stream API")

    @app.get("/", response_class=HTMLResponse)
    async def live_page() -> HTMLResponse:
        """The live page: the microphone streamed, the emotions as they come."""
        return HTMLResponse(page)

    @app.post(
        "/v1/predict",
        response_model=PredictResult,
        responses={
            400: {"model": ErrorMessage, "description": "no file, or an empty one"},
            401: {"model": ErrorMessage, "description": "missing or wrong token"},
            413: {
                "model": ErrorMessage,
                "description": "over --max-upload-mb, or audio over --max-upload-seconds",
            },
            422: {"model": FileError, "description": "audio that cannot be used"},
            429: {"model": ErrorMessage, "description": "over the client's request rate"},
            503: {"model": ErrorMessage, "description": "too many predictions in progress"},
        },
    )
    async def predict(
        file: UploadFile | None = File(  # noqa: B008 (FastAPI's way of declaring a form field)
            None, description="the recording: wav, flac, ogg or mp3, any rate and channels"
        ),
    ):
        """The emotions of one recording, as ``ser-stream predict --json`` gives them."""
        if not isinstance(file, StarletteUpload):  # missing, or a plain text field
            raise HTTPException(400, NO_FILE)
        name = Path(file.filename or "upload").name[:200] or "upload"
        started = time.monotonic()
        try:
            return await _predict_upload(file, name)
        finally:
            metrics.predict_seconds.observe(time.monotonic() - started)

    async def _predict_upload(file: StarletteUpload, name: str) -> JSONResponse:
        suffix = Path(name).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
        with tempfile.NamedTemporaryFile(suffix=suffix, dir=runtime_dir()) as saved:
            size = 0
            while chunk := await file.read(1 << 20):
                saved.write(chunk)
                size += len(chunk)
            saved.flush()
            if size == 0:
                raise HTTPException(400, f"{name} is empty; send a recording")
            too_long = _too_long(saved.name, name, limits.max_upload_seconds)
            if too_long is not None:
                raise HTTPException(413, too_long)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(executor, predictor.predict_file, saved.name)
        body = {**result.to_json(), "file": name}
        if result.error is not None:
            body["error"] = result.error.replace(saved.name, name)
            return JSONResponse(body, status_code=422)
        metrics.count_upload(len(result.windows))
        return JSONResponse(body)

    @app.websocket("/v1/stream")
    async def stream(socket: WebSocket) -> None:
        await socket.accept()
        refusal = _stream_refusal(socket)
        if refusal is not None:
            reason, code, why = refusal
            metrics.refused.labels(reason=why).inc()
            await _close_with_error(socket, "-", reason, code)
            return
        client = await _hello(socket)
        if client is None:
            return
        try:
            await _serve_stream(socket, client)
        finally:
            gateway.release(client)

    def _stream_refusal(socket: WebSocket) -> tuple[str, int, str] | None:
        wait_s = rates.wait_s(_address(socket))
        if wait_s:
            return _over_rate(limits, wait_s), 1008, "rate"
        given = token_of(socket.headers, socket.scope["query_string"])
        if not token_matches(settings.token, given):
            return "missing or wrong token; connect to /v1/stream?token=TOKEN", 1008, "token"
        origin = socket.headers.get("origin")
        if origin and not _same_origin(origin, socket.headers.get("host", "")):
            if origin not in settings.allowed_origins:
                return (
                    f"connections from pages of {origin} are refused; "
                    "ser-stream serve --allow-origin ORIGIN admits them",
                    1008,
                    "origin",
                )
        if not gateway.serving:
            return "the pipeline is starting or stopping; retry shortly", 1013, "ready"
        return None

    async def _hello(socket: WebSocket) -> ClientStream | None:
        """The first message names the sample rate; the client gets its stream."""
        try:
            message = await asyncio.wait_for(socket.receive(), HELLO_TIMEOUT_S)
        except asyncio.TimeoutError:
            await _close_with_error(
                socket, "-", f'no {{"sample_rate": HZ}} within {HELLO_TIMEOUT_S:.0f} s', 1008
            )
            return None
        if message["type"] == "websocket.disconnect":
            return None
        rate = _announced_rate(message.get("text"))
        if isinstance(rate, str):
            await _close_with_error(socket, "-", rate, 1003)
            return None
        try:
            client = gateway.open(rate, _address(socket))
        except ClientBusy as exc:
            metrics.refused.labels(reason="client_streams").inc()
            await _close_with_error(socket, "-", f"{exc}; end one before starting another", 1013)
            return None
        except Busy as exc:
            metrics.refused.labels(reason="streams").inc()
            await _close_with_error(socket, "-", f"{exc}; retry later", 1013)
            return None
        try:
            await socket.send_json(
                {"kind": "stream_start", "stream": client.stream, "sample_rate": rate}
            )
        except Exception:  # gone already: its slot is free again
            gateway.release(client)
            return None
        log.info("stream started", stream=client.stream, sample_rate=rate)
        return client

    async def _serve_stream(socket: WebSocket, client: ClientStream) -> None:
        receiving = asyncio.create_task(_receive_audio(socket, client))
        sending = asyncio.create_task(_send_records(socket, client))
        done, _ = await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
        for task in {receiving, sending} - done:
            task.cancel()
        if sending in done and sending.exception() is None:  # its records are all out
            await gateway.end(client)  # the source forgets it too (after a silence end)
            await _close(socket, 1000)
            return
        # The client left: it said so (receiving), or a send to it failed.
        refusal = None
        if receiving in done and receiving.exception() is None:
            refusal = receiving.result()
        await gateway.end(client, "eof")
        if refusal is None:
            metrics.disconnects.inc()
            log.info("client left mid-stream", stream=client.stream, seconds=client.seconds_sent)
            return
        reason, code = refusal
        await _close_with_error(socket, client.stream, reason, code)

    async def _receive_audio(socket: WebSocket, client: ClientStream) -> tuple[str, int] | None:
        """Audio until the client leaves (None) or breaks a limit (the reason, a close code)."""
        pace = AudioPace(limits.max_speed, limits.burst_s)
        heard_at = time.monotonic()  # the last audio
        while True:
            try:
                wait_s = None if client.ended else heard_at + IDLE_S - time.monotonic()
                message = await asyncio.wait_for(socket.receive(), wait_s)
            except asyncio.TimeoutError:
                metrics.refused.labels(reason="idle").inc()
                return f"no audio for {IDLE_S:.0f} s; send audio as it is recorded", 1008
            if message["type"] == "websocket.disconnect":
                return None
            if client.unread:
                metrics.refused.labels(reason="unread").inc()
                return "the client did not read its records; read them as they come", 1008
            data, text = message.get("bytes"), message.get("text")
            if data is not None and not client.ended:
                if len(data) % 2:
                    await _report(socket, client, "a binary message of an odd number of bytes "
                                  "was skipped; send 16-bit little-endian PCM")  # fmt: skip
                    continue
                samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
                seconds = samples.size / client.sample_rate
                if seconds > limits.burst_s:
                    metrics.refused.labels(reason="pace").inc()
                    return (
                        f"a message of {seconds:.1f} s of audio; send at most "
                        f"{limits.burst_s:g} s per message, as it is recorded",
                        1008,
                    )
                if samples.size:
                    heard_at = time.monotonic()
                if not pace.allows(seconds):
                    metrics.refused.labels(reason="pace").inc()
                    return (
                        f"audio arrives faster than {limits.max_speed:g}x real time; send it "
                        "as it is recorded, or POST the file to /v1/predict",
                        1008,
                    )
                await gateway.send_audio(client, samples)
            elif text is not None:
                if _is_end(text):
                    await gateway.end(client, "eof")
                else:
                    await _report(socket, client, 'a text message other than {"type": "end"} '
                                  "was skipped; send audio as binary messages")  # fmt: skip

    async def _send_records(socket: WebSocket, client: ClientStream) -> None:
        while True:
            record = await client.records.get()
            await socket.send_json(record)
            if record["kind"] == "stream_end":
                summary = {**record["summary"], "streams": 1}
                end = {"kind": "session_end", "reason": record["reason"], "summary": summary}
                await socket.send_json(end)
                log.info("stream ended", stream=client.stream, reason=record["reason"])
                return

    async def _report(socket: WebSocket, client: ClientStream, reason: str) -> None:
        metrics.errors.labels(stage="gateway").inc()
        await socket.send_json(gateway_error(client.stream, reason))

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    return app


def _address(connection: Request | WebSocket) -> str:
    """The client's address: the connection's own (``X-Forwarded-For`` is not read)."""
    return connection.client.host if connection.client else "-"


def _over_rate(limits: ServiceLimits, wait_s: float) -> str:
    return (
        f"more than {limits.rate_per_minute} requests a minute from this client; "
        f"retry in {wait_s:.0f} s"
    )


def _announced_rate(text: str | None) -> int | str:
    """The sample rate of a client's first message, or what is wrong with it."""
    usage = 'the first message must be JSON text like {"sample_rate": 16000}'
    try:
        hello = json.loads(text) if text is not None else None
    except ValueError:
        return usage
    rate = hello.get("sample_rate") if isinstance(hello, dict) else None
    if not isinstance(rate, int) or isinstance(rate, bool):
        return usage
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"sample_rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz; announce the real rate"
    return rate


def _too_long(path: str, name: str, max_seconds: float) -> str | None:
    """Why a recording would decode to too much audio, read from its header; else None."""
    import soundfile

    try:
        info = soundfile.info(path)
    except Exception:  # not audio: predict says so in its own words
        return None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    # Decoded whole as float32: the duration alone would let 16 channels at 192 kHz through.
    if seconds > max_seconds or info.frames * info.channels > max_seconds * MAX_SAMPLES_PER_S:
        return (
            f"{name} holds {seconds:.0f} s of audio ({info.channels} channels at "
            f"{info.samplerate} Hz), more than the {max_seconds:g} s of up to 48 kHz stereo "
            "this service decodes; send a shorter recording (--max-upload-seconds)"
        )
    return None


def _is_end(text: str) -> bool:
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"


def _same_origin(origin: str, host: str) -> bool:
    return urlsplit(origin).netloc.lower() == host.lower()


async def _close_with_error(socket: WebSocket, stream: str, reason: str, code: int) -> None:
    try:
        await socket.send_json(gateway_error(stream, reason))
    except Exception:  # the client is gone already: nothing to tell
        return
    await _close(socket, code)


async def _close(socket: WebSocket, code: int) -> None:
    try:
        await socket.close(code)
    except Exception:  # closed by the client meanwhile
        pass
