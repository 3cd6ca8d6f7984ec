from __future__ import annotations

from pathlib import Path

import numpy as np

from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import EMOBOX_FOLDS, classification_metrics, speaker_splits


def corpus() -> list[Clip]:
    clips = [
        Clip(Path(f"a{actor}_{i}.flac"), "happy", "ravdess", f"ravdess-{actor:02d}")
        for actor in range(1, 21)
        for i in range(3)
    ]
    clips += [
        Clip(Path(f"{s}{i}.flac"), "sad", "tess", f"tess-{s}")
        for s in ("OAF", "YAF")
        for i in range(4)
    ]
    return clips


class TestSpeakerSplits:
    def test_no_speaker_is_on_two_sides_and_tess_is_never_tested(self):
        """Train, validation and test share no speaker; TESS only ever trains."""
        clips = corpus()
        splits = speaker_splits(clips)
        assert len(splits) == 6
        for _, test_actors, train, val, test in splits:
            speakers = [{clips[i].speaker for i in part} for part in (train, val, test)]
            assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2])
            assert not (speakers[1] & speakers[2])
            assert {clips[i].actor for i in test} == set(test_actors)
            assert all(clips[i].corpus == "ravdess" for i in np.concatenate([val, test]))
            assert {"tess-OAF", "tess-YAF"} <= speakers[0]

    def test_every_actor_is_tested_exactly_once(self):
        """The six EmoBox folds test each of actors 01-20 once."""
        clips = corpus()
        tested = [clips[i].actor for *_, test in speaker_splits(clips) for i in test]
        assert sorted(set(tested)) == list(range(1, 21))
        assert len(tested) == 60
        assert sorted(a for fold in EMOBOX_FOLDS for a in fold) == list(range(1, 21))

    def test_folds_without_their_actors_are_skipped(self):
        """Data holding only some actors gives only the folds that can be tested."""
        clips = [c for c in corpus() if c.actor in (None, 1, 2)]
        folds = [k for k, *_ in speaker_splits(clips)]
        assert folds == [1, 5]

    def test_without_tess_training_is_ravdess_only(self):
        """with_tess=False keeps TESS out of training too."""
        clips = corpus()
        for _, _, train, _, _ in speaker_splits(clips, with_tess=False):
            assert all(clips[i].corpus == "ravdess" for i in train)


class TestClassificationMetrics:
    def test_unweighted_accuracy_averages_recall_over_present_classes(self):
        """UA is the mean per-class recall; accuracy counts clips."""
        y_true = np.array([0, 0, 0, 1])
        y_pred = np.array([0, 0, 0, 0])
        metrics = classification_metrics(y_true, y_pred)
        assert metrics["accuracy"] == 0.75
        assert metrics["unweighted_accuracy"] == 0.5
        assert (
            np.array(metrics["confusion"])[0, 0] == 3 and np.array(metrics["confusion"])[1, 0] == 1
        )


class TestCrossCorpusMetrics:
    def test_strict_leaves_calm_clips_out_and_counts_calm_predictions_wrong(self):
        """Strict: calm clips are not scored; a clip predicted calm is an error."""
        from ser_stream.train.evaluate import cross_corpus_metrics

        neutral, happy, calm = 0, 1, 7
        y_true = np.array([neutral, neutral, happy, calm])
        y_pred = np.array([calm, neutral, happy, neutral])
        result = cross_corpus_metrics(y_true, y_pred)
        assert result["strict"]["n"] == 3
        assert result["strict"]["accuracy"] == 2 / 3

    def test_calm_as_neutral_merges_both_sides(self):
        """Calm counted as neutral: calm truth and calm predictions both become neutral."""
        from ser_stream.train.evaluate import cross_corpus_metrics

        y_true = np.array([0, 0, 1, 7])
        y_pred = np.array([7, 0, 1, 0])
        merged = cross_corpus_metrics(y_true, y_pred)["calm_as_neutral"]
        assert merged["n"] == 4 and merged["accuracy"] == 1.0


class TestTessWordSplit:
    def test_words_never_straddle_the_split(self):
        """Every word's clips (all emotions, both speakers) land on one side."""
        from ser_stream.train.evaluate import _tess_word_split

        clips = [
            Clip(Path(f"{s}_{w}_{e}.flac"), "happy", "tess", f"tess-{s}")
            for s in ("OAF", "YAF")
            for w in [f"word{i}" for i in range(40)]
            for e in ("happy", "sad")
        ]
        ids = np.arange(len(clips))
        train, val = _tess_word_split(clips, ids, seed=0)
        words = lambda part: {clips[i].path.stem.split("_")[1] for i in part}  # noqa: E731
        assert not words(train) & words(val)
        assert len(words(val)) == 4 and len(train) + len(val) == len(clips)
