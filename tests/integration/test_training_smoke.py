"""`ser-stream train` / `evaluate` / `predict` on a tiny generated corpus, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.testing import SER_STREAM, noise, voiced
from ser_stream.train.codecs import ffmpeg_available

pytest.importorskip("tensorflow")

RAVDESS_CODES = ["01", "02", "03", "04", "05", "06", "07", "08"]
TESS_SUFFIXES = ["neutral", "happy", "sad", "angry", "fear", "disgust", "ps"]
SAVEE_CODES = ["n", "h", "sa", "a", "f", "d", "su"]

# The console script installed beside this interpreter, as a user runs it.


def write_clip(path: Path, seed: int, f0: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate(
        [noise(0.3, seed=seed), voiced(1.2, f0=f0, seed=seed), noise(0.3, seed=seed + 1)]
    )
    soundfile.write(path, audio, 16_000, subtype="PCM_16", format="FLAC")


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory) -> Path:
    """12 RAVDESS clips per emotion over 3 actors, one TESS clip per emotion and speaker, and
    two SAVEE sentences per emotion and speaker."""
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
    for speaker in ("DC", "JE", "JK", "KL"):
        for e, code in enumerate(SAVEE_CODES):
            for number in (1, 2):
                seed += 1
                write_clip(root / "savee" / speaker / f"{code}{number:02d}.flac", seed, 95 + 25 * e)
    return root


def ser_stream(*args: str, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "SER_STREAM_CACHE": str(cache)}
    return subprocess.run(
        [SER_STREAM, "--log-level", "info", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tiny_run(
    command: str, *args: str, data: Path, out: Path, cache: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``command`` on the tiny corpora into ``out``: one epoch, no augmented copies."""
    return ser_stream(
        command,
        *args,
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-augment",
        cache=cache,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Evaluated:
    """One ``evaluate`` run of every protocol on the tiny corpora (speaker folds: fold 1)."""

    out: Path
    cache: Path
    result: subprocess.CompletedProcess
    metrics: dict


@pytest.fixture(scope="module")
def evaluated(tiny_corpora, tmp_path_factory) -> Evaluated:
    """The protocols share one run: each fold model and feature window is made once."""
    out = tmp_path_factory.mktemp("eval")
    cache = tmp_path_factory.mktemp("cache")
    protocols = ["seed", "corpus", "room"] + (["channel"] if ffmpeg_available() else [])
    result = tiny_run(
        "evaluate",
        *(arg for name in protocols for arg in ("--protocol", name)),
        "--folds",
        "1",
        data=tiny_corpora,
        out=out,
        cache=cache,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    return Evaluated(out, cache, result, metrics)


def test_train_writes_a_complete_artifact_that_predict_uses(tiny_corpora, tmp_path):
    """train -> artifact with card; a second run hits the feature cache; predict serves it."""
    out = tmp_path / "model"
    cache = tmp_path / "cache"
    first = tiny_run("train", data=tiny_corpora, out=out, cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("model.keras", "model.onnx", "config.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"]["clips"] == 8 * 12 + 2 * 7 + 4 * 14
    assert config["onnx"]["max_abs_difference_from_keras"] <= 1e-5
    assert "CC BY-NC-SA 4.0" in (out / "MODEL_CARD.md").read_text()
    assert "feature cache hit" not in first.stderr

    second = tiny_run("train", data=tiny_corpora, out=out, cache=cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "feature cache hit" in second.stderr

    clip = next((tiny_corpora / "ravdess" / "Actor_01").iterdir())
    predicted = ser_stream("predict", "--json", "--model", str(out), str(clip), cache=cache)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)["file"] == str(clip)


@pytest.mark.timeout(900)
def test_evaluate_seed_protocol_writes_labelled_metrics_and_plot(evaluated):
    """evaluate --protocol seed stores test/validation metrics, a confusion PNG and the card."""
    out, metrics = evaluated.out, evaluated.metrics
    seed = metrics["seed"]
    assert seed["protocol"] == "seed"
    assert "speakers appear on both sides" in seed["description"]
    assert seed["test"]["n"] == 17 and seed["validation"]["n"] == 17  # 10% of 166 clips each
    assert seed["test"]["accuracy"] == np.trace(seed["test"]["confusion"]) / 17
    assert np.array(seed["test"]["confusion"]).sum() == seed["test"]["n"]
    assert (out / "confusion_seed.png").stat().st_size > 1000
    assert "Seed protocol" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.timeout(900)
def test_evaluate_corpus_protocol_holds_out_every_corpus_once(evaluated):
    """evaluate --protocol corpus: each corpus is the test side once, on the shared labels."""
    out, metrics, result = evaluated.out, evaluated.metrics, evaluated.result
    corpus = metrics["corpus"]["held_out"]
    assert list(corpus) == ["ravdess", "tess", "savee"]
    assert corpus["tess"]["strict"]["n"] == 14 and corpus["savee"]["strict"]["n"] == 56
    assert corpus["ravdess"]["strict"]["n"] == 7 * 12  # without calm
    assert corpus["ravdess"]["calm_as_neutral"]["n"] == 8 * 12
    assert corpus["ravdess"]["trained_on"] == ["tess", "savee"]
    assert corpus["tess"]["validation_speakers"] == ["savee-KL"]  # no RAVDESS 19, 20 here
    assert corpus["savee"]["abstention"]["clips"]["n"] == 56
    uas = [corpus[name]["strict"]["unweighted_accuracy"] for name in corpus]
    assert metrics["corpus"]["mean_strict_unweighted_accuracy"] == pytest.approx(np.mean(uas))
    assert "Leave one corpus out" in (out / "MODEL_CARD.md").read_text()
    assert (out / "confusion_corpus_savee.png").is_file()
    assert "corpus savee" in result.stdout


@pytest.mark.timeout(900)
@pytest.mark.skipif(not ffmpeg_available(), reason="the real-codec conditions need ffmpeg")
def test_evaluate_channel_and_room_protocols_report_every_part(tiny_corpora, evaluated, tmp_path):
    """evaluate --protocol channel/room --folds 1: every condition against the same clips
    clean, every test speaker heard in a room; the shipped model takes the pooled
    temperature and threshold."""
    out, metrics, result = evaluated.out, evaluated.metrics, evaluated.result
    speaker = metrics["speaker"]
    assert speaker["only_folds"] == [1]
    assert speaker["folds"][0]["test_speakers"] == ["ravdess-01", "savee-DC"]
    assert speaker["folds"][0]["ravdess"]["n"] == 32
    assert set(speaker["speakers"]) == {"ravdess-01", "savee-DC"}
    assert set(speaker["corpora"]) == {"ravdess", "savee"}
    abstention = speaker["calibration"]["abstention"]
    assert abstention["clips"]["n"] == 32 + 14
    assert 0.0 <= abstention["clips"]["coverage"] <= 1.0

    channel = metrics["channel"]
    assert "g711-mulaw" in channel["conditions"] and "gsm" in channel["conditions"]
    for entry in channel["conditions"].values():
        assert entry["folds"][0]["n"] == 8 + 7  # statement 01 take 01 of actor 01, odd DC
        assert entry["loss_vs_clean"] == pytest.approx(
            channel["clean_mean_unweighted_accuracy"] - entry["mean_unweighted_accuracy"]
        )
    assert channel["conditions"]["g711-mulaw"]["shared_with_training"]

    room = metrics["room"]
    assert room["clips"] == 30 + 14  # at most 30 clips per speaker session
    assert room["folds"][0]["alone"]["n"] == room["clips"]
    assert -60.0 <= room["levels_dbfs"][0] <= room["levels_dbfs"][1] <= -40.0

    card = (out / "MODEL_CARD.md").read_text()
    assert "Channel shift" in card and "room" in card
    for name in ("channel_gsm", "room", "speaker"):
        assert (out / f"confusion_{name}.png").is_file(), name
    assert "channel gsm" in result.stdout and "room:" in result.stdout

    # The shipped model can take its temperature from that evaluation's unseen speakers.
    model = tmp_path / "model"
    trained = tiny_run(
        "train",
        "--calibration-from",
        str(out / "metrics.json"),
        data=tiny_corpora,
        out=model,
        cache=evaluated.cache,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    calibration = json.loads((model / "config.json").read_text())["calibration"]
    assert calibration["temperature"] == metrics["speaker"]["calibration"]["pooled_temperature"]
    assert calibration["confidence_threshold"] == abstention["pooled_threshold"]
    assert "speaker-independent fold models" in calibration["fitted_on"]
    assert "fitted on the test windows" in (model / "MODEL_CARD.md").read_text()
