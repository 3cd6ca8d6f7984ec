"""Unit tests of the model card and the experiments record: every figure comes from files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_stream.labels import LABELS
from ser_stream.train.calibration import abstention_metrics
from ser_stream.train.channels import DESCRIPTIONS, SHARED_WITH_TRAINING
from ser_stream.train.cross_fit import FoldRun, cross_fitted_abstention
from ser_stream.train.experiments import main as experiments_main
from ser_stream.train.model_card import headline, write_model_card
from ser_stream.train.protocol_channel import channel_report
from ser_stream.train.protocol_room import room_report
from ser_stream.train.scores import (
    ClipScores,
    calibration_report,
    classification_metrics,
    cross_corpus_metrics,
)


def metrics_of(ua: float) -> dict:
    """Metrics shaped like an older evaluate run's (``cross``, simulated channels)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 200)
    pred = np.where(rng.random(200) < ua, y, (y + 1) % 8)
    m = classification_metrics(y, pred)
    fold = {**m, "fold": 1, "test_actors": [1, 11, 20], "session": m}
    conditions = {
        name: {
            "mean_unweighted_accuracy": m["unweighted_accuracy"] - loss,
            "loss_vs_clean": loss,
            "pooled": m,
            "folds": [fold],
        }
        for name, loss in (("telephone", 0.2), ("laptop", 0.05), ("noise", 0.1))
    }
    return {
        "recipe": {"name": "demo"},
        "seed": {"description": "random", "test": m, "validation": m, "command": "c1"},
        "speaker": {
            "description": "folds",
            "mean_accuracy": m["accuracy"],
            "mean_unweighted_accuracy": m["unweighted_accuracy"],
            "mean_macro_f1": m["macro_f1"],
            "session_mean_unweighted_accuracy": 0.5,
            "session_description": "live",
            "pooled": m,
            "folds": [fold],
            "calibration": {
                "temperatures": [1.2],
                "window_ece_before": 0.12,
                "window_ece_after": 0.04,
                "clip_ece_before": 0.13,
                "clip_ece_after": 0.045,
            },
            "command": "c2",
        },
        "cross": {
            "description": "cross",
            "ravdess_to_tess": {"trained_on": "R", "strict": m, "calm_as_neutral": m},
            "tess_to_ravdess": {"trained_on": "T", "strict": m, "calm_as_neutral": m},
            "command": "c3",
        },
        "channel": {
            "description": "channels",
            "clean_mean_unweighted_accuracy": m["unweighted_accuracy"],
            "conditions": conditions,
            "command": "c4",
        },
    }


class TestHeadline:
    def test_takes_each_figure_from_its_protocol(self):
        """The headline holds SI UA, both strict cross UAs, the worst channel loss, clip ECE."""
        metrics = metrics_of(0.6)
        figures = headline(metrics)
        assert figures["speaker_mean_ua"] == metrics["speaker"]["mean_unweighted_accuracy"]
        assert figures["channel_worst_loss"] == 0.2
        assert figures["clip_ece"] == 0.045
        assert (
            figures["tess_to_ravdess_ua"]
            == metrics["cross"]["tess_to_ravdess"]["strict"]["unweighted_accuracy"]
        )

    def test_screen_folds_mean_only_when_both_were_run(self):
        """Folds 1 and 4 give a figure comparable between screens and full runs."""
        metrics = metrics_of(0.6)
        assert headline(metrics)["speaker_screen_ua"] is None  # fold 1 only
        fold_4 = {**metrics["speaker"]["folds"][0], "fold": 4, "unweighted_accuracy": 0.3}
        metrics["speaker"]["folds"].append(fold_4)
        fold_1 = metrics["speaker"]["folds"][0]["unweighted_accuracy"]
        assert headline(metrics)["speaker_screen_ua"] == pytest.approx((fold_1 + 0.3) / 2)

    def test_missing_protocols_are_none(self):
        """A run of one protocol leaves the other figures empty, not zero."""
        figures = headline({"seed": metrics_of(0.5)["seed"]})
        assert figures["speaker_mean_ua"] is None and figures["channel_worst_loss"] is None


class TestModelCard:
    def test_card_reports_all_four_protocols_and_calibration(self, tmp_path: Path):
        """Seed, speaker (with live sessions), cross-corpus, channel and ECE all appear."""
        card = card_of(tmp_path, metrics_of(0.6))
        for heading in ("Seed protocol", "Speaker-independent", "Cross-corpus", "Channel shift"):
            assert heading in card
        assert "| telephone band 300-3400 Hz + 8 kHz mu-law |" in card
        assert "| 20.0 | - |" in card  # the telephone loss, in points; sharing never recorded
        assert "The channel conditions are simulations" in card
        assert "confusion_channel.png" in card
        assert "| clip (`predict`) | 0.130 | 0.045 |" in card
        assert "Heard live instead (live): mean UA **50.0%**" in card
        assert "CC BY-NC-SA 4.0" in card and "CC BY-NC-ND 4.0" in card
        assert "8 emotions (neutral, happy, sad, angry," in card  # no config.json: all labels

    def test_experiments_command_writes_the_table_from_run_folders(self, tmp_path: Path):
        """Each RUN_DIR=CHANGE becomes a row whose figures are that run's metrics."""
        runs = run_folders(tmp_path, {"base": metrics_of(0.4), "better": metrics_of(0.7)})
        model = tmp_path / "model"
        model.mkdir()
        experiments_main([str(model), *runs, "--note", "screens used older seeds"])
        record = json.loads((model / "experiments.json").read_text())
        assert [e["change"] for e in record["entries"]] == ["base change", "better change"]
        card = (model / "MODEL_CARD.md").read_text()
        assert "## What was tried" in card and "better change" in card
        assert "- screens used older seeds" in card
        better = headline(metrics_of(0.7))["speaker_mean_ua"]
        assert f"{better:.1%}" in card


def test_calibration_report_pools_windows_and_clips():
    """The report's ECEs are computed over all scores given, before and after calibration."""
    probs = np.full((4, len(LABELS)), 1 / len(LABELS))
    truth = np.zeros(4, dtype=np.int64)
    scores = ClipScores(truth, truth, probs, probs, truth, probs, probs, truth)
    report = calibration_report([scores, scores], [1.0, 2.0])
    assert report["temperatures"] == [1.0, 2.0]
    assert report["clip_ece_before"] == report["clip_ece_after"]


# Metrics of the current protocols, made by the real evaluate helpers on small inputs.

SHARED = [i for i, label in enumerate(LABELS) if label != "calm"]
"""The 7 labels every corpus has: a test set of these has the same strict and merged UA."""


def graded(right: int, offset: int = 0, per_label: int = 10) -> ClipScores:
    """Clips of the 7 shared labels, ``right`` of each label's ``per_label`` judged right.

    Their UA is ``right / per_label``; right clips are confident (0.9), wrong ones not (0.4).
    """
    y = np.repeat(SHARED, per_label)
    pred = y.copy()
    for k, label in enumerate(SHARED):
        pred[np.flatnonzero(y == label)[right:]] = SHARED[(k + 1) % len(SHARED)]
    top = np.where(pred == y, 0.9, 0.4)
    probs = np.tile(((1 - top) / (len(LABELS) - 1))[:, None], (1, len(LABELS)))
    probs[np.arange(len(y)), pred] = top
    ids = offset + np.arange(len(y))
    return ClipScores(ids, y, probs, probs, y, probs, probs, ids)


def speakers_of(scores: ClipScores, fold: int) -> np.ndarray:
    """Even clips are a RAVDESS actor's, odd ones a SAVEE speaker's."""
    return np.where(scores.clip_ids % 2 == 0, f"ravdess-{fold:02d}", f"savee-S{fold}")


def fold_metrics(fold: int, scores: ClipScores) -> dict:
    """A fold's entry, as speaker_protocol makes it."""
    speakers = speakers_of(scores, fold)
    ravdess = speakers == f"ravdess-{fold:02d}"
    return {
        **classification_metrics(scores.y_true, scores.y_pred),
        "fold": fold,
        "test_actors": [fold],
        "test_speakers": sorted(set(speakers.tolist())),
        "ravdess": classification_metrics(scores.y_true[ravdess], scores.y_pred[ravdess]),
        "session": classification_metrics(scores.y_true, scores.y_pred),
    }


def room_heard(room_right: int, alone_right: int) -> dict:
    """A fold's room run: the clips in a room and alone (a room clip never heard: -1)."""
    room, alone = graded(room_right), graded(alone_right)
    room_pred = room.y_pred.copy()
    room_pred[0] = -1
    return {
        "y_true": room.y_true,
        "room_pred": room_pred,
        "alone_pred": alone.y_pred,
        "first_pred": graded(1).y_pred,
        "stats": {"clips": len(room_pred), "missed": 1, "levels_dbfs": [-55.0, -42.5]},
    }


def speaker_channel_room() -> tuple[dict, dict, dict]:
    """Protocols speaker, channel and room of two folds (fold UA 60% and 40%)."""
    scores = [graded(6, 0), graded(4, 1000)]
    runs = [
        FoldRun(1, (1,), 1.0, scores[0], scores[0], {}, room_heard(4, 6)),
        FoldRun(2, (2,), 1.0, scores[1], scores[1], {}, room_heard(2, 4)),
    ]
    folds = [fold_metrics(k + 1, s) for k, s in enumerate(scores)]
    calibration = calibration_report(scores, [1.0, 1.0])
    calibration["abstention"] = cross_fitted_abstention(runs, [1.0, 1.0], scores)
    all_ids = np.concatenate([s.clip_ids for s in scores])
    y_true = np.concatenate([s.y_true for s in scores])
    y_pred = np.concatenate([s.y_pred for s in scores])
    ravdess = all_ids % 2 == 0
    speaker = {
        "protocol": "speaker-independent",
        "description": "six speaker-disjoint folds over every speaker",
        "all_speakers": True,
        "speaker_mean_unweighted_accuracy": 0.55,
        "emobox_ravdess_mean_unweighted_accuracy": float(
            np.mean([f["ravdess"]["unweighted_accuracy"] for f in folds])
        ),
        "corpora": {
            "ravdess": classification_metrics(y_true[ravdess], y_pred[ravdess]),
            "savee": classification_metrics(y_true[~ravdess], y_pred[~ravdess]),
        },
        "speakers": {f"s{i}": {} for i in range(4)},
        "mean_accuracy": 0.5,
        "mean_unweighted_accuracy": 0.5,
        "mean_macro_f1": 0.5,
        "session_mean_unweighted_accuracy": 0.5,
        "session_description": "live",
        "pooled": classification_metrics(y_true, y_pred),
        "folds": folds,
        "calibration": calibration,
        "command": "ser-stream evaluate --protocol speaker",
    }
    shifted = {"gsm": [graded(3, 0), graded(3, 1000)], "opus-12k": [graded(4), graded(4, 1000)]}
    channel = channel_report(shifted, scores, folds, DESCRIPTIONS, SHARED_WITH_TRAINING)
    return speaker, channel, room_report(runs)


def corpus_of(right: dict[str, int]) -> dict:
    """Protocol corpus, each held-out corpus with ``right`` of 10 clips per label right."""
    held_out = {}
    for name, k in right.items():
        scores = graded(k)
        held_out[name] = {
            "trained_on": [c for c in right if c != name],
            "abstention": {
                "method": "threshold fitted on the validation speakers' windows",
                "clips": abstention_metrics(scores.calibrated, scores.y_true, 0.7),
                "windows": abstention_metrics(scores.window_calibrated, scores.window_true, 0.7),
            },
            "validation_speakers": [f"{name}-val"],
            **cross_corpus_metrics(scores.y_true, scores.y_pred),
            "session": cross_corpus_metrics(scores.y_true, scores.y_pred),
        }
    report = {"description": "leave one corpus out", "held_out": held_out, "command": "c5"}
    for mode in ("strict", "calm_as_neutral"):
        uas = [r[mode]["unweighted_accuracy"] for r in held_out.values()]
        report[f"mean_{mode}_unweighted_accuracy"] = float(np.mean(uas))
        report[f"min_{mode}_unweighted_accuracy"] = float(np.min(uas))
    return report


def baseline_report() -> dict:
    """What evaluate_artifact reports of an older model judged on SAVEE."""
    clean, gsm, room = graded(5), graded(3), graded(2)
    strict = lambda s: cross_corpus_metrics(s.y_true, s.y_pred)  # noqa: E731
    return {
        "model": "models/old",
        "trained_on": ["ravdess", "tess"],
        "judged_on": ["savee"],
        "vad": "webrtc",
        "clean": {
            **strict(clean),
            "all_labels": classification_metrics(clean.y_true, clean.y_pred),
            "abstention": abstention_metrics(clean.calibrated, clean.y_true, 0.7),
        },
        "channel_clean": strict(clean),
        "conditions": {
            "gsm": {
                "description": DESCRIPTIONS["gsm"],
                "shared_with_training": SHARED_WITH_TRAINING["gsm"],
                **strict(gsm),
                "loss_vs_clean": 0.2,
            }
        },
        "room": {
            **strict(room),
            "alone": strict(clean),
            "loss_vs_alone": 0.3,
            "first_look": strict(graded(1)),
            "clips": 70,
            "missed": 2,
            "levels_dbfs": [-50.0, -45.0],
        },
    }


def current_metrics(right: dict[str, int] | None = None) -> dict:
    """Metrics of every current protocol, as ``ser-stream evaluate`` writes them."""
    speaker, channel, room = speaker_channel_room()
    return {
        "recipe": {"name": "corpora"},
        "speaker": speaker,
        "channel": channel,
        "room": room,
        "corpus": corpus_of(right or {"ravdess": 5, "tess": 3, "savee": 4}),
        "baseline": baseline_report(),
    }


def card_of(tmp_path: Path, metrics: dict, config: dict | None = None) -> str:
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return write_model_card(tmp_path).read_text()


def run_folders(tmp_path: Path, runs: dict[str, dict]) -> list[str]:
    """A folder of each run's metrics, as ``RUN_DIR=CHANGE`` arguments of experiments."""
    arguments = []
    for name, metrics in runs.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps(metrics))
        arguments.append(f"{folder}={name} change")
    return arguments


def table_of(model: Path, runs: list[str]) -> tuple[str, str]:
    """The card that the experiments command writes for ``runs``, and its table's header."""
    experiments_main([str(model), *runs])
    card = (model / "MODEL_CARD.md").read_text()
    return card, next(line for line in card.splitlines() if line.startswith("| recipe |"))


class TestCurrentProtocols:
    def test_headline_takes_the_new_figures(self):
        """LOCO mean and min, SI over all speakers, EmoBox RAVDESS, room and channel losses."""
        metrics = current_metrics()
        figures = headline(metrics)
        assert figures["corpus_mean_ua"] == pytest.approx(0.4)
        assert figures["corpus_min_ua"] == pytest.approx(0.3)
        assert figures["speaker_all_ua"] == pytest.approx(0.5)
        assert figures["speaker_per_speaker_ua"] == 0.55
        assert figures["emobox_ravdess_ua"] == pytest.approx(
            metrics["speaker"]["emobox_ravdess_mean_unweighted_accuracy"]
        )
        assert figures["room_loss"] == pytest.approx(0.2 + 1 / 70)  # one room clip missed
        assert figures["channel_worst_loss"] == pytest.approx(0.2)  # gsm: 30% against 50%
        assert figures["ravdess_to_tess_ua"] is None and figures["tess_to_ravdess_ua"] is None

    def test_old_metrics_give_none_for_the_new_figures(self):
        """An older run (cross, RAVDESS-only folds) has no LOCO, room or all-speaker figures."""
        figures = headline(metrics_of(0.6))
        for key in ("corpus_mean_ua", "corpus_min_ua", "speaker_all_ua", "room_loss"):
            assert figures[key] is None
        assert figures["emobox_ravdess_ua"] is None
        assert figures["ravdess_to_tess_ua"] is not None

    def test_speaker_section_reports_folds_speakers_corpora_and_abstention(self, tmp_path):
        """Every figure of the all-speakers folds is printed, each fold with its speakers."""
        metrics = current_metrics()
        card = card_of(tmp_path, metrics)
        spk = metrics["speaker"]
        assert "### Speaker-independent, all speakers (protocol `speaker`" in card
        assert "- Mean UA over the folds: **50.0%**" in card
        assert "- Mean UA over the 4 tested speakers: **55.0%**." in card
        emobox = spk["emobox_ravdess_mean_unweighted_accuracy"]
        assert f"mean UA over the folds **{emobox:.1%}**: comparable to EmoBox's" in card
        assert "also trained on the other corpora" in card
        ravdess = spk["corpora"]["ravdess"]
        assert f"RAVDESS {ravdess['unweighted_accuracy']:.1%} ({ravdess['n']} clips)" in card
        fold = spk["folds"][0]
        assert (
            f"| 1 | ravdess-01, savee-S1 | 60.0% | {fold['ravdess']['unweighted_accuracy']:.1%} "
            "| 60.0% |"
        ) in card
        clips = spk["calibration"]["abstention"]["clips"]
        assert (
            f"| clips ({clips['n']}) | {clips['coverage']:.1%} "
            f"| {clips['accuracy_confident']:.1%} |"
        ) in card
        assert "| windows (140) |" in card

    def test_corpus_section_says_when_targets_are_missed(self, tmp_path):
        """Mean 40% and lowest 30%: neither target is reached, and the card says so."""
        card = card_of(tmp_path, current_metrics())
        assert "### Leave one corpus out (protocol `corpus`" in card
        assert "| RAVDESS | TESS, SAVEE | 70 | 50.0% | 50.0% | 50.0% | 50.0% / 100.0% |" in card
        assert "| **mean** | | | **40.0%** | **40.0%** |" in card
        assert "| **min** | | | **30.0%** | **30.0%** |" in card
        assert "mean >= 45%: **not reached** (40.0%)" in card
        assert "every held-out corpus >= 35%: **not reached** (lowest TESS, 30.0%)" in card
        assert "`confusion_corpus_savee.png`" in card
        assert "TESS held out: tess-val" in card

    def test_corpus_section_says_when_targets_are_reached(self, tmp_path):
        """Mean 50% and lowest 40% reach both targets."""
        card = card_of(tmp_path, current_metrics({"ravdess": 6, "tess": 4, "savee": 5}))
        assert "mean >= 45%: **reached** (50.0%)" in card
        assert "every held-out corpus >= 35%: **reached** (lowest TESS, 40.0%)" in card

    def test_channel_section_names_real_codecs_and_what_training_shares(self, tmp_path):
        """Each condition: its description, UA, loss in points and what training shares."""
        card = card_of(tmp_path, current_metrics())
        assert "### Channel shift (protocol `channel`" in card
        assert "The same clips clean: mean UA **50.0%**" in card
        assert "real codecs run through ffmpeg" in card
        assert (
            f"| `gsm` | {DESCRIPTIONS['gsm']} | 30.0% | 20.0 | {SHARED_WITH_TRAINING['gsm']} |"
        ) in card
        assert f"| `opus-12k` | {DESCRIPTIONS['opus-12k']} | 40.0% | 10.0 | no |" in card
        assert "`confusion_channel_<condition>.png`" in card
        assert "The channel conditions are simulations" not in card

    def test_room_section_compares_the_room_with_the_clips_alone(self, tmp_path):
        """Room UA against alone UA, the loss, clips, missed clips and the room levels."""
        metrics = current_metrics()
        room = metrics["room"]
        card = card_of(tmp_path, metrics)
        assert "### Sessions in a room (protocol `room`" in card
        assert (
            f"In a room: mean UA **{room['mean_unweighted_accuracy']:.1%}**; the same clips "
            f"alone: **50.0%**; loss **{100 * room['loss_vs_alone']:.1f}** points. 140 clips, "
            "2 never heard (counted wrong); room levels -55.0 to -42.5 dBFS."
        ) in card
        assert "| 1 | 70 |" in card and "`confusion_room.png`" in card
        assert "First look (each clip judged by its first window alone" in card
        assert "UA **10.0%** over 140 clips." in card

    def test_baseline_section_judges_the_previous_model_on_unseen_corpora(self, tmp_path):
        """The previous model's clean, channel and room figures on corpora it never saw."""
        card = card_of(tmp_path, current_metrics())
        assert "### Baseline" in card
        assert (
            "The previous shipped model (trained on RAVDESS, TESS, VAD webrtc) judged on SAVEE"
        ) in card
        assert "| clean | 70 | 50.0% | 50.0% | - |" in card
        assert "| `gsm` | 70 | 30.0% | 30.0% | 20.0 |" in card
        assert "| in a room | 70 | 20.0% | 20.0% | 30.0 |" in card
        assert "| in a room, first window only | 70 | 10.0% | 10.0% | - |" in card
        assert "2 of 70 clips were never heard" in card

    def test_calibration_names_the_shipped_confidence_threshold(self, tmp_path):
        """config.json's threshold is printed, with where it was fitted and what it does."""
        config = {
            "calibration": {
                "temperature": 1.3,
                "fitted_on": "the fold models' test windows, window level",
                "confidence_threshold": 0.612,
                "confidence_threshold_fitted_on": "the same windows",
            }
        }
        card = card_of(tmp_path, current_metrics(), config)
        assert "Confidence threshold: 0.612, fitted on the same windows." in card
        assert 'Below it the display shows "uncertain"' in card
        assert "| clip (`predict`) |" in card

    def test_experiments_table_shows_the_columns_some_run_measured(self, tmp_path):
        """New runs bring LOCO, EmoBox and room columns; cross columns only with old runs."""
        runs = run_folders(tmp_path, {"new": current_metrics(), "old": metrics_of(0.6)})
        model = tmp_path / "model"
        model.mkdir()
        card, header = table_of(model, runs[:1])
        assert "LOCO mean UA" in header and "room loss (points)" in header
        assert "RAVDESS->TESS" not in header
        assert "| 40.0% | 30.0% |" in card  # LOCO mean and min
        card, header = table_of(model, runs)
        assert "RAVDESS->TESS UA" in header and "LOCO min UA" in header
