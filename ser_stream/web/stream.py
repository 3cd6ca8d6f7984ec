"""``WebSocket /v1/stream``: a client's live audio in, its stream's records out as they come.

The client announces its sample rate, then sends 16-bit PCM as it is recorded; its audio
goes into the pipeline through the gateway, and its records come back until its
``stream_end`` and ``session_end``. A client that breaks a limit gets an ``error`` record
and the close code that says why.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import numpy as np
from fastapi import WebSocket

from ser_stream.audio import SAMPLE_RATE
from ser_stream.producers import PRODUCER_SILENT_S
from ser_stream.web.gateway import Busy, ClientBusy, ClientStream, gateway_error
from ser_stream.web.limits import AudioPace, token_matches, token_of
from ser_stream.web.service import Service, address, over_rate, service_of

__all__ = ["HELLO_TIMEOUT_S", "IDLE_S", "MAX_RATE", "MIN_RATE", "stream"]

HELLO_TIMEOUT_S = 10.0
"""How long a WebSocket client has to announce its sample rate."""

IDLE_S = PRODUCER_SILENT_S
"""A WebSocket stream without audio this long is ended (as a silent producer's is)."""

MIN_RATE, MAX_RATE = 8_000, 192_000


async def stream(socket: WebSocket) -> None:
    """One client's stream, from its hello to its last record."""
    service = service_of(socket)
    await socket.accept()
    refusal = _refusal(service, socket)
    if refusal is not None:
        reason, code, why = refusal
        service.metrics.refused.labels(reason=why).inc()
        await _close_with_error(socket, "-", reason, code)
        return
    client = await _hello(service, socket)
    if client is None:
        return
    try:
        await _serve(service, socket, client)
    finally:
        service.gateway.release(client)


def _refusal(service: Service, socket: WebSocket) -> tuple[str, int, str] | None:
    """Why the socket is refused (reason, close code, metric label); None: it may stream."""
    wait_s = service.rates.wait_s(address(socket))
    if wait_s:
        return over_rate(service.limits, wait_s), 1008, "rate"
    given = token_of(socket.headers, socket.scope["query_string"])
    if not token_matches(service.settings.token, given):
        return "missing or wrong token; connect to /v1/stream?token=TOKEN", 1008, "token"
    origin = socket.headers.get("origin")
    if origin and not _same_origin(origin, socket.headers.get("host", "")):
        if origin not in service.settings.allowed_origins:
            return (
                f"connections from pages of {origin} are refused; "
                "ser-stream serve --allow-origin ORIGIN admits them",
                1008,
                "origin",
            )
    if not service.gateway.serving:
        return "the pipeline is starting or stopping; retry shortly", 1013, "ready"
    return None


async def _hello(service: Service, socket: WebSocket) -> ClientStream | None:
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
        client = service.gateway.open(rate, address(socket))
    except ClientBusy as exc:
        service.metrics.refused.labels(reason="client_streams").inc()
        await _close_with_error(socket, "-", f"{exc}; end one before starting another", 1013)
        return None
    except Busy as exc:
        service.metrics.refused.labels(reason="streams").inc()
        await _close_with_error(socket, "-", f"{exc}; retry later", 1013)
        return None
    try:
        await socket.send_json(
            {"kind": "stream_start", "stream": client.stream, "sample_rate": rate}
        )
    except Exception:  # gone already: its slot is free again
        service.gateway.release(client)
        return None
    service.log.info("stream started", stream=client.stream, sample_rate=rate)
    return client


async def _serve(service: Service, socket: WebSocket, client: ClientStream) -> None:
    receiving = asyncio.create_task(_receive_audio(service, socket, client))
    sending = asyncio.create_task(_send_records(service, socket, client))
    done, _ = await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
    for task in {receiving, sending} - done:
        task.cancel()
    if sending in done and sending.exception() is None:  # its records are all out
        await service.gateway.end(client)  # the source forgets it too (after a silence end)
        await _close(socket, 1000)
        return
    # The client left: it said so (receiving), or a send to it failed.
    refusal = None
    if receiving in done and receiving.exception() is None:
        refusal = receiving.result()
    await service.gateway.end(client, "eof")
    if refusal is None:
        service.metrics.disconnects.inc()
        service.log.info(
            "client left mid-stream", stream=client.stream, seconds=client.seconds_sent
        )
        return
    reason, code = refusal
    await _close_with_error(socket, client.stream, reason, code)


async def _receive_audio(
    service: Service, socket: WebSocket, client: ClientStream
) -> tuple[str, int] | None:
    """Audio until the client leaves (None) or breaks a limit (the reason, a close code)."""
    limits, refused = service.limits, service.metrics.refused
    pace = AudioPace(limits.max_speed, limits.burst_s)
    heard_at = time.monotonic()  # the last audio
    while True:
        try:
            wait_s = None if client.ended else heard_at + IDLE_S - time.monotonic()
            message = await asyncio.wait_for(socket.receive(), wait_s)
        except asyncio.TimeoutError:
            refused.labels(reason="idle").inc()
            return f"no audio for {IDLE_S:.0f} s; send audio as it is recorded", 1008
        if message["type"] == "websocket.disconnect":
            return None
        if client.unread:
            refused.labels(reason="unread").inc()
            return "the client did not read its records; read them as they come", 1008
        data, text = message.get("bytes"), message.get("text")
        if data is not None and not client.ended:
            if len(data) % 2:
                skipped = "a binary message of an odd number of bytes was skipped"
                await _report(service, socket, client, f"{skipped}; send 16-bit little-endian PCM")
                continue
            samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
            seconds = samples.size / client.sample_rate
            if seconds > limits.burst_s:
                refused.labels(reason="pace").inc()
                return (
                    f"a message of {seconds:.1f} s of audio; send at most "
                    f"{limits.burst_s:g} s per message, as it is recorded",
                    1008,
                )
            if samples.size:
                heard_at = time.monotonic()
            if not pace.allows(seconds):
                refused.labels(reason="pace").inc()
                return (
                    f"audio arrives faster than {limits.max_speed:g}x real time; send it "
                    "as it is recorded, or POST the file to /v1/predict",
                    1008,
                )
            await service.gateway.send_audio(client, samples)
        elif text is not None:
            if _is_end(text):
                await service.gateway.end(client, "eof")
            else:
                skipped = 'a text message other than {"type": "end"} was skipped'
                await _report(service, socket, client, f"{skipped}; send audio as binary messages")


async def _send_records(service: Service, socket: WebSocket, client: ClientStream) -> None:
    while True:
        record = await client.records.get()
        await socket.send_json(record)
        if record["kind"] == "stream_end":
            summary = {**record["summary"], "streams": 1}
            end = {"kind": "session_end", "reason": record["reason"], "summary": summary}
            await socket.send_json(end)
            service.log.info("stream ended", stream=client.stream, reason=record["reason"])
            return


async def _report(service: Service, socket: WebSocket, client: ClientStream, reason: str) -> None:
    service.metrics.errors.labels(stage="gateway").inc()
    await socket.send_json(gateway_error(client.stream, reason))


def _announced_rate(text: str | None) -> int | str:
    """The sample rate of a client's first message, or what is wrong with it."""
    usage = f'the first message must be JSON text like {{"sample_rate": {SAMPLE_RATE}}}'
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
