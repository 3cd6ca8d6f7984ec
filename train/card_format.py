"""How the model card writes its figures: percentages, points, corpus names, commands."""

from __future__ import annotations

__all__ = ["bold", "corpus_name", "num", "pct", "points", "reproduce"]

_CORPUS_NAMES = {"ravdess": "RAVDESS", "tess": "TESS", "savee": "SAVEE"}


def reproduce(report: dict) -> str:
    """`` Reproduce: `COMMAND`.`` for a report that names its command, else nothing."""
    command = report.get("command")
    return f" Reproduce: `{command}`." if command else ""


def corpus_name(name: str) -> str:
    """A corpus as its authors name it (``savee``: SAVEE)."""
    return _CORPUS_NAMES.get(name, name)


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal, ``-`` when missing."""
    return "-" if value is None else f"{value:.1%}"


def bold(value: float | None) -> str:
    """:func:`pct` in bold, ``-`` when missing."""
    return "-" if value is None else f"**{value:.1%}**"


def points(value: float | None) -> str:
    """A difference of shares in percentage points, ``-`` when missing."""
    return "-" if value is None else f"{100 * value:.1f}"


def num(value: float | None) -> str:
    """A number with three decimals, ``-`` when missing."""
    return "-" if value is None else f"{value:.3f}"
