"""What keeps one client from exhausting the service: sizes, rates, counts and the token."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

__all__ = [
    "AudioPace",
    "BodyLimit",
    "ClientRates",
    "ServiceLimits",
    "token_of",
    "token_matches",
]


@dataclass(frozen=True)
class ServiceLimits:
    """The limits of ``ser-stream serve``.

    Flags set them: ``--max-upload-mb``, ``--max-upload-seconds``, ``--max-streams``,
    ``--max-streams-per-client``, ``--max-predictions``, ``--rate-limit``, ``--max-speed``.

    Attributes:
        max_upload_mb: largest request body, an upload to ``/v1/predict`` included.
        max_upload_seconds: longest recording an upload may hold (read from its header
            before it is decoded), at up to 48 kHz stereo.
        max_streams: WebSocket streams open at once.
        max_streams_per_client: WebSocket streams one client (address) may hold at once,
            so that one address cannot take every stream; by default 4 (one per tab of the
            live page: a person with a few tabs, or a few behind one NAT), which leaves
            room for at least 8 addresses of the default 32 streams.
        max_predictions: ``/v1/predict`` requests in progress at once (one computes, the
            others wait their turn); one more is told to retry.
        rate_per_minute: requests one client (address) may make per minute, WebSocket
            connections included; ``/healthz`` is not counted.
        max_speed: how much faster than real time a WebSocket client may send audio,
            counted from its first message (it may run ``burst_s`` seconds ahead).
        burst_s: seconds of audio a WebSocket client may send ahead of its pace, and the
            most one message may carry.
        max_message_kb: largest WebSocket message.
    """

    max_upload_mb: float = 25.0
    max_upload_seconds: float = 600.0
    max_streams: int = 32
    max_streams_per_client: int = 4
    max_predictions: int = 4
    rate_per_minute: int = 120
    max_speed: float = 4.0
    burst_s: float = 10.0
    max_message_kb: int = 1024

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


class _Bucket:
    """A token bucket: ``capacity`` at most, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.at = now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount``; return 0, or the seconds until it could be taken (nothing taken)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.at) * self.rate >= self.capacity


class ClientRates:
    """Requests per minute, per client address (a bucket each, forgotten once full again)."""

    def __init__(self, per_minute: int, *, clock=time.monotonic, remember: int = 10_000) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.remember = remember
        self._buckets: dict[str, _Bucket] = {}

    def wait_s(self, client: str) -> float:
        """0 when ``client`` may go on (the request is counted), else seconds to wait."""
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.remember:
                self._forget(now)
            bucket = self._buckets[client] = _Bucket(self.per_minute, self.per_minute / 60, now)
        return bucket.take(1.0, now)

    def _forget(self, now: float) -> None:
        # A full bucket is what a newcomer gets anyway: forgetting it loses nothing. Past
        # that, the oldest go (under a flood of addresses, memory matters more).
        for client in [c for c, b in self._buckets.items() if b.full(now)]:
            del self._buckets[client]
        for client in list(self._buckets)[: max(0, len(self._buckets) - self.remember + 1)]:
            del self._buckets[client]


class AudioPace:
    """How fast one WebSocket client sends audio: at most ``max_speed`` x real time.

    Counted from its first message, so a client whose audio waited (a slow network, or the
    service catching up) is not refused when it arrives in a burst.
    """

    def __init__(self, max_speed: float, burst_s: float, *, clock=time.monotonic) -> None:
        self.clock = clock
        self.max_speed = max_speed
        self.burst_s = burst_s
        self.started = clock()
        self.sent_s = 0.0

    def allows(self, seconds: float) -> bool:
        """Count ``seconds`` of audio; False when they come too fast (nothing counted)."""
        allowed = self.burst_s + self.max_speed * (self.clock() - self.started)
        if self.sent_s + seconds > allowed:
            return False
        self.sent_s += seconds
        return True


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413, announced or not, never read whole.

    A declared ``Content-Length`` over the limit is answered before any of the body is
    read. A body without one is counted as it streams in: past the limit, the application
    sees the client leave (it stops reading) and the client gets the 413.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        """Serve one ASGI connection (only HTTP bodies are limited here)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen, over, answered = 0, False, False

        async def counted():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_over(message) -> None:
            nonlocal answered
            if over and not answered:
                return  # the application's answer to a body cut short is replaced by the 413
            answered = True
            await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await self._refuse(send)

    def too_large(self) -> str:
        """The message of a 413."""
        mb = self.max_bytes / (1024 * 1024)
        return (
            f"the request is larger than {mb:g} MB; send a shorter recording "
            "(ser-stream serve --max-upload-mb raises the limit)"
        )

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": self.too_large()}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def token_of(headers: dict[str, str], query_string: bytes) -> str | None:
    """The token a request carries: ``Authorization: Bearer T``, else ``?token=T``.

    The query form exists for browsers: a page's WebSocket cannot set headers.
    """
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[0] if values else None


def token_matches(expected: str | None, given: str | None) -> bool:
    """True without a token configured, else when ``given`` is it (in constant time)."""
    if expected is None:
        return True
    return given is not None and secrets.compare_digest(expected.encode(), given.encode())
