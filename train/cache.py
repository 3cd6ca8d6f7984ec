"""Feature windows of whole corpora, computed in parallel and cached on disk.

A second run with the same clips, analysis settings and augmentation loads the cache
instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ser_stream import analysis as analysis_module
from ser_stream import audio as audio_module
from ser_stream.analysis import AnalysisConfig, analyze
from ser_stream.audio import load_audio
from ser_stream.errors import InputError
from ser_stream.logs import get_logger
from ser_stream.stages import denoise, features, vad
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.train import acoustics
from ser_stream.train import augment as augment_module
from ser_stream.train import channels as channels_module
from ser_stream.train.augment import AugmentConfig, augment
from ser_stream.train.channels import apply_condition
from ser_stream.train.datasets import Clip

__all__ = ["CACHE_ENV", "WindowSet", "cache_dir", "clip_windows"]

CACHE_ENV = "SER_STREAM_CACHE"
"""Environment variable naming the feature cache folder (default ``~/.cache/ser-stream``)."""

log = get_logger(component="cache")

_FEATURE_CODE = (
    acoustics,
    analysis_module,
    audio_module,
    augment_module,
    channels_module,
    denoise,
    features,
    vad,
)


@dataclass(frozen=True, slots=True)
class WindowSet:
    """Feature windows of a list of clips, before stream normalization.

    The windows of one clip and variant are stored in stream order.

    Attributes:
        features: ``(windows, frames, features)`` float32.
        clip_index: for each window, the index of its clip in the clip list.
        variant: for each window, 0 for clean audio, k for the k-th augmented copy.
        t_start: for each window, its start in the clip, in seconds.
        t_end: for each window, its end in the clip, in seconds.
    """

    features: np.ndarray
    clip_index: np.ndarray
    variant: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray

    def select(self, mask: np.ndarray) -> WindowSet:
        """The windows where ``mask`` is true (or at the rows an index array names)."""
        return WindowSet(
            self.features[mask],
            self.clip_index[mask],
            self.variant[mask],
            self.t_start[mask],
            self.t_end[mask],
        )

    def with_features(self, matrices: np.ndarray) -> WindowSet:
        """The same windows carrying other matrices (normalized ones, say)."""
        return replace(self, features=matrices)


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the cache folder: ``explicit``, else ``$SER_STREAM_CACHE``, else the user cache."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "ser-stream"


def clip_windows(
    clips: list[Clip],
    config: AnalysisConfig,
    *,
    augmentation: AugmentConfig | None = None,
    condition: str | None = None,
    babble: Sequence[Sequence[Path]] | None = None,
    seed: int = 0,
    workers: int | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> WindowSet:
    """Compute (or load from ``cache``) the feature windows of every clip and variant.

    Features are stored before stream normalization, which training applies per stream.
    Clips that cannot be analysed are skipped with a warning and contribute no window.

    Args:
        clips: the clips, in the order ``clip_index`` refers to.
        config: analysis settings (their ``normalize`` part is not applied here).
        augmentation: adds that many augmented copies of each clip (variants 1..copies).
        condition: a channel condition (:data:`~ser_stream.train.channels.CONDITIONS`)
            applied to the clean clip instead; variant 0 only.
        babble: per clip, the recordings its babble noise is made of (augmentation: the
            same speaker's other clips; the ``noise`` condition: other test speakers).
        seed: seed of the augmentation draws.
        workers: feature worker processes.
        cache: folder of the cache; ``None`` computes without caching.
        progress: show a progress bar.
    """
    config = replace(config, normalize=NormalizeConfig())
    copies = augmentation.copies if augmentation and condition is None else 0
    babble = babble or [()] * len(clips)
    key = _cache_key(clips, config, augmentation if copies else None, seed, condition, babble)
    path = cache / f"windows-{key}.npz" if cache else None
    if path and path.is_file():
        with np.load(path) as data:
            log.info("feature cache hit", path=str(path), windows=len(data["clip_index"]))
            return WindowSet(
                data["features"],
                data["clip_index"],
                data["variant"],
                data["t_start"],
                data["t_end"],
            )
    jobs = [
        (i, clip.path, v, tuple(babble[i]))
        for i, clip in enumerate(clips)
        for v in range(copies + 1)
    ]
    results = _run_jobs(jobs, config, augmentation, condition, seed, workers, progress)
    feats, index, variant, starts, ends = [], [], [], [], []
    skipped = 0
    for (i, _, v, _), windows in zip(jobs, results, strict=True):
        if windows is None:
            skipped += 1
            continue
        for matrix, t_start, t_end in windows:
            feats.append(matrix)
            index.append(i)
            variant.append(v)
            starts.append(t_start)
            ends.append(t_end)
    if skipped:
        log.warning("clips skipped", count=skipped)
    shape = (0, config.features.n_frames, config.features.n_features)
    result = WindowSet(
        np.stack(feats) if feats else np.zeros(shape, np.float32),
        np.asarray(index, dtype=np.int64),
        np.asarray(variant, dtype=np.int64),
        np.asarray(starts, dtype=np.float64),
        np.asarray(ends, dtype=np.float64),
    )
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            features=result.features,
            clip_index=result.clip_index,
            variant=result.variant,
            t_start=result.t_start,
            t_end=result.t_end,
        )
        tmp.replace(path)
    return result


def _cache_key(
    clips: list[Clip],
    config: AnalysisConfig,
    augmentation: AugmentConfig | None,
    seed: int,
    condition: str | None,
    babble: Sequence[Sequence[Path]],
) -> str:
    digest = hashlib.sha256()
    spec = {
        "config": config.to_dict(),
        "libraries": _library_versions(),
        "augmentation": augmentation.to_dict() if augmentation else None,
        "condition": condition,
        "seed": seed,
    }
    digest.update(json.dumps(spec, sort_keys=True).encode())
    # Any change to the code that turns audio into features invalidates the cache.
    for module in _FEATURE_CODE:
        digest.update(Path(module.__file__).read_bytes())
    for clip, sources in zip(clips, babble, strict=True):
        stat = clip.path.stat()
        digest.update(f"{clip.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        digest.update("|".join(str(p) for p in sources).encode())
    return digest.hexdigest()[:20]


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("numpy", "librosa", "noisereduce", "soxr", "webrtcvad-wheels", "soundfile"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _run_jobs(jobs, config, augmentation, condition, seed, workers, progress):
    from tqdm import tqdm

    args = [
        (path, v, config, augmentation, condition, sources, seed * 1_000_003 + i * 101 + v)
        for i, path, v, sources in jobs
    ]
    workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(args), desc="features", unit="clip", disable=not progress)
    results = []
    if workers == 1:
        for arg in args:
            results.append(_windows_of(arg))
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_windows_of, args, chunksize=16):
                results.append(result)
                bar.update()
    bar.close()
    return results


@lru_cache(maxsize=64)
def _source_audio(path: Path, rate: int) -> np.ndarray:
    return load_audio(path, target_rate=rate)


def _windows_of(arg) -> list[tuple[np.ndarray, float, float]] | None:
    path, variant, config, augmentation, condition, sources, seed = arg
    rate = config.features.sample_rate
    try:
        samples = load_audio(path, target_rate=rate)
        babble = [_source_audio(p, rate) for p in sources]
        if condition:
            samples = apply_condition(condition, samples, rate, seed, babble_sources=babble)
        elif variant:
            samples = augment(samples, rate, augmentation, seed, babble_sources=babble)
        return [(f.matrix, f.t_start, f.t_end) for f in analyze(samples, config)]
    except InputError as exc:
        log.warning("clip skipped", path=str(path), reason=str(exc))
    except Exception as exc:  # one broken clip must not end a long training run
        log.error("clip skipped", path=str(path), reason=f"{type(exc).__name__}: {exc}")
    return None
