"""Shared fixtures: where the corpora are, and skipping tests that need them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ser_stream.train.datasets import data_root


@pytest.fixture(scope="session")
def corpora_root() -> Path:
    """The real corpora folder; tests using it skip cleanly when it is absent."""
    root = data_root()
    if not (root / "ravdess").is_dir() or not (root / "tess").is_dir():
        pytest.skip(f"corpora not found at {root} (set SER_STREAM_DATA)")
    return root
