"""Speaker-disjoint folds: which speakers each fold of the speaker protocol tests.

The RAVDESS actors follow EmoBox's actor-disjoint folds; the speakers of the other corpora
are each given one fold (:data:`OTHER_SPEAKER_FOLDS`), so that with ``all_speakers`` every
speaker of every corpus is tested once, by a model that never heard them.
"""

from __future__ import annotations

import numpy as np

from ser_stream.logs import get_logger
from ser_stream.train.datasets import Clip

__all__ = [
    "EMOBOX_FOLDS",
    "OTHER_SPEAKER_FOLDS",
    "speaker_fold",
    "speaker_splits",
]

EMOBOX_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20),
    (4, 10, 12, 14),
    (8, 9, 19),
    (3, 5, 7),
    (2, 15, 16, 18),
    (6, 13, 17),
)
"""EmoBox's actor-disjoint RAVDESS test folds, restricted to actors 01-20."""

OTHER_SPEAKER_FOLDS: dict[str, int] = {
    "savee-DC": 1,
    "savee-JE": 2,
    "savee-JK": 3,
    "savee-KL": 4,
    "tess-OAF": 5,
    "tess-YAF": 6,
}
"""The fold in which each speaker of the other corpora is tested (speaker protocol)."""

log = get_logger(component="evaluate")


def speaker_fold(clip: Clip, folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS) -> int | None:
    """The fold (1-6) in which the speaker protocol tests ``clip``'s speaker."""
    if clip.actor is not None:
        return next((k + 1 for k, actors in enumerate(folds) if clip.actor in actors), None)
    return OTHER_SPEAKER_FOLDS.get(clip.speaker)


def speaker_splits(
    clips: list[Clip],
    folds: tuple[tuple[int, ...], ...] = EMOBOX_FOLDS,
    *,
    with_tess: bool = True,
    all_speakers: bool = False,
) -> list[tuple[int, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
    """Clip indices of every fold: ``(fold, test_actors, train, validation, test)``.

    Without ``all_speakers`` a fold tests its RAVDESS actors only, and the other corpora
    (TESS with ``with_tess``) are always on the training side. With ``all_speakers`` every
    speaker of every corpus is tested in one fold: a fold also tests the speakers
    :data:`OTHER_SPEAKER_FOLDS` puts there, which no other fold trains on either.
    Folds none of whose speakers is in ``clips`` are left out (with a warning).
    """
    actors = np.array([c.actor or 0 for c in clips])
    corpus = np.array([c.corpus for c in clips])
    speakers = np.array([c.speaker for c in clips])
    splits = []
    for k, test_actors in enumerate(folds):
        val_actors = folds[(k + 1) % len(folds)][:2]
        is_test = np.isin(actors, test_actors)
        others = corpus != "ravdess"
        if all_speakers:
            fold_speakers = [s for s, f in OTHER_SPEAKER_FOLDS.items() if f == k + 1]
            is_test |= np.isin(speakers, fold_speakers)
            train_mask = ~is_test & ~np.isin(actors, val_actors)
        else:
            train_mask = ~others & ~is_test & ~np.isin(actors, val_actors)
            if with_tess:
                train_mask |= corpus == "tess"
        test = np.flatnonzero(is_test)
        if not len(test):
            log.warning("fold skipped: none of its speakers is in the data", fold=k + 1)
            continue
        val = np.flatnonzero(np.isin(actors, val_actors))
        splits.append((k + 1, test_actors, np.flatnonzero(train_mask), val, test))
    return splits
