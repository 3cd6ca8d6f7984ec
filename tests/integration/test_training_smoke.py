"""`ser-stream train` / `evaluate` / `predict` on a tiny generated corpus, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.testing import noise, voiced

pytest.importorskip("tensorflow")

RAVDESS_CODES = ["01", "02", "03", "04", "05", "06", "07", "08"]
TESS_SUFFIXES = ["neutral", "happy", "sad", "angry", "fear", "disgust", "ps"]

# The console script installed beside this interpreter, as a user runs it.
SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))


def write_clip(path: Path, seed: int, f0: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate(
        [noise(0.3, seed=seed), voiced(1.2, f0=f0, seed=seed), noise(0.3, seed=seed + 1)]
    )
    soundfile.write(path, audio, 16_000, subtype="PCM_16", format="FLAC")


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory) -> Path:
    """12 RAVDESS clips per emotion over 3 actors, and one TESS clip per emotion and speaker."""
    root = tmp_path_factory.mktemp("corpora")
    seed = 0
    for e, code in enumerate(RAVDESS_CODES):
        for actor in (1, 2, 3):
            for statement in ("01", "02"):
                for repetition in ("01", "02"):
                    seed += 1
                    name = f"03-01-{code}-01-{statement}-{repetition}-{actor:02d}.flac"
                    write_clip(root / "ravdess" / f"Actor_{actor:02d}" / name, seed, 100 + 25 * e)
    for speaker in ("OAF", "YAF"):
        for e, suffix in enumerate(TESS_SUFFIXES):
            seed += 1
            write_clip(
                root / "tess" / f"{speaker}_{suffix}" / f"{speaker}_word_{suffix}.flac",
                seed,
                110 + 25 * e,
            )
    return root


def ser_stream(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SER_STREAM_CACHE": str(cache)}
    return subprocess.run(
        [SER_STREAM, "--log-level", "info", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_train_writes_a_complete_artifact_that_predict_uses(tiny_corpora, tmp_path):
    """train -> artifact with card; a second run hits the feature cache; predict serves it."""
    out = tmp_path / "model"
    cache = tmp_path / "cache"
    first = ser_stream(
        "train",
        "--data",
        str(tiny_corpora),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-augment",
        cache=cache,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("model.keras", "model.onnx", "config.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"]["clips"] == 8 * 12 + 2 * 7
    assert config["onnx"]["max_abs_difference_from_keras"] <= 1e-5
    assert "CC BY-NC-SA 4.0" in (out / "MODEL_CARD.md").read_text()
    assert "feature cache hit" not in first.stderr

    second = ser_stream(
        "train",
        "--data",
        str(tiny_corpora),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-augment",
        cache=cache,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "feature cache hit" in second.stderr

    clip = next((tiny_corpora / "ravdess" / "Actor_01").iterdir())
    predicted = ser_stream("predict", "--json", "--model", str(out), str(clip), cache=cache)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)["file"] == str(clip)


def test_evaluate_seed_protocol_writes_labelled_metrics_and_plot(tiny_corpora, tmp_path):
    """evaluate --protocol seed stores test/validation metrics, a confusion PNG and the card."""
    out = tmp_path / "eval"
    result = ser_stream(
        "evaluate",
        "--protocol",
        "seed",
        "--data",
        str(tiny_corpora),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-augment",
        cache=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    seed = metrics["seed"]
    assert seed["protocol"] == "seed"
    assert "speakers appear on both sides" in seed["description"]
    assert seed["test"]["n"] == 11 and seed["validation"]["n"] == 11  # 10% of 110 clips each
    assert seed["test"]["accuracy"] == np.trace(seed["test"]["confusion"]) / 11
    assert np.array(seed["test"]["confusion"]).sum() == seed["test"]["n"]
    assert (out / "confusion_seed.png").stat().st_size > 1000
    assert "Seed protocol" in (out / "MODEL_CARD.md").read_text()


def test_evaluate_cross_and_channel_protocols_report_every_condition(tiny_corpora, tmp_path):
    """evaluate --protocol cross --protocol channel --folds 1: both directions, every condition."""
    out = tmp_path / "eval"
    result = ser_stream(
        "evaluate",
        "--protocol",
        "cross",
        "--protocol",
        "channel",
        "--folds",
        "1",
        "--data",
        str(tiny_corpora),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-augment",
        cache=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    cross = metrics["cross"]
    assert cross["ravdess_to_tess"]["strict"]["n"] == 14  # every TESS clip
    assert cross["tess_to_ravdess"]["strict"]["n"] == 7 * 12  # RAVDESS without calm
    assert cross["tess_to_ravdess"]["calm_as_neutral"]["n"] == 8 * 12
    assert cross["tess_to_ravdess"]["session"]["strict"]["n"] == 7 * 12  # heard live
    channel = metrics["channel"]
    assert list(channel["conditions"]) == ["telephone", "laptop", "reverb", "noise", "gain"]
    for entry in channel["conditions"].values():
        assert entry["folds"][0]["n"] == 32  # actor 01's clips, as in the clean fold
        assert entry["loss_vs_clean"] == pytest.approx(
            channel["clean_mean_unweighted_accuracy"] - entry["mean_unweighted_accuracy"]
        )
    assert metrics["speaker"]["only_folds"] == [1]
    assert metrics["speaker"]["folds"][0]["session"]["n"] == 32  # the same clips, heard live
    assert 0.0 <= metrics["speaker"]["session_mean_unweighted_accuracy"] <= 1.0
    assert 0.0 <= metrics["speaker"]["calibration"]["clip_ece_after"] <= 1.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "Cross-corpus" in card and "Channel shift" in card
    assert (out / "confusion_channel.png").is_file() and (out / "confusion_cross.png").is_file()
    assert "cross ravdess_to_tess" in result.stdout and "channel telephone" in result.stdout

    # The shipped model can take its temperature from that evaluation's unseen speakers.
    model = tmp_path / "model"
    trained = ser_stream(
        "train",
        "--data",
        str(tiny_corpora),
        "--out",
        str(model),
        "--epochs",
        "1",
        "--no-augment",
        "--calibration-from",
        str(out / "metrics.json"),
        cache=tmp_path / "cache",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    calibration = json.loads((model / "config.json").read_text())["calibration"]
    assert calibration["temperature"] == metrics["speaker"]["calibration"]["pooled_temperature"]
    assert "speaker-independent fold models" in calibration["fitted_on"]
    assert "fitted on the test windows" in (model / "MODEL_CARD.md").read_text()
