"""Sessions in a room: how clips are joined, and how windows are given back to clips."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.messages import Features
from ser_stream.train.room_sessions import (
    LEVEL_DBFS,
    build_session,
    clip_probabilities,
    predicted_labels,
)

RATE = 16_000


def tone(seconds: float, f0: float = 180.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def window(start: float, end: float) -> Features:
    return Features(np.zeros((2, 2), np.float32), start, end, 0)


class TestBuildSession:
    def test_clips_are_placed_at_their_spans_with_room_noise_everywhere(self):
        """Each clip sits at its span; between clips the room is heard, never silence."""
        rng = np.random.default_rng(0)
        clips = [tone(1.0), tone(2.0, 220.0), tone(0.5, 260.0)]
        session = build_session(clips, [4, 7, 9], RATE, rng)
        assert session.clip_ids == (4, 7, 9)
        assert LEVEL_DBFS[0] <= session.level_dbfs <= LEVEL_DBFS[1]
        for clip, (start, end) in zip(clips, session.spans, strict=True):
            assert end - start == pytest.approx(clip.size / RATE)
            segment = session.audio[round(start * RATE) : round(end * RATE)]
            assert np.corrcoef(segment, clip)[0, 1] > 0.99
        gap = session.audio[
            round(session.spans[0][1] * RATE) + 10 : round(session.spans[1][0] * RATE)
        ]
        level = 20 * np.log10(np.sqrt(np.mean(gap.astype(np.float64) ** 2)))
        assert LEVEL_DBFS[0] - 3 <= level <= LEVEL_DBFS[1] + 3
        assert session.audio.size / RATE >= 3.5 + 1.0 + 2 * 1.0 + 3.0

    def test_the_same_seed_gives_the_same_room(self):
        """A session is a function of its seed, so every model hears the same audio."""
        clips = [tone(1.0), tone(1.0)]
        a = build_session(clips, [0, 1], RATE, np.random.default_rng(3))
        b = build_session(clips, [0, 1], RATE, np.random.default_rng(3))
        np.testing.assert_array_equal(a.audio, b.audio)


class TestClipProbabilities:
    def session(self):
        return build_session([tone(2.0), tone(2.0)], [10, 11], RATE, np.random.default_rng(1))

    def test_windows_go_to_the_clip_they_overlap_most_and_first_looks_are_replaced(self):
        """The 0.8 s first look is replaced by the full window of the same utterance start;
        a window straddling the gap belongs to the clip it covers most."""
        session = self.session()
        (a0, a1), (b0, b1) = session.spans
        windows = [window(a0, a0 + 0.8), window(a0, a1), window(b0 - 0.2, b0 + 1.5)]
        probabilities = np.eye(3, 8)
        result = clip_probabilities(session, windows, probabilities)
        np.testing.assert_array_equal(result[10], probabilities[1])
        np.testing.assert_array_equal(result[11], probabilities[2])
        first = clip_probabilities(session, windows, probabilities, first_look=True)
        np.testing.assert_array_equal(first[10], probabilities[0])

    def test_a_clip_no_window_heard_is_none_and_counts_wrong(self):
        """A missed clip has no probabilities; its predicted label is -1 (never right)."""
        session = self.session()
        (a0, a1), _ = session.spans
        result = clip_probabilities(session, [window(a0, a1)], np.eye(1, 8))
        assert result[11] is None
        rows = np.array([result[10], np.full(8, np.nan)])
        assert predicted_labels(rows).tolist() == [0, -1]
