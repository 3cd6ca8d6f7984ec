"""Unit tests of the model card and the experiments record: every figure comes from files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_stream.labels import LABELS
from ser_stream.train.evaluate import calibration_report, classification_metrics
from ser_stream.train.experiments import main as experiments_main
from ser_stream.train.model_card import headline, write_model_card


def metrics_of(ua: float) -> dict:
    """Metrics shaped like an evaluate run's, with recognizable figures."""
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
        (tmp_path / "metrics.json").write_text(json.dumps(metrics_of(0.6)))
        card = write_model_card(tmp_path).read_text()
        for heading in ("Seed protocol", "Speaker-independent", "Cross-corpus", "Channel shift"):
            assert heading in card
        assert "| telephone band 300-3400 Hz + 8 kHz mu-law |" in card
        assert "| -20.0 |" in card  # the telephone loss, in points
        assert "| clip (`predict`) | 0.130 | 0.045 |" in card
        assert "Heard live instead (live): mean UA **50.0%**" in card
        assert "CC BY-NC-SA 4.0" in card and "CC BY-NC-ND 4.0" in card
        assert "8 emotions (neutral, happy, sad, angry," in card  # no config.json: all labels

    def test_experiments_command_writes_the_table_from_run_folders(self, tmp_path: Path):
        """Each RUN_DIR=CHANGE becomes a row whose figures are that run's metrics."""
        runs = []
        for name, ua in (("base", 0.4), ("better", 0.7)):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "metrics.json").write_text(json.dumps(metrics_of(ua)))
            runs.append(f"{folder}={name} change")
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
    from ser_stream.train.evaluate import ClipScores

    probs = np.full((4, len(LABELS)), 1 / len(LABELS))
    truth = np.zeros(4, dtype=np.int64)
    scores = ClipScores(truth, truth, probs, probs, truth, probs, probs, truth)
    report = calibration_report([scores, scores], [1.0, 2.0])
    assert report["temperatures"] == [1.0, 2.0]
    assert report["clip_ece_before"] == report["clip_ece_after"]
