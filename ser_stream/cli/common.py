"""Flag values more than one command reads the same way."""

from __future__ import annotations

from pathlib import Path

from ser_stream.errors import InputError

__all__ = ["curve_keys", "replicas"]


def curve_keys(folder: str | None):
    """The CURVE keys of ``--curve KEYDIR`` (None without it)."""
    if not folder:
        return None
    from ser_stream.security import load_keys

    return load_keys(Path(folder))


def replicas(items: list[str]) -> dict[str, int]:
    """``["model=2", "vad=2,features=3"]`` -> ``{"model": 2, "vad": 2, "features": 3}``."""
    counts = {}
    for item in ",".join(items).split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--replicas {item!r} is not STAGE=N (e.g. model=2)")
        counts[name.strip()] = int(value)
    return counts
