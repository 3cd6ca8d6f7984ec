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


@pytest.fixture(scope="session")
def silero_artifact(tmp_path_factory) -> Path:
    """The shipped artifact, copied, naming the Silero VAD engine (as its retrained successor).

    Every mode (``predict``, ``up`` paced or ``--fast``, ``serve``) follows the engine the
    artifact names.
    """
    import json
    import shutil

    from ser_stream.artifact import default_artifact_dir

    folder = tmp_path_factory.mktemp("artifact") / "silero"
    shutil.copytree(default_artifact_dir(), folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["analysis"]["vad"]["engine"] = "silero"
    config_path.write_text(json.dumps(config, indent=2))
    return folder
