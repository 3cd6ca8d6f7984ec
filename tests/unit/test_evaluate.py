from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import (
    EMOBOX_FOLDS,
    OTHER_SPEAKER_FOLDS,
    classification_metrics,
    speaker_fold,
    speaker_splits,
)
from ser_stream.train.training import balanced_weights


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


def three_corpora() -> list[Clip]:
    savee = [
        Clip(Path(f"{s}{i}.flac"), "angry", "savee", f"savee-{s}")
        for s in ("DC", "JE", "JK", "KL")
        for i in range(2)
    ]
    return corpus() + savee


class TestAllSpeakerFolds:
    def test_every_speaker_of_every_corpus_is_tested_once_and_never_trained_on_there(self):
        """Each of the 26 speakers is in exactly one fold's test side, on no other side of it."""
        clips = three_corpora()
        tested = []
        for k, _, train, val, test in speaker_splits(clips, all_speakers=True):
            sides = [{clips[i].speaker for i in part} for part in (train, val, test)]
            assert not (sides[0] & sides[2]) and not (sides[1] & sides[2])
            assert not (sides[0] & sides[1])
            assert all(speaker_fold(clips[i]) == k for i in test)
            tested += sorted(sides[2])
        assert sorted(tested) == sorted({c.speaker for c in clips})
        assert len(tested) == 26

    def test_fold_of_each_speaker(self):
        """RAVDESS actors follow EmoBox; the other corpora's speakers their own table."""
        clips = three_corpora()
        by_speaker = {c.speaker: speaker_fold(c) for c in clips}
        assert by_speaker["ravdess-13"] == 6 and by_speaker["ravdess-04"] == 2
        assert {s: by_speaker[s] for s in OTHER_SPEAKER_FOLDS} == OTHER_SPEAKER_FOLDS


class TestBalancedWeights:
    def test_labels_weigh_the_same_within_and_across_groups(self):
        """Each label's windows weigh the same in total; each group too, label by label."""
        labels = np.array([0, 0, 0, 0, 1, 1, 0, 1])
        groups = np.array([0, 0, 0, 0, 0, 0, 1, 1])
        weights = balanced_weights(labels, groups)
        assert weights.mean() == pytest.approx(1.0)
        totals = np.bincount(labels, weights=weights)
        assert totals[0] == pytest.approx(totals[1])
        assert weights[6] > weights[0]  # the small group's clips count for more each

    def test_without_groups_it_is_inverse_label_frequency(self):
        """No groups: the usual class weights, scaled to mean 1."""
        labels = np.array([0, 0, 0, 1])
        weights = balanced_weights(labels)
        assert weights.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])


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


class TestCrossFittedCalibration:
    def run(self, fold: int, sharpness: float, seed: int):
        from ser_stream.train.evaluate import ClipScores, _FoldRun

        rng = np.random.default_rng(seed)
        logits = rng.normal(0, 1.5, (300, 8))
        truth = np.array(
            [rng.choice(8, p=np.exp(row) / np.exp(row).sum()) for row in logits], dtype=np.int64
        )
        sharp = np.exp(sharpness * logits)
        probs = sharp / sharp.sum(axis=1, keepdims=True)
        clips = np.arange(300)
        scores = ClipScores(clips, truth, probs, probs, truth, probs, probs, clips)
        return _FoldRun(fold, (fold,), 1.0, scores, scores, {})

    def test_no_fold_is_calibrated_on_its_own_test_speakers(self):
        """A fold's temperature comes from the other folds: an odd fold does not pull its own."""
        from ser_stream.train.calibration import fit_temperature
        from ser_stream.train.evaluate import _cross_fitted_temperatures

        runs = [self.run(1, 2.0, 0), self.run(2, 2.0, 1), self.run(3, 0.5, 2)]
        temperatures = _cross_fitted_temperatures(runs)
        others = runs[:2]
        expected = fit_temperature(
            np.concatenate([r.clean.window_raw for r in others]),
            np.concatenate([r.clean.window_true for r in others]),
        )
        assert temperatures[2] == pytest.approx(expected)
        assert temperatures[2] > 1.5 and temperatures[0] < temperatures[2]

    def test_a_lone_fold_keeps_its_validation_temperature(self):
        """With one fold there is nothing else to fit on."""
        from ser_stream.train.evaluate import _cross_fitted_temperatures

        assert _cross_fitted_temperatures([self.run(1, 2.0, 0)]) == [1.0]
