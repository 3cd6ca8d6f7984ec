"""Shared fixtures: where the corpora are, and skipping tests that need them."""

from __future__ import annotations

from ser_stream.threads import limit_numeric_threads

limit_numeric_threads()  # as every ser-stream process: the same float rounding in-process
# ruff: noqa: E402 - the limit must come before numpy loads

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
