"""What every route of ``ser-stream serve`` shares: the pipeline's parts, its limits, metrics.

One :class:`Service` per app, on ``app.state.service``; a route reaches it through its
request or socket (:func:`service_of`), so the routes are plain functions of their modules.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse

from ser_stream.logs import get_logger
from ser_stream.predict import Predictor
from ser_stream.web.gateway import Gateway
from ser_stream.web.limits import ClientRates, ServiceLimits
from ser_stream.web.metrics import Metrics

__all__ = ["Service", "ServiceSettings", "address", "error", "over_rate", "service_of"]


@dataclass(frozen=True)
class ServiceSettings:
    """What the app needs to know besides its parts."""

    limits: ServiceLimits = ServiceLimits()
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ("*",)
    allowed_origins: tuple[str, ...] = ()


@dataclass
class Service:
    """The parts, settings and running state that the routes of one app share.

    Attributes:
        gateway: the WebSocket streams' way into the pipeline and back.
        predictor: the cores that ``POST /v1/predict`` runs.
        metrics: what ``/metrics`` shows.
        settings: limits, token, hosts and origins.
        page: the live page, labels filled in.
        rates: requests per client address, HTTP and WebSocket together.
        executor: predictions run here, one at a time, off the event loop.
        predicting: predictions admitted and not yet answered.
    """

    gateway: Gateway
    predictor: Predictor
    metrics: Metrics
    settings: ServiceSettings
    page: str
    rates: ClientRates = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    predicting: int = 0
    log: structlog.typing.FilteringBoundLogger = field(init=False)

    def __post_init__(self) -> None:
        self.rates = ClientRates(self.settings.limits.rate_per_minute)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.log = get_logger(component="web")

    @property
    def limits(self) -> ServiceLimits:
        """The limits on what one client may ask."""
        return self.settings.limits


def service_of(connection: Request | WebSocket) -> Service:
    """The service of the app that took this request or socket."""
    return connection.app.state.service


def address(connection: Request | WebSocket) -> str:
    """The client's address: the connection's own (``X-Forwarded-For`` is not read)."""
    return connection.client.host if connection.client else "-"


def over_rate(limits: ServiceLimits, wait_s: float) -> str:
    """Why a client over its request rate is refused, and when to retry."""
    return (
        f"more than {limits.rate_per_minute} requests a minute from this client; "
        f"retry in {wait_s:.0f} s"
    )


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """A refusal as the API answers one: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)
