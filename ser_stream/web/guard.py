"""Admission of every HTTP request: its client's rate, the token, a free prediction slot.

Each request is counted in the metrics by route and status, refused ones included.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ser_stream.web.limits import token_matches, token_of
from ser_stream.web.service import Service, address, error, over_rate, service_of

__all__ = ["guard"]

COUNTED_ROUTES = (
    "/",
    "/healthz",
    "/metrics",
    "/v1/predict",
    "/v1/stream",
    "/openapi.json",
    "/docs",
)
"""The paths counted by name in the request metrics; any other counts as ``other``."""

OPEN_PATHS = ("/healthz",)
"""Answered to anyone, at any rate: load balancers and orchestrators probe it."""


async def guard(request: Request, call_next) -> Response:
    """The HTTP middleware: refuse, hold back or pass on the request; count the answer."""
    service = service_of(request)
    path = request.url.path
    route = path if path in COUNTED_ROUTES else "other"
    response = _refusal(service, request) if path not in OPEN_PATHS else None
    if response is None and path == "/v1/predict" and request.method == "POST":
        response = await _predict_turn(service, request, call_next)
    if response is None:
        response = await call_next(request)
    service.metrics.requests.labels(route=route, status=str(response.status_code)).inc()
    return response


async def _predict_turn(service: Service, request: Request, call_next) -> Response:
    """A prediction's slot is taken before its upload is read: a 503 reads nothing."""
    limits = service.limits
    if service.predicting >= limits.max_predictions:
        service.metrics.refused.labels(reason="busy").inc()
        message = f"{limits.max_predictions} predictions are in progress; retry in a moment"
        return error(503, message, {"Retry-After": "1"})
    service.predicting += 1
    try:
        return await call_next(request)
    finally:
        service.predicting -= 1


def _refusal(service: Service, request: Request) -> JSONResponse | None:
    """429 over the client's rate (guesses of the token count), 401 without the token."""
    wait_s = service.rates.wait_s(address(request))
    if wait_s:
        service.metrics.refused.labels(reason="rate").inc()
        headers = {"Retry-After": str(max(1, round(wait_s)))}
        return error(429, over_rate(service.limits, wait_s), headers)
    given = token_of(request.headers, request.scope["query_string"])
    if not token_matches(service.settings.token, given):
        service.metrics.refused.labels(reason="token").inc()
        return error(
            401,
            "missing or wrong token; send the header 'Authorization: Bearer TOKEN'",
            {"WWW-Authenticate": "Bearer"},
        )
    return None
