"""``POST /v1/predict``: one uploaded recording in, the JSON of ``predict --json`` out."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path

from fastapi import File, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException

from ser_stream.private import runtime_dir
from ser_stream.web.service import Service, service_of

__all__ = ["MAX_SAMPLES_PER_S", "NO_FILE", "predict"]

MAX_SAMPLES_PER_S = 2 * 48_000
"""Decoded samples an upload may hold per second of its --max-upload-seconds."""

NO_FILE = "send the audio as the multipart field 'file' (curl -F file=@speech.wav)"


async def predict(
    request: Request,
    file: UploadFile | None = File(  # noqa: B008 (FastAPI's way of declaring a form field)
        None, description="the recording: wav, flac, ogg or mp3, any rate and channels"
    ),
):
    """The emotions of one recording, as ``ser-stream predict --json`` gives them."""
    if not isinstance(file, StarletteUpload):  # missing, or a plain text field
        raise HTTPException(400, NO_FILE)
    service = service_of(request)
    name = Path(file.filename or "upload").name[:200] or "upload"
    started = time.monotonic()
    try:
        return await _predict_upload(service, file, name)
    finally:
        service.metrics.predict_seconds.observe(time.monotonic() - started)


async def _predict_upload(service: Service, file: StarletteUpload, name: str) -> JSONResponse:
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
        too_long = _too_long(saved.name, name, service.limits.max_upload_seconds)
        if too_long is not None:
            raise HTTPException(413, too_long)
        loop = asyncio.get_running_loop()
        predict_file = service.predictor.predict_file
        result = await loop.run_in_executor(service.executor, predict_file, saved.name)
    body = {**result.to_json(), "file": name}
    if result.error is not None:
        body["error"] = result.error.replace(saved.name, name)
        return JSONResponse(body, status_code=422)
    service.metrics.count_upload(len(result.windows))
    return JSONResponse(body)


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
