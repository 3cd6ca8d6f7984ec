"""Feature windows of whole corpora, computed in parallel and cached on disk.

Each clip variant is cached on its own, keyed by the file, the analysis settings, the
augmentation and the code that computes features: an interrupted run resumes where it
stopped, and a run over another list that shares clips with an earlier one (another
protocol, another recipe with the same augmentation) computes only the clips it has not
seen. Random draws are seeded per clip (:attr:`Clip.key`), so a clip's augmented copies are
the same in every list.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
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
from ser_stream.stages import denoise, features, spectral, spectral_gate, vad, vad_state, voicing
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.train import acoustics
from ser_stream.train import augment as augment_module
from ser_stream.train.augment import AugmentConfig, augment
from ser_stream.train.channels import apply_condition
from ser_stream.train.codecs import CODECS, ffmpeg_available
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
    denoise,
    features,
    spectral,
    spectral_gate,
    vad,
    vad_state,
    voicing,
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
    if condition in CODECS and not ffmpeg_available():
        # Checked here: a clip the analysis rejects is cached as skipped for good.
        raise InputError(
            f"channel condition {condition!r} runs a real codec through ffmpeg, which is not "
            "installed: apt-get install ffmpeg (or make setup-dev)"
        )
    copies = augmentation.copies if augmentation and condition is None else 0
    babble = babble or [()] * len(clips)
    jobs = [
        _job(clip, v, babble[i], seed, condition)
        for i, clip in enumerate(clips)
        for v in range(copies + 1)
    ]
    owners = [i for i in range(len(clips)) for _ in range(copies + 1)]
    store = _ClipStore(cache, config, augmentation if copies else None, condition)
    results = store.load(jobs)
    missing = [n for n, result in enumerate(results) if result is _MISSING]
    if cache and not missing:
        log.info("feature cache hit", folder=str(store.folder), clips=len(jobs))
    elif cache:
        log.info("feature cache", reused=len(jobs) - len(missing), computing=len(missing))
    todo = [jobs[n] for n in missing]
    computed = _run_jobs(todo, config, augmentation, condition, workers, progress)
    # Saved as they come, so an interrupted run keeps what it computed.
    for n, (windows, lasting) in zip(missing, computed, strict=True):
        results[n] = windows
        if lasting:
            store.save(jobs[n], windows)
    feats, index, variant, starts, ends = [], [], [], [], []
    skipped = 0
    for i, job, windows in zip(owners, jobs, results, strict=True):
        v = job.variant
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
    return WindowSet(
        np.stack(feats) if feats else np.zeros(shape, np.float32),
        np.asarray(index, dtype=np.int64),
        np.asarray(variant, dtype=np.int64),
        np.asarray(starts, dtype=np.float64),
        np.asarray(ends, dtype=np.float64),
    )


_CONDITION_CODE = ("channels.py", "codecs.py", "rooms.py")
"""Files of the channel yardstick (beside this one): they key only the conditioned entries,
so a new yardstick condition leaves the clean and augmented features valid."""


def _code_digest(files: tuple[str, ...] = ()) -> bytes:
    """Digest of the code that turns audio into features, as imported by this process."""
    digest = hashlib.sha256()
    for file in (*(module.__file__ for module in _FEATURE_CODE), __file__):
        digest.update(Path(file).read_bytes())
    for name in files:
        path = Path(__file__).with_name(name)
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.digest()


@lru_cache(maxsize=1)
def _ffmpeg_version() -> str:
    """The version line of ffmpeg: another build is another codec, so other entries."""
    import subprocess

    try:
        done = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "absent"
    return done.stdout.splitlines()[0] if done.stdout else "absent"


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    libraries = (
        "numpy",
        "scipy",
        "librosa",
        "noisereduce",
        "soxr",
        "webrtcvad-wheels",
        "soundfile",
        "pyroomacoustics",
    )
    for name in libraries:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass(frozen=True, slots=True)
class _Job:
    """One clip variant to analyse: ``variant`` 0 is the clean (or conditioned) clip."""

    path: Path
    variant: int
    sources: tuple[Path, ...]
    seed: int


def _job(clip: Clip, variant: int, sources: Sequence[Path], seed: int, condition: str | None):
    if variant == 0 and condition is None:
        # The clean clip: no random draw, no babble, the same entry for every recipe.
        return _Job(clip.path, 0, (), 0)
    return _Job(clip.path, variant, tuple(sources), seed * 1_000_003 + clip.key * 101 + variant)


_MISSING = object()
"""A job the clip store has no entry for (``None`` is a clip that could not be analysed)."""

_Windows = list[tuple[np.ndarray, float, float]] | None


class _ClipStore:
    """Per-clip-variant feature files under ``cache/clips/``, keyed by everything they depend on."""

    def __init__(
        self,
        cache: Path | None,
        config: AnalysisConfig,
        augmentation: AugmentConfig | None,
        condition: str | None,
    ) -> None:
        self.folder = cache / "clips" if cache else None
        self._clean = condition is None
        self._base = self._digest(config, augmentation, condition)
        self._clean_base = self._digest(config, None, None)

    @staticmethod
    def _digest(
        config: AnalysisConfig, augmentation: AugmentConfig | None, condition: str | None
    ) -> bytes:
        spec = {
            "config": config.to_dict(),
            "libraries": _library_versions(),
            "ffmpeg": _ffmpeg_version() if condition in CODECS else None,
            "augmentation": augmentation.to_dict() if augmentation else None,
            "condition": condition,
        }
        code = _CONDITION_DIGEST if condition else _CODE_DIGEST
        return hashlib.sha256(code + json.dumps(spec, sort_keys=True).encode()).digest()

    def _path(self, job: _Job) -> Path:
        clean = self._clean and job.variant == 0
        digest = hashlib.sha256(self._clean_base if clean else self._base)
        digest.update(f"{job.variant}|{job.seed}|".encode())
        for path in (job.path, *job.sources):
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        name = digest.hexdigest()[:24]
        return self.folder / name[:2] / f"{name}.npz"

    def load(self, jobs: list[_Job]) -> list:
        """Each job's stored windows, or :data:`_MISSING`."""
        if self.folder is None:
            return [_MISSING] * len(jobs)
        results: list = []
        for job in jobs:
            path = self._path(job)
            try:
                with np.load(path) as data:
                    if bool(data["skipped"]):
                        results.append(None)
                    else:
                        matrices, starts, ends = data["features"], data["t_start"], data["t_end"]
                        results.append(list(zip(matrices, starts, ends, strict=True)))
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
                # Absent, or cut short by an interrupted run: computed again.
                results.append(_MISSING)
        return results

    def save(self, job: _Job, windows: _Windows) -> None:
        """Store one job's windows; a cache that cannot be written never ends a run."""
        if self.folder is None:
            return
        path = self._path(job)
        matrices = [m for m, _, _ in windows or []]
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A unique name: two runs may compute the same entry at the same time.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
            with os.fdopen(fd, "wb") as file:
                np.savez(
                    file,
                    skipped=windows is None,
                    features=np.stack(matrices) if matrices else np.zeros((0, 0, 0), np.float32),
                    t_start=np.asarray([t for _, t, _ in windows or []], dtype=np.float64),
                    t_end=np.asarray([t for _, _, t in windows or []], dtype=np.float64),
                )
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("feature cache not written", path=str(path), reason=str(exc))
            if tmp:
                Path(tmp).unlink(missing_ok=True)


def _run_jobs(
    jobs: list[_Job], config, augmentation, condition, workers, progress
) -> Iterator[tuple[_Windows, bool]]:
    """Each job's windows, in order, as the workers finish them, and whether to keep them."""
    from tqdm import tqdm

    if not jobs:
        return
    args = [
        (job.path, job.variant, config, augmentation, condition, job.sources, job.seed)
        for job in jobs
    ]
    workers = workers or min(4, os.cpu_count() or 1)
    with tqdm(total=len(args), desc="features", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for arg in args:
                yield _windows_of(arg)
                bar.update()
            return
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_windows_of, args, chunksize=16):
                yield result
                bar.update()


@lru_cache(maxsize=64)
def _source_audio(path: Path, rate: int) -> np.ndarray:
    return load_audio(path, target_rate=rate)


def _windows_of(arg) -> tuple[_Windows, bool]:
    """A clip variant's windows (``None``: skipped) and whether the outcome is lasting.

    A clip the analysis rejects stays rejected; any other failure (memory, a file system
    hiccup) is not remembered, so the next run tries again.
    """
    path, variant, config, augmentation, condition, sources, seed = arg
    rate = config.features.sample_rate
    try:
        samples = load_audio(path, target_rate=rate)
        if condition:
            babble = [_source_audio(p, rate) for p in sources]
            samples = apply_condition(condition, samples, rate, seed, babble_sources=babble)
        elif variant:
            babble = [_source_audio(p, rate) for p in sources]
            samples = augment(samples, rate, augmentation, seed, babble_sources=babble)
        return [(f.matrix, f.t_start, f.t_end) for f in analyze(samples, config)], True
    except InputError as exc:
        log.warning("clip skipped", path=str(path), reason=str(exc))
        return None, True
    except Exception as exc:  # one broken clip must not end a long training run
        log.error("clip skipped", path=str(path), reason=f"{type(exc).__name__}: {exc}")
        return None, False


_CODE_DIGEST = _code_digest()
_CONDITION_DIGEST = _code_digest(_CONDITION_CODE)
"""Read once at import: entries are keyed by the code this process runs, even if the files
change while it runs."""
