"""The routes around the API: the live page, its documentation, health and metrics."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from urllib.parse import urlencode

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ser_stream.web.metrics import CONTENT_TYPE
from ser_stream.web.service import service_of

__all__ = ["docs", "health", "live_page", "live_page_html", "prometheus"]


def live_page_html(labels: tuple[str, ...]) -> str:
    """The live page with the model's labels in it."""
    page = files("ser_stream.web").joinpath("live.html").read_text(encoding="utf-8")
    return page.replace("__LABELS__", html.escape(json.dumps(list(labels))))


async def health(request: Request) -> JSONResponse:
    """200 once every stage of the pipeline is up, 503 before and while stopping."""
    gateway = service_of(request).gateway
    status = "stopping" if gateway.stopping.is_set() else "starting"
    status = "ok" if gateway.serving else status
    body = {"status": status, "streams": len(gateway.clients)}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


async def prometheus(request: Request) -> Response:
    """Prometheus text format: windows, drops, latency, queue depth per stage, restarts."""
    return Response(service_of(request).metrics.text(), media_type=CONTENT_TYPE)


async def docs(request: Request) -> HTMLResponse:
    """The API's documentation; it passes the page's token on to ``/openapi.json``."""
    token = request.query_params.get("token")
    url = "/openapi.json" + (f"?{urlencode({'token': token})}" if token else "")
    return get_swagger_ui_html(openapi_url=url, title="ser-stream API")


async def live_page(request: Request) -> HTMLResponse:
    """The live page: the microphone streamed, the emotions as they come."""
    return HTMLResponse(service_of(request).page)
