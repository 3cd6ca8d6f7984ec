"""Sessions in a room: a speaker's clips in one stream, room noise between and under them.

This is how ``ser-stream up`` hears a speaker: one stream through the VAD (the artifact's
engine, with the live first window), denoise/normalize and features, whose stream
normalization carries across the whole session. Each clip is judged by the windows that
overlap it most; a window superseded by a longer one of the same utterance (the live first
looks at 0.8 and 1.6 s) does not count, as the display replaces it. A clip no window
overlaps was not heard: it counts as an error.

The room comes from :mod:`ser_stream.train.rooms`, written for the yardstick alone: none of
its generators is used by training augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ser_stream.analysis import AnalysisConfig
from ser_stream.audio import load_audio
from ser_stream.messages import Features, Noise, Window
from ser_stream.stages.denoise import DenoiseCore
from ser_stream.stages.features import FeaturesCore
from ser_stream.stages.vad import VADCore
from ser_stream.train.datasets import Clip
from ser_stream.train.rooms import room_noise

__all__ = [
    "LEVEL_DBFS",
    "LIVE_FIRST_WINDOW_S",
    "RoomSession",
    "build_session",
    "clip_probabilities",
    "predicted_labels",
    "room_sessions",
    "session_features",
]

LEVEL_DBFS = (-60.0, -40.0)
"""Range of the room's noise level (RMS, dBFS): a quiet office to a busy one."""

GAP_S = (1.0, 2.0)
"""Room noise alone between two clips, drawn per gap."""

LEAD_S, TAIL_S = 1.0, 3.0
"""Room noise before the first clip and after the last one (long enough to end on silence)."""

LIVE_FIRST_WINDOW_S = 0.8
"""The live first look at an utterance, as ``up`` emits it."""

MAX_CLIPS = 30
"""Clips per speaker session (TESS speakers have 1,400): a random subset beyond this."""

Scorer = Callable[[np.ndarray], np.ndarray]
"""Stream-normalized feature matrices ``(windows, frames, features)`` -> calibrated
probabilities ``(windows, labels)``."""


@dataclass(frozen=True)
class RoomSession:
    """One speaker's clips joined into one recording of a room.

    Attributes:
        audio: the session, 16 kHz mono float32.
        clip_ids: the clips, in the order they are heard.
        spans: each clip's ``(start, end)`` in seconds within ``audio``.
        level_dbfs: the room noise level.
    """

    audio: np.ndarray
    clip_ids: tuple[int, ...]
    spans: tuple[tuple[float, float], ...]
    level_dbfs: float


def build_session(
    clips: Sequence[np.ndarray],
    clip_ids: Sequence[int],
    sample_rate: int,
    rng: np.random.Generator,
    *,
    babble_sources: Sequence[np.ndarray] = (),
) -> RoomSession:
    """Join ``clips`` with room noise between them, and lay the same room under all of it."""
    gaps = [LEAD_S, *rng.uniform(*GAP_S, size=max(0, len(clips) - 1)), TAIL_S]
    parts, spans, position = [], [], 0
    for k, clip in enumerate(clips):
        quiet = np.zeros(round(gaps[k] * sample_rate), np.float32)
        start = position + quiet.size
        parts += [quiet, clip.astype(np.float32)]
        spans.append((start / sample_rate, (start + clip.size) / sample_rate))
        position = start + clip.size
    parts.append(np.zeros(round(gaps[-1] * sample_rate), np.float32))
    speech = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    level = float(rng.uniform(*LEVEL_DBFS))
    noise = room_noise(
        speech.size, sample_rate, rng, level_dbfs=level, babble_sources=babble_sources
    )
    audio = np.clip(speech + noise, -1.0, 1.0).astype(np.float32)
    return RoomSession(audio, tuple(int(i) for i in clip_ids), tuple(spans), level)


def session_features(
    audio: np.ndarray, analysis: AnalysisConfig, *, chunk_s: float = 0.5
) -> list[Features]:
    """The features ``up`` computes for ``audio`` heard as one live stream, in order.

    ``analysis.normalize`` must carry the training prior, as in a model artifact.
    """
    rate = analysis.features.sample_rate
    vad = VADCore(replace(analysis.vad_with_windowing(), first_window_s=LIVE_FIRST_WINDOW_S), rate)
    denoise = DenoiseCore(analysis.denoise, rate)
    features = FeaturesCore(analysis.features, analysis.normalize)
    step = round(chunk_s * rate)
    outputs = []
    for start in range(0, audio.size, step):
        outputs += vad.push(audio[start : start + step])
    outputs += vad.flush()
    vad.close()
    result = []
    for item in outputs:
        if isinstance(item, Noise):
            denoise.push_noise(item)
        elif isinstance(item, Window):
            result.append(features.push(denoise.push(item)))
    return result


def clip_probabilities(
    session: RoomSession,
    windows: Sequence[Features],
    probabilities: np.ndarray,
    *,
    first_look: bool = False,
) -> dict[int, np.ndarray | None]:
    """Each clip's mean window probabilities (``None``: no window heard it).

    With ``first_look``, each clip's first window only: what the display shows first
    (0.8 s into an utterance), before longer windows replace it.
    """
    kept = range(len(windows)) if first_look else _final_looks(windows)
    by_clip: dict[int, list[np.ndarray]] = {i: [] for i in session.clip_ids}
    for k in kept:
        clip = _clip_of(session, windows[k])
        if clip is not None:
            by_clip[clip].append(probabilities[k])
    if first_look:
        return {i: (rows[0] if rows else None) for i, rows in by_clip.items()}
    return {i: (np.mean(rows, axis=0) if rows else None) for i, rows in by_clip.items()}


def _clip_of(session: RoomSession, window: Features) -> int | None:
    """The clip a window overlaps most (``None``: none)."""
    overlaps = [
        max(0.0, min(window.t_end, end) - max(window.t_start, start))
        for start, end in session.spans
    ]
    best = int(np.argmax(overlaps)) if overlaps else -1
    return session.clip_ids[best] if best >= 0 and overlaps[best] > 0 else None


def room_sessions(
    clips: list[Clip],
    clip_ids: Sequence[int],
    analysis: AnalysisConfig,
    scorer: Scorer,
    *,
    seed: int,
    n_labels: int,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Hear every speaker of ``clip_ids`` as one room session; score its clips.

    Returns:
        ``(clip_ids, probabilities, stats)``: the clips scored (at most :data:`MAX_CLIPS`
        per speaker), their probabilities (a row of NaN for a clip never heard), and
        counts of clips heard and missed, the room levels and ``first_look``: each clip's
        first window's probabilities, in the same order.
    """
    rate = analysis.features.sample_rate
    by_speaker: dict[str, list[int]] = {}
    for i in clip_ids:
        by_speaker.setdefault(clips[i].speaker, []).append(int(i))
    scored, rows, first, missed, levels = [], [], [], 0, []
    for speaker in sorted(by_speaker):
        rng = np.random.default_rng([seed, *speaker.encode()])
        members = [int(i) for i in rng.permutation(by_speaker[speaker])[:MAX_CLIPS]]
        others = [i for s, ids in sorted(by_speaker.items()) if s != speaker for i in ids]
        babble_ids = rng.choice(others, size=min(3, len(others)), replace=False) if others else []
        babble = [load_audio(clips[i].path, target_rate=rate) for i in babble_ids]
        audio = [load_audio(clips[i].path, target_rate=rate) for i in members]
        session = build_session(audio, members, rate, rng, babble_sources=babble)
        windows = session_features(session.audio, analysis)
        probabilities = (
            scorer(np.stack([w.matrix for w in windows])) if windows else np.zeros((0, n_labels))
        )
        looks = clip_probabilities(session, windows, probabilities, first_look=True)
        for clip_id, probs in clip_probabilities(session, windows, probabilities).items():
            scored.append(clip_id)
            missed += probs is None
            rows.append(np.full(n_labels, np.nan) if probs is None else probs)
            look = looks[clip_id]
            first.append(np.full(n_labels, np.nan) if look is None else look)
        levels.append(round(session.level_dbfs, 1))
    stats = {
        "clips": len(scored),
        "missed": int(missed),
        "levels_dbfs": levels,
        "first_look": np.asarray(first).reshape(-1, n_labels),
    }
    return np.asarray(scored, np.int64), np.asarray(rows).reshape(-1, n_labels), stats


def predicted_labels(probabilities: np.ndarray) -> np.ndarray:
    """Each clip's label index; -1 (always wrong) for a clip never heard."""
    heard = ~np.isnan(probabilities).any(axis=1)
    labels = np.full(len(probabilities), -1, np.int64)
    labels[heard] = np.argmax(probabilities[heard], axis=1)
    return labels


def _final_looks(windows: Sequence[Features]) -> list[int]:
    """Indices of the windows no later, longer window of the same utterance start replaces."""
    kept = []
    for k, window in enumerate(windows):
        superseded = any(
            abs(later.t_start - window.t_start) < 1e-6 and later.t_end > window.t_end
            for later in windows[k + 1 : k + 4]
        )
        if not superseded:
            kept.append(k)
    return kept
