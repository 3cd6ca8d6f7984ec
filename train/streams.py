"""Training sees what serving sees: stream normalization over cached windows, and babble.

Also which recordings make up each clip's babble noise.

Serving runs one :class:`~ser_stream.stages.normalize.StreamNormalizer` per file
(``predict``) or per live stream (``up``). Here the same class runs over cached windows:
per clip, as ``predict`` judges a file, or over a *session* (several clips of one speaker
in a row), as a live stream hears one speaker utterance after utterance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ser_stream.stages.normalize import NormalizeConfig, StreamNormalizer
from ser_stream.train.cache import WindowSet
from ser_stream.train.datasets import Clip

__all__ = [
    "SESSION_GAP_S",
    "fold_babble",
    "normalize_per_clip",
    "normalize_sessions",
    "prior_statistics",
    "same_speaker_babble",
    "speaker_sessions",
]

SESSION_GAP_S = 1.0
"""Pause between consecutive clips of a simulated session, in seconds."""


def prior_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation over every frame of ``(windows, frames, d)``."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-5)


def normalize_per_clip(
    windows: WindowSet, config: NormalizeConfig, column_kinds: Sequence[str] | None = None
) -> np.ndarray:
    """Normalize each clip's windows (each variant apart) as ``predict`` would a file.

    ``column_kinds`` (the features config's) is needed when ``config`` normalizes some kinds
    only.
    """
    if not config.enabled:
        return windows.features
    groups = defaultdict(list)
    keys = zip(windows.clip_index.tolist(), windows.variant.tolist(), strict=True)
    for row, key in enumerate(keys):
        groups[key].append(row)
    streams = list(groups.values())
    return _run_streams(windows, streams, [None] * len(streams), config, column_kinds)


def normalize_sessions(
    windows: WindowSet,
    sessions: Sequence[Sequence[tuple[int, int]]],
    config: NormalizeConfig,
    column_kinds: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalize windows as live sessions: each session is ``(clip, variant)`` pairs in order.

    Returns:
        ``(features, rows)``: the normalized matrices and the row of ``windows`` each came
        from (a clip may appear in several sessions, or in none).
    """
    by_key = defaultdict(list)
    for row, key in enumerate(
        zip(windows.clip_index.tolist(), windows.variant.tolist(), strict=True)
    ):
        by_key[key].append(row)
    streams, offsets = [], []
    for session in sessions:
        rows, shifts, clock = [], [], 0.0
        for key in session:
            members = by_key.get(tuple(key), [])
            if not members:
                continue
            rows.extend(members)
            shifts.extend([clock] * len(members))
            clock += float(windows.t_end[members].max()) + SESSION_GAP_S
        if rows:
            streams.append(rows)
            offsets.append(shifts)
    features = _run_streams(windows, streams, offsets, config, column_kinds, compact=True)
    order = np.asarray([row for rows in streams for row in rows], dtype=np.int64)
    return features, order


def speaker_sessions(
    clips: list[Clip],
    clip_ids: Sequence[int],
    variants: Sequence[int],
    rng: np.random.Generator,
    *,
    length: int,
) -> list[list[tuple[int, int]]]:
    """Random sessions of ``length`` clips of one speaker each, covering every clip once.

    Each clip of ``clip_ids`` appears with a random variant from ``variants``.
    """
    by_speaker = defaultdict(list)
    for i in clip_ids:
        by_speaker[clips[i].speaker].append(int(i))
    sessions = []
    for speaker in sorted(by_speaker):
        members = rng.permutation(by_speaker[speaker])
        for start in range(0, len(members), length):
            chunk = members[start : start + length]
            sessions.append([(int(i), int(rng.choice(variants))) for i in chunk])
    return sessions


def _run_streams(
    windows: WindowSet,
    streams: list[list[int]],
    offsets: list[list[float] | None],
    config: NormalizeConfig,
    column_kinds: Sequence[str] | None,
    *,
    compact: bool = False,
) -> np.ndarray:
    n_features = windows.features.shape[-1]
    total = sum(len(rows) for rows in streams)
    out = np.empty(
        (total if compact else len(windows.features), *windows.features.shape[1:]), np.float32
    )
    position = 0
    for rows, shifts in zip(streams, offsets, strict=True):
        normalizer = StreamNormalizer(config, n_features, column_kinds=column_kinds)
        for k, row in enumerate(rows):
            shift = shifts[k] if shifts else 0.0
            matrix = normalizer.push(
                windows.features[row], windows.t_start[row] + shift, windows.t_end[row] + shift
            )
            out[position if compact else row] = matrix
            position += 1
    return out


def same_speaker_babble(clips: list[Clip], *, k: int = 4, seed: int = 0) -> list[list[Path]]:
    """For each clip, ``k`` other clips of its own speaker: babble that adds no other voice."""
    by_speaker = defaultdict(list)
    for i, clip in enumerate(clips):
        by_speaker[clip.speaker].append(i)
    babble = []
    for i, clip in enumerate(clips):
        # Seeded per clip and drawn from its speaker's clips in a fixed order, so a clip
        # gets the same babble in every list it is in (and its cached copies are shared).
        rng = np.random.default_rng([seed, clip.key])
        others = sorted((j for j in by_speaker[clip.speaker] if j != i), key=_stable_order(clips))
        chosen = rng.choice(others, size=min(k, len(others)), replace=False) if others else []
        babble.append([clips[j].path for j in chosen])
    return babble


def fold_babble(
    clips: list[Clip], fold_of: Callable[[Clip], int | None], *, k: int = 6, seed: int = 0
) -> list[list[Path]]:
    """For each clip, ``k`` clips of the other speakers of its test fold (``fold_of``).

    The ``noise`` condition's babble then holds only voices the fold's model never trained
    on. A clip outside every fold gets none.
    """
    folds = [fold_of(clip) for clip in clips]
    by_fold = defaultdict(list)
    for i, fold in enumerate(folds):
        if fold is not None:
            by_fold[fold].append(i)
    babble = []
    for clip, fold in zip(clips, folds, strict=True):
        if fold is None:
            babble.append([])
            continue
        rng = np.random.default_rng([seed, clip.key])
        others = sorted(
            (j for j in by_fold[fold] if clips[j].speaker != clip.speaker),
            key=_stable_order(clips),
        )
        chosen = rng.choice(others, size=min(k, len(others)), replace=False) if others else []
        babble.append([clips[j].path for j in chosen])
    return babble


def _stable_order(clips: list[Clip]):
    """Sort key for clip indices that does not depend on the list's order."""
    return lambda j: (clips[j].key, str(clips[j].path))
