"""`ser-stream predict` says "uncertain" when the model is not sure (text and --json)."""

from __future__ import annotations

import json

from tests.e2e.test_predict_cli import run_predict
from tests.fixtures import speech_like
from tests.unit.test_model_confidence import artifact_with


def json_of(model, clip) -> dict:
    """The one ``predict --json`` object of ``clip``."""
    result = run_predict("--json", "--model", str(model), str(clip))
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    return record


def test_text_and_json_say_when_the_model_is_not_sure(tmp_path):
    """Above every top probability, the threshold makes the file and its windows uncertain:
    the line reads ``uncertain (guess? p)``, the JSON has ``confident`` false."""
    model = artifact_with(tmp_path / "model", 1.0)
    clip = speech_like(tmp_path / "clip.wav")
    text = run_predict("--model", str(model), str(clip))
    assert text.returncode == 0, text.stderr
    record = json_of(model, clip)
    guess = record["label"]
    share = f"{record['probabilities'][guess]:.0%}"
    assert text.stdout.startswith(f"{clip}: uncertain ({guess}? {share})  ("), text.stdout
    assert record["confident"] is False
    assert [w["confident"] for w in record["windows"]] == [False] * len(record["windows"])


def test_a_model_without_threshold_prints_the_label(tmp_path):
    """Older artifacts: no "uncertain", and ``confident`` is null."""
    model = artifact_with(tmp_path / "model")
    clip = speech_like(tmp_path / "clip.wav")
    record = json_of(model, clip)
    assert record["confident"] is None
    assert {w["confident"] for w in record["windows"]} == {None}
    text = run_predict("--model", str(model), str(clip)).stdout
    assert text.startswith(f"{clip}: {record['label']}  (")
