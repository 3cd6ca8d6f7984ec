from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_stream.train.cross_fit import FoldRun, cross_fitted_temperatures
from ser_stream.train.datasets import Clip
from ser_stream.train.folds import EMOBOX_FOLDS, OTHER_SPEAKER_FOLDS, speaker_fold, speaker_splits
from ser_stream.train.protocol_corpus import tess_word_split
from ser_stream.train.scores import ClipScores, classification_metrics, cross_corpus_metrics
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
        neutral, happy, calm = 0, 1, 7
        y_true = np.array([neutral, neutral, happy, calm])
        y_pred = np.array([calm, neutral, happy, neutral])
        result = cross_corpus_metrics(y_true, y_pred)
        assert result["strict"]["n"] == 3
        assert result["strict"]["accuracy"] == 2 / 3

    def test_calm_as_neutral_merges_both_sides(self):
        """Calm counted as neutral: calm truth and calm predictions both become neutral."""
        y_true = np.array([0, 0, 1, 7])
        y_pred = np.array([7, 0, 1, 0])
        merged = cross_corpus_metrics(y_true, y_pred)["calm_as_neutral"]
        assert merged["n"] == 4 and merged["accuracy"] == 1.0


class TestTessWordSplit:
    def test_words_never_straddle_the_split(self):
        """Every word's clips (all emotions, both speakers) land on one side."""
        clips = [
            Clip(Path(f"{s}_{w}_{e}.flac"), "happy", "tess", f"tess-{s}")
            for s in ("OAF", "YAF")
            for w in [f"word{i}" for i in range(40)]
            for e in ("happy", "sad")
        ]
        ids = np.arange(len(clips))
        train, val = tess_word_split(clips, ids, seed=0)
        words = lambda part: {clips[i].path.stem.split("_")[1] for i in part}  # noqa: E731
        assert not words(train) & words(val)
        assert len(words(val)) == 4 and len(train) + len(val) == len(clips)


class TestCrossFittedCalibration:
    def run(self, fold: int, sharpness: float, seed: int):
        rng = np.random.default_rng(seed)
        logits = rng.normal(0, 1.5, (300, 8))
        truth = np.array(
            [rng.choice(8, p=np.exp(row) / np.exp(row).sum()) for row in logits], dtype=np.int64
        )
        sharp = np.exp(sharpness * logits)
        probs = sharp / sharp.sum(axis=1, keepdims=True)
        clips = np.arange(300)
        scores = ClipScores(clips, truth, probs, probs, truth, probs, probs, clips)
        return FoldRun(fold, (fold,), 1.0, scores, scores, {})

    def test_no_fold_is_calibrated_on_its_own_test_speakers(self):
        """A fold's temperature comes from the other folds: an odd fold does not pull its own."""
        from ser_stream.train.calibration import fit_temperature

        runs = [self.run(1, 2.0, 0), self.run(2, 2.0, 1), self.run(3, 0.5, 2)]
        temperatures = cross_fitted_temperatures(
            [r.clean.window_raw for r in runs],
            [r.clean.window_true for r in runs],
            [r.validation_temperature for r in runs],
        )
        others = runs[:2]
        expected = fit_temperature(
            np.concatenate([r.clean.window_raw for r in others]),
            np.concatenate([r.clean.window_true for r in others]),
        )
        assert temperatures[2] == pytest.approx(expected)
        assert temperatures[2] > 1.5 and temperatures[0] < temperatures[2]

    def test_a_lone_fold_keeps_its_validation_temperature(self):
        """With one fold there is nothing else to fit on."""
        run = self.run(1, 2.0, 0)
        lone = cross_fitted_temperatures([run.clean.window_raw], [run.clean.window_true], [1.0])
        assert lone == [1.0]


class TestClipScores:
    def scores(self) -> ClipScores:
        """Clips 5, 7 and 9 with 2, 1 and 3 windows."""
        clips = np.array([5, 7, 9])
        window_clip = np.array([5, 5, 7, 9, 9, 9])
        rng = np.random.default_rng(0)
        window = rng.dirichlet(np.ones(8), size=6)
        means = np.stack([window[window_clip == c].mean(axis=0) for c in clips])
        truth = np.array([0, 1, 2])
        window_truth = np.array([0, 0, 1, 2, 2, 2])
        return ClipScores(clips, truth, means, means, window_truth, window, window, window_clip)

    def test_subset_keeps_the_windows_of_the_kept_clips_only(self):
        """Dropping clip 7 drops its one window; the other clips keep theirs, in order."""
        kept = self.scores().subset(np.array([True, False, True]))
        assert kept.clip_ids.tolist() == [5, 9] and kept.y_true.tolist() == [0, 2]
        assert kept.window_clip.tolist() == [5, 5, 9, 9, 9]
        assert kept.window_true.tolist() == [0, 0, 2, 2, 2]
        assert len(kept.window_raw) == len(kept.window_calibrated) == 5

    def test_concatenate_joins_every_field_in_order(self):
        """Two parts become one set of scores, the first part's clips and windows first."""
        scores = self.scores()
        first = scores.subset(np.array([True, False, False]))
        rest = scores.subset(np.array([False, True, True]))
        joined = ClipScores.concatenate([first, rest])
        for field in ("clip_ids", "y_true", "raw", "window_clip", "window_calibrated"):
            assert np.array_equal(getattr(joined, field), getattr(scores, field)), field

    def test_empty_scores_no_clip_and_no_window(self):
        """Empty scores have the label columns, so they join with others."""
        empty = ClipScores.empty()
        assert empty.raw.shape == (0, 8) and empty.window_raw.shape == (0, 8)
        joined = ClipScores.concatenate([empty, self.scores()])
        assert joined.clip_ids.tolist() == [5, 7, 9]
