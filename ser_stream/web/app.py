"""The API of ``ser-stream serve``: its routes, how each is described, what guards them.

The routes live by concept (:mod:`.upload`, :mod:`.stream`, :mod:`.pages`); what they share
is one :class:`~ser_stream.web.service.Service` on ``app.state.service``. Here the app is
put together, and the models below are the OpenAPI description of its answers.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ser_stream import __version__
from ser_stream.predict import Predictor
from ser_stream.web import pages
from ser_stream.web.gateway import Gateway
from ser_stream.web.guard import guard
from ser_stream.web.limits import BodyLimit
from ser_stream.web.metrics import CONTENT_TYPE, Metrics
from ser_stream.web.service import Service, ServiceSettings, error
from ser_stream.web.stream import stream
from ser_stream.web.upload import NO_FILE, predict

__all__ = ["create_app"]

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


PREDICT_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorMessage, "description": "no file, or an empty one"},
    401: {"model": ErrorMessage, "description": "missing or wrong token"},
    413: {
        "model": ErrorMessage,
        "description": "over --max-upload-mb, or audio over --max-upload-seconds",
    },
    422: {"model": FileError, "description": "audio that cannot be used"},
    429: {"model": ErrorMessage, "description": "over the client's request rate"},
    503: {"model": ErrorMessage, "description": "too many predictions in progress"},
}


def create_app(
    gateway: Gateway,
    predictor: Predictor,
    metrics: Metrics,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """The ASGI application of ``ser-stream serve`` (settings: the defaults of serve)."""
    settings = settings if settings is not None else ServiceSettings()
    page = pages.live_page_html(predictor.artifact.labels)
    app = FastAPI(
        title="ser-stream",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # served by pages.docs: it passes the page's token on to /openapi.json
    )
    app.state.service = Service(gateway, predictor, metrics, settings, page)
    app.add_exception_handler(HTTPException, _refused)
    app.add_exception_handler(RequestValidationError, _malformed)
    app.middleware("http")(guard)
    app.add_api_route(
        "/healthz", pages.health, response_model=Health, responses={503: {"model": Health}}
    )
    app.add_api_route(
        "/metrics",
        pages.prometheus,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    app.add_api_route("/docs", pages.docs, include_in_schema=False)
    app.add_api_route("/", pages.live_page, response_class=HTMLResponse)
    app.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResult,
        responses=PREDICT_RESPONSES,
    )
    app.add_api_websocket_route("/v1/stream", stream)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_upload_bytes)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """The gateway is connected while the server runs; predictions still queued are dropped."""
    service: Service = app.state.service
    service.gateway.attach()
    try:
        yield
    finally:
        service.gateway.detach()
        service.executor.shutdown(wait=False, cancel_futures=True)


async def _refused(_request: Request, exc: HTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail), exc.headers)


async def _malformed(_request: Request, _exc: RequestValidationError) -> JSONResponse:
    return error(400, NO_FILE)
