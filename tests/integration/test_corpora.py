"""Loaders and the shipped model on the real corpora (skipped when they are absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ser_stream.artifact import load_artifact
from ser_stream.predict import Predictor
from ser_stream.train.datasets import load_ravdess, load_tess


class TestRealCorpora:
    def test_ravdess_has_20_actors_with_the_documented_label_counts(self, corpora_root):
        """1200 RAVDESS clips: per actor 4 neutral and 8 of each other emotion."""
        clips = load_ravdess(corpora_root)
        assert len(clips) == 1200
        assert len({c.speaker for c in clips}) == 20
        counts = Counter(c.label for c in clips)
        assert counts["neutral"] == 80
        assert all(counts[label] == 160 for label in counts if label != "neutral")

    def test_tess_has_two_speakers_seven_emotions_and_no_calm(self, corpora_root):
        """2800 TESS clips, 1400 per speaker, 400 per emotion, none calm."""
        clips = load_tess(corpora_root)
        assert len(clips) == 2800
        assert Counter(c.speaker for c in clips) == {"tess-OAF": 1400, "tess-YAF": 1400}
        counts = Counter(c.label for c in clips)
        assert len(counts) == 7 and "calm" not in counts
        assert set(counts.values()) == {400}


def test_shipped_model_recognizes_clips_it_was_trained_on(corpora_root):
    """Sanity of the shipped artifact: most of a fixed sample of its training clips are right."""
    clips = load_ravdess(corpora_root) + load_tess(corpora_root)
    sample = [clips[i] for i in np.random.default_rng(0).choice(len(clips), 60, replace=False)]
    predictor = Predictor(load_artifact())
    right = sum(predictor.predict_file(str(c.path)).label == c.label for c in sample)
    assert right / len(sample) >= 0.8
