"""The eight emotion labels and their canonical index order."""

from __future__ import annotations

__all__ = ["LABELS", "label_index"]

LABELS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgusted",
    "surprised",
    "calm",
)

_INDEX = {name: i for i, name in enumerate(LABELS)}


def label_index(label: str) -> int:
    """Return the canonical index of ``label``.

    Raises:
        KeyError: ``label`` is not one of :data:`LABELS`.
    """
    return _INDEX[label]
