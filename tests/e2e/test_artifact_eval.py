"""Judging a trained artifact on corpora it never trained on, through predict's own path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile

from ser_stream.errors import InputError
from ser_stream.testing import noise, voiced
from ser_stream.train.artifact_eval import evaluate_artifact
from ser_stream.train.codecs import ffmpeg_available
from ser_stream.train.datasets import load_savee

CODES = ("n", "h", "sa", "a", "f", "d", "su")


@pytest.fixture(scope="module")
def savee(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    for s, speaker in enumerate(("DC", "JE")):
        for e, code in enumerate(CODES):
            audio = np.concatenate(
                [noise(0.3, seed=e), voiced(1.5, f0=110 + 30 * e + 15 * s, seed=e), noise(0.4)]
            )
            path = root / "savee" / speaker / f"{code}01.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, audio, 16_000, subtype="PCM_16", format="FLAC")
    return load_savee(root)


@pytest.mark.skipif(not ffmpeg_available(), reason="the codec condition needs ffmpeg")
def test_every_part_is_scored_on_the_same_clips(tiny_stream_artifact, savee):
    """Clean, each condition against the same clips clean, and room sessions beside alone."""
    channel = np.arange(0, len(savee), 2)
    report = evaluate_artifact(
        tiny_stream_artifact, savee, channel_ids=channel, conditions=("gain", "g711-mulaw")
    )
    assert report["judged_on"] == ["savee"]
    assert report["clean"]["strict"]["n"] == len(savee) == 14
    assert report["channel_clean"]["strict"]["n"] == len(channel)
    for entry in report["conditions"].values():
        assert entry["strict"]["n"] == len(channel)
        assert entry["loss_vs_clean"] == pytest.approx(
            report["channel_clean"]["strict"]["unweighted_accuracy"]
            - entry["strict"]["unweighted_accuracy"]
        )
    assert report["conditions"]["g711-mulaw"]["shared_with_training"]
    room = report["room"]
    assert room["clips"] == 14 and 0 <= room["missed"] <= 14
    assert room["alone"]["strict"]["n"] == 14
    json.dumps(report)  # stored as metrics.json


def test_an_artifact_is_never_judged_on_a_corpus_it_trained_on(
    tiny_stream_artifact, savee, tmp_path
):
    """A corpus named in the artifact's training data is refused, in one line."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_stream_artifact, copy)
    config = json.loads((copy / "config.json").read_text())
    config["training"] = {"data": {"corpora": ["savee"]}}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="trained on"):
        evaluate_artifact(copy, savee, channel_ids=[], conditions=(), room=False)
