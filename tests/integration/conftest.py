"""What the integration tests of stage processes share."""

from __future__ import annotations

import pytest
import zmq


@pytest.fixture
def zctx():
    """A ZeroMQ context whose sockets never block forever: a dead stage fails the test."""
    context = zmq.Context()
    context.setsockopt(zmq.SNDTIMEO, 30_000)
    context.setsockopt(zmq.LINGER, 0)
    yield context
    context.destroy(linger=0)
