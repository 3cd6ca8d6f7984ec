from __future__ import annotations

import pytest

from tests.fixtures import train_tiny_artifact


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """A complete artifact of a tiny model trained on synthetic features."""
    pytest.importorskip("tensorflow")
    return train_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny")


@pytest.fixture(scope="session")
def tiny_stream_artifact(tmp_path_factory):
    """A tiny artifact that normalizes per stream and calibrates, as current recipes do."""
    pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("artifact") / "tiny-stream"
    return train_tiny_artifact(folder, stream_normalized=True)
