"""The audio boundary: any file, rate, channel count or dtype in; 16 kHz mono float32 out.

Everything downstream of this module (VAD, denoise, features, model) sees exactly one
format, so conversion happens once, here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ser_stream.errors import InputError

__all__ = [
    "SAMPLE_RATE",
    "bundled_sample",
    "check_audio_file",
    "load_audio",
    "peak_dbfs",
    "stream_audio",
    "to_canonical",
]

SAMPLE_RATE = 16_000
"""The one sample rate every core works at, in Hz."""

_INT_SCALES = {
    np.dtype(np.int8): 2.0**7,
    np.dtype(np.int16): 2.0**15,
    np.dtype(np.int32): 2.0**31,
    np.dtype(np.int64): 2.0**63,
}


def to_canonical(
    samples: np.ndarray, sample_rate: int, *, target_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Convert audio of any dtype, channel layout and rate to mono float32 at ``target_rate``.

    Args:
        samples: ``(n,)`` mono or ``(n, channels)`` interleaved audio; integer PCM (int8/16/32/64,
            uint8) or floating point in [-1, 1] (values beyond are clipped).
        sample_rate: rate of ``samples`` in Hz.
        target_rate: rate to return, in Hz.

    Returns:
        A contiguous float32 array of shape ``(m,)``.

    Raises:
        InputError: empty audio, NaN or infinite samples, an unsupported dtype or shape, or a
            non-positive sample rate.
    """
    array = np.asarray(samples)
    if sample_rate <= 0:
        raise InputError(f"sample rate {sample_rate} Hz is not positive; pass the real rate")
    if array.ndim == 2:
        if array.shape[1] == 0:
            raise InputError("audio has no channels; pass (samples, channels) audio")
    elif array.ndim != 1:
        raise InputError(f"audio of shape {array.shape} is neither mono nor (samples, channels)")
    if array.shape[0] == 0:
        raise InputError("audio is empty; pass at least one sample")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError("audio contains NaN or infinite samples; fix or re-export the source")
    audio = _as_float32(array)
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    np.clip(audio, -1.0, 1.0, out=audio)
    if sample_rate != target_rate:
        # Resampling a clipped signal overshoots full scale (Gibbs): clip again.
        audio = np.clip(_resample(audio, sample_rate, target_rate), -1.0, 1.0)
        if audio.size == 0:
            raise InputError(
                f"audio of {array.shape[0]} samples at {sample_rate} Hz is too short to resample"
            )
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(path: str | Path, *, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3, ...) and convert it with :func:`to_canonical`.

    Raises:
        InputError: the file is missing, unreadable, corrupt, empty or holds invalid samples.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path}: cannot decode audio ({reason}); pass a valid wav, flac, ogg or mp3 file"
        ) from exc
    try:
        return to_canonical(samples, int(sample_rate), target_rate=target_rate)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def stream_audio(
    path: str | Path, *, start_s: float = 0.0, block_s: float = 1.0
) -> Iterator[np.ndarray]:
    """Read an audio file block by block, as :func:`load_audio` converts it, from ``start_s``.

    Memory stays at a block whatever the file's length (a long recording is never held
    whole). The file is opened before this returns, so a missing, empty or corrupt file
    raises here; a block of NaN samples later raises when it is reached.

    Raises:
        InputError: as :func:`load_audio`, with the file's name.
    """
    path = Path(path)
    handle = _open(path, start_s)
    return _blocks(path, handle, max(1, round(block_s * handle.samplerate)))


def _open(path: Path, start_s: float = 0.0):
    """An open ``soundfile.SoundFile`` at ``start_s``, or the reason in one line."""
    import soundfile

    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path")
    try:
        handle = soundfile.SoundFile(str(path))
        if handle.frames == 0:
            handle.close()
            raise InputError(f"{path}: audio is empty; pass at least one sample")
        if start_s > 0:
            handle.seek(min(handle.frames, round(start_s * handle.samplerate)))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path}: cannot decode audio ({reason}); pass a valid wav, flac, ogg or mp3 file"
        ) from exc
    return handle


def _blocks(path: Path, handle, block: int) -> Iterator[np.ndarray]:
    import soxr

    rate = int(handle.samplerate)
    resampler = (
        None
        if rate == SAMPLE_RATE
        else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", quality="HQ")
    )
    with handle:
        for samples, last in _checked_reads(path, handle, block):
            audio = np.clip(samples.mean(axis=1, dtype=np.float32), -1.0, 1.0)
            if resampler is not None:
                audio = np.clip(resampler.resample_chunk(audio, last=last), -1.0, 1.0)
            if audio.size:
                yield np.ascontiguousarray(audio, dtype=np.float32)


def _checked_reads(path: Path, handle, block: int) -> Iterator[tuple[np.ndarray, bool]]:
    """``(samples, last)`` blocks of an open file, checked.

    A decoder failure (a truncated or corrupt file) or NaN/infinite samples raise
    :class:`InputError` with the file's name.
    """
    import soundfile

    while True:
        try:
            samples = handle.read(block, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            seconds = handle.tell() / handle.samplerate if handle.samplerate else 0.0
            raise InputError(
                f"{path}: cannot decode audio after {seconds:.1f} s ({reason}); the file is "
                "truncated or corrupt: re-export or re-download it"
            ) from exc
        last = samples.shape[0] < block
        if samples.shape[0] and not np.all(np.isfinite(samples)):
            raise InputError(f"{path}: audio contains NaN or infinite samples; fix or "
                             "re-export the source")  # fmt: skip
        yield samples, last
        if last:
            return


def check_audio_file(path: str | Path, *, most_s: float = 3600.0) -> None:
    """Decode a file to its end (its first ``most_s`` seconds), without keeping it.

    What fails only part-way (a truncated or corrupt stream, NaN samples) is then known
    before any process starts, not when the capture reaches it.

    Raises:
        InputError: as :func:`stream_audio`, with the file's name.
    """
    path = Path(path)
    with _open(path) as handle:
        most = int(most_s * handle.samplerate)
        for _ in _checked_reads(path, handle, 1 << 16):
            if handle.tell() >= most:
                return


def peak_dbfs(samples: np.ndarray) -> float:
    """Return the peak level of float audio in dBFS (``-inf`` for digital silence)."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def bundled_sample() -> Path:
    """The speech sample shipped with the package (synthetic speech, CC0)."""
    from importlib import resources

    return Path(str(resources.files("ser_stream") / "samples" / "sample_speech.flac"))


def _as_float32(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128.0) / 128.0
    if array.dtype in _INT_SCALES:
        return (array.astype(np.float64) / _INT_SCALES[array.dtype]).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        # Clip before the cast: finite float64 beyond float32's range would become inf.
        return np.clip(array, -1.0, 1.0).astype(np.float32)
    raise InputError(f"audio dtype {array.dtype} is not PCM; pass integer or float samples")


def _resample(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(audio, sample_rate, target_rate, quality="HQ").astype(np.float32)
