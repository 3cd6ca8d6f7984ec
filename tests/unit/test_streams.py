"""Unit tests of the training-side stream helpers: per-clip and session normalization, babble."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ser_stream.stages.normalize import NormalizeConfig, StreamNormalizer
from ser_stream.train.cache import WindowSet
from ser_stream.train.datasets import Clip
from ser_stream.train.folds import EMOBOX_FOLDS, speaker_fold
from ser_stream.train.streams import (
    fold_babble,
    normalize_per_clip,
    normalize_sessions,
    same_speaker_babble,
    speaker_sessions,
)

STREAM = NormalizeConfig(mode="stream")


def window_set() -> WindowSet:
    """Clip 0: two overlapping windows; clip 1: one window; each also as variant 1."""
    rng = np.random.default_rng(0)
    rows = [
        (0, 0, 0.0, 3.0),
        (0, 0, 1.5, 4.5),
        (1, 0, 0.2, 2.0),
        (0, 1, 0.0, 3.0),
        (1, 1, 0.0, 2.0),
    ]
    features = rng.normal(3.0, 2.0, (len(rows), 10, 4)).astype(np.float32)
    return WindowSet(
        features,
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        np.array([r[3] for r in rows]),
    )


def clips(actors=(1, 2, 11), per_actor=5) -> list[Clip]:
    return [
        Clip(Path(f"a{a}_{i}.flac"), "happy", "ravdess", f"ravdess-{a:02d}")
        for a in actors
        for i in range(per_actor)
    ]


class TestNormalizePerClip:
    def test_each_clip_and_variant_is_its_own_stream_in_order(self):
        """Per-clip normalization equals a fresh normalizer fed that clip's windows in order."""
        windows = window_set()
        out = normalize_per_clip(windows, STREAM)
        for rows in ([0, 1], [2], [3], [4]):
            normalizer = StreamNormalizer(STREAM, 4)
            for row in rows:
                expected = normalizer.push(
                    windows.features[row], windows.t_start[row], windows.t_end[row]
                )
                np.testing.assert_array_equal(out[row], expected)

    def test_mode_none_returns_the_cached_features(self):
        """Without normalization nothing is recomputed."""
        windows = window_set()
        assert normalize_per_clip(windows, NormalizeConfig()) is windows.features


class TestSessions:
    def test_a_session_is_one_stream_across_clips(self):
        """In a session the second clip is normalized with the first clip's speech in memory."""
        windows = window_set()
        features, rows = normalize_sessions(windows, [[(0, 0), (1, 0)]], STREAM)
        assert rows.tolist() == [0, 1, 2]
        alone = normalize_per_clip(windows, STREAM)
        np.testing.assert_array_equal(features[:2], alone[:2])
        assert not np.allclose(features[2], alone[2])

    def test_speaker_sessions_cover_each_clip_once_and_never_mix_speakers(self):
        """Sessions hold one speaker each and together hold every clip exactly once."""
        corpus = clips()
        sessions = speaker_sessions(
            corpus, range(len(corpus)), [0, 1], np.random.default_rng(0), length=2
        )
        seen = [clip for session in sessions for clip, _ in session]
        assert sorted(seen) == list(range(len(corpus)))
        for session in sessions:
            assert len({corpus[c].speaker for c, _ in session}) == 1 and len(session) <= 2
            assert all(variant in (0, 1) for _, variant in session)


class TestBabble:
    def test_same_speaker_babble_uses_only_the_speakers_other_clips(self):
        """Training babble never brings in another voice, nor the clip itself."""
        corpus = clips()
        for clip, sources in zip(corpus, same_speaker_babble(corpus, k=3), strict=True):
            assert len(sources) == 3 and clip.path not in sources
            assert all(s.name.split("_")[0] == clip.path.name.split("_")[0] for s in sources)

    def test_fold_babble_uses_other_speakers_of_the_same_fold(self):
        """Evaluation babble comes from the fold's other test speakers, never the speaker."""
        corpus = clips(actors=(1, 11, 20, 4))
        fold_of = {a: f for f, actors in enumerate(EMOBOX_FOLDS) for a in actors}
        for clip, sources in zip(corpus, fold_babble(corpus, speaker_fold, k=4), strict=True):
            actors = {int(s.name.split("_")[0][1:]) for s in sources}
            if clip.actor == 4:  # alone in its fold here
                assert sources == []
                continue
            assert clip.actor not in actors
            assert {fold_of[a] for a in actors} == {fold_of[clip.actor]}

    def test_same_speaker_babble_of_a_clip_does_not_depend_on_the_list(self):
        """A clip draws the same babble in every fold, so its cached copies can be shared."""
        corpus = clips(actors=(1, 2, 11))
        whole = same_speaker_babble(corpus, k=3)
        part = same_speaker_babble(corpus[5:], k=3)  # actor 1 left out, as in another fold
        assert whole[5:] == part
        shuffled = corpus[::-1]  # another order of the same clips
        assert same_speaker_babble(shuffled, k=3)[::-1] == whole
