"""`ser-stream predict` end to end: real processes, real files, real models."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile

from ser_stream.labels import LABELS
from ser_stream.testing import SER_STREAM
from tests.fixtures import speech_like, spoken

# The console script installed beside this interpreter, as a user runs it.


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SER_STREAM, "predict", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


def check_prediction(record: dict, duration_s: float) -> None:
    assert record["label"] in LABELS
    assert list(record["probabilities"]) == list(LABELS)
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert record["windows"], "a prediction has at least one window"
    for window in record["windows"]:
        assert 0.0 <= window["t_start"] < window["t_end"] <= duration_s + 1e-3
        assert window["label"] in LABELS
        assert sum(window["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    mean = np.mean([list(w["probabilities"].values()) for w in record["windows"]], axis=0)
    assert np.allclose(mean, list(record["probabilities"].values()), atol=1e-5)


class TestPredictJSON:
    def test_one_object_per_file_in_order_with_errors_for_broken_files(
        self, tmp_path, tiny_artifact
    ):
        """Every file gives exactly one line; broken ones an error; the exit status is 1."""
        good = speech_like(tmp_path / "good.wav")
        stereo = tmp_path / "stereo_44k.ogg"
        audio, _ = soundfile.read(good)
        import soxr

        resampled = soxr.resample(audio, 16_000, 44_100)
        soundfile.write(stereo, np.stack([resampled, 0.5 * resampled], axis=1), 44_100)
        corrupt = tmp_path / "corrupt.wav"
        corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(range(256)))
        empty = tmp_path / "empty.flac"
        empty.write_bytes(b"")
        silent = tmp_path / "silent.wav"
        soundfile.write(silent, np.zeros(16_000, dtype=np.int16), 16_000)
        nan = tmp_path / "nan.wav"
        soundfile.write(nan, np.full(16_000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
        missing = tmp_path / "missing.wav"
        files = [good, corrupt, stereo, empty, silent, nan, missing]

        result = run_predict("--json", "--model", str(tiny_artifact), *map(str, files))

        assert result.returncode == 1, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["file"] for r in records] == [str(f) for f in files]
        check_prediction(records[0], 4.0)
        check_prediction(records[2], 4.0)
        for record in records[1:2] + records[3:]:
            assert set(record) == {"file", "error"}
            assert record["file"] in record["error"]
            assert "\n" not in record["error"]
        assert "no sound" in records[4]["error"]
        assert "NaN" in records[5]["error"]
        assert "no such file" in records[6]["error"]

    def test_all_good_files_exit_zero(self, tmp_path, tiny_artifact):
        """Without a broken file the exit status is 0."""
        files = [speech_like(tmp_path / f"clip{i}.flac", seconds=2.0 + i, seed=i) for i in range(2)]
        result = run_predict("--json", "--model", str(tiny_artifact), *map(str, files))
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 2

    def test_results_do_not_depend_on_other_files_or_workers(self, tmp_path, tiny_artifact):
        """A file's result is the same alone, in a batch, and in worker processes."""
        files = [
            str(speech_like(tmp_path / f"c{i}.wav", seconds=1.5 + i / 2, seed=i)) for i in range(4)
        ]
        model = ["--json", "--model", str(tiny_artifact)]
        alone = run_predict(*model, files[2])
        serial = run_predict(*model, "--workers", "1", *files)
        parallel = run_predict(*model, "--workers", "2", *files)
        assert alone.returncode == serial.returncode == parallel.returncode == 0
        assert json.loads(serial.stdout.splitlines()[2]) == json.loads(alone.stdout)
        assert parallel.stdout == serial.stdout

    def test_clipped_and_quiet_speech_are_classified(self, tmp_path, tiny_artifact):
        """Hard-clipped speech and very quiet speech (-60 dBFS) still get a prediction."""
        audio, rate = soundfile.read(speech_like(tmp_path / "src.wav"), dtype="float32")
        clipped = tmp_path / "clipped.wav"
        soundfile.write(clipped, np.clip(audio * 20, -1, 1), rate)
        quiet = tmp_path / "quiet.wav"
        soundfile.write(quiet, audio * (0.001 / np.abs(audio).max()), rate, subtype="FLOAT")
        result = run_predict("--json", "--model", str(tiny_artifact), str(clipped), str(quiet))
        assert result.returncode == 0, result.stdout + result.stderr
        for line in result.stdout.splitlines():
            check_prediction(json.loads(line), 4.0)


class TestPredictText:
    def test_human_readable_line_per_file(self, tmp_path, tiny_artifact):
        """The default output names the file, its label and the top shares."""
        clip = speech_like(tmp_path / "clip.wav")
        result = run_predict("--model", str(tiny_artifact), str(clip))
        assert result.returncode == 0, result.stderr
        line = result.stdout.strip()
        assert line.startswith(f"{clip}: ")
        assert line.split()[1] in LABELS

    def test_missing_model_folder_is_a_one_line_error(self, tmp_path):
        """A wrong --model says what to do and exits 2."""
        clip = speech_like(tmp_path / "clip.wav")
        result = run_predict("--model", str(tmp_path / "nope"), str(clip))
        assert result.returncode == 2
        assert "--model" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


class TestShippedModel:
    def test_bundled_sample_and_real_speech_are_classified(self, tmp_path):
        """The shipped model classifies the bundled sample and espeak-ng speech."""
        from ser_stream.audio import bundled_sample

        sample = bundled_sample()
        files = [str(sample)]
        said = spoken(tmp_path / "said.wav", "I am so angry with you, get out of here!")
        if said is not None:
            files.append(str(said))
        result = run_predict("--json", *files)
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        check_prediction(records[0], soundfile.info(sample).duration)
        assert len(records[0]["windows"]) >= 2, "two sentences give at least two windows"
        if said is not None:
            check_prediction(records[1], soundfile.info(said).duration)
