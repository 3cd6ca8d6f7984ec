"""`ser-stream up` end to end: every stage its own process, sinks reading the published records."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.artifact import load_artifact
from ser_stream.labels import LABELS
from ser_stream.predict import Predictor, with_vad_engine
from ser_stream.testing import noise, records, run_up, voiced
from tests.fixtures import SYNTHETIC_SPEECH_VAD


def up(*args: str, **run) -> subprocess.CompletedProcess:
    """`ser-stream up` with the VAD that takes synthetic speech for speech."""
    return run_up(*SYNTHETIC_SPEECH_VAD, *args, **run)


def write(path: Path, audio: np.ndarray) -> Path:
    soundfile.write(path, audio, 16_000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("model", ["shipped", "stream-normalized"])
def test_up_on_a_file_gives_the_in_process_predictions_window_for_window(tmp_path, model, request):
    """--fast on a multi-utterance file: same labels and probabilities (1e-5) as ``predict``.

    The stream-normalized model's statistics run across utterances, so later windows depend
    on earlier ones: the pipeline and ``predict`` must warm up identically.
    """
    artifact = None if model == "shipped" else request.getfixturevalue("tiny_stream_artifact")
    model_flags = ["--model", str(artifact)] if artifact else []
    audio = np.concatenate(
        [
            noise(0.5),
            voiced(2.2, seed=1),
            noise(0.8, seed=2),
            voiced(4.8, f0=200, seed=3),
            noise(0.6, seed=4),
        ]
    )
    source = write(tmp_path / "talk.wav", audio)
    out = tmp_path / "session.jsonl"
    result = up(
        "--source",
        f"file:{source}",
        "--fast",
        "--no-stop-on-silence",
        "--first-window",
        "0",  # predict judges whole files: no early windows to compare with
        "--sink",
        f"jsonl:{out}",
        *model_flags,
    )
    assert result.returncode == 0, result.stderr
    lines = records(out)
    predictions = [r for r in lines if r["kind"] == "prediction"]
    pcm, _ = soundfile.read(source, dtype="int16")
    # The same engine as the session: voiced() buzz is speech to WebRTC only.
    predictor = Predictor(with_vad_engine(load_artifact(artifact), SYNTHETIC_SPEECH_VAD[1]))
    expected = predictor.predict_samples(pcm.astype(np.float32) / 32768).windows
    assert len(predictions) == len(expected) >= 3
    for got, want in zip(predictions, expected, strict=True):
        assert got["label"] == want["label"]
        assert (got["t_start"], got["t_end"]) == (want["t_start"], want["t_end"])
        assert list(got["probabilities"]) == list(LABELS)
        assert np.allclose(
            list(got["probabilities"].values()), list(want["probabilities"].values()), atol=1e-5
        )
        # both stamps travelled with the window, the model's taken after the capture's
        assert got["latency_ms"] is not None and got["latency_ms"] > 0
    events = [r["event"] for r in lines if r["kind"] == "event"]
    assert events.count("speech_start") == events.count("speech_end") == 2
    end = lines[-1]
    assert end["kind"] == "session_end" and end["reason"] == "eof"
    assert end["summary"]["windows"] == end["summary"]["predicted"] == len(predictions)
    assert end["summary"]["dropped"] == 0
    mean = np.mean([list(p["probabilities"].values()) for p in predictions], axis=0)
    assert np.allclose(list(end["summary"]["mean_probabilities"].values()), mean, atol=1e-5)


@pytest.mark.parametrize("stop", [True, False], ids=["stop-on-silence", "no-stop-on-silence"])
def test_silence_after_speech_ends_the_session(tmp_path, stop):
    """Speech, 2.5 s of silence, speech: the session ends in the silence unless told not to."""
    audio = np.concatenate(
        [noise(0.5), voiced(2.0, seed=1), noise(2.5, seed=2), voiced(2.0, seed=3), noise(0.5)]
    )
    source = write(tmp_path / "pause.wav", audio)
    out = tmp_path / "session.jsonl"
    flag = [] if stop else ["--no-stop-on-silence"]
    result = up(
        "--source", f"file:{source}", "--fast", *flag, "--sink", f"jsonl:{out}", "--sink", "console"
    )
    assert result.returncode == 0, result.stderr
    lines = records(out)
    predictions = [r for r in lines if r["kind"] == "prediction"]
    assert lines[-1]["kind"] == "session_end"
    assert "session ended" in result.stdout
    if stop:
        assert lines[-1]["reason"] == "silence"
        assert predictions and all(p["t_end"] <= 3.0 for p in predictions)
    else:
        assert lines[-1]["reason"] == "eof"
        assert any(p["t_start"] > 4.5 for p in predictions)


def test_settings_file_with_flags_overriding_it(tmp_path):
    """--config FILE.toml sets source, sinks and stage settings; a flag overrides the file."""
    audio = np.concatenate(
        [noise(0.5), voiced(2.0, seed=1), noise(2.5, seed=2), voiced(2.0, seed=3), noise(0.5)]
    )
    source = write(tmp_path / "pause.wav", audio)
    out = tmp_path / "from-config.jsonl"
    config = tmp_path / "up.toml"
    config.write_text(
        f'source = "file:{source}"\nfast = true\nsinks = ["jsonl:{out}"]\nstop_on_silence_s = 2.0\n'
        '[stages.vad]\naggressiveness = 3\nengine = "webrtc"\n'
    )
    result = up("--config", str(config), "--no-stop-on-silence")
    assert result.returncode == 0, result.stderr
    assert records(out)[-1]["reason"] == "eof"


def test_unknown_settings_are_a_one_line_error(tmp_path):
    """A typo in the settings file names the key and the known ones."""
    config = tmp_path / "up.toml"
    config.write_text('sorce = "file:x.wav"\n')
    result = up("--config", str(config))
    assert result.returncode == 2
    assert "sorce" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_raw_pcm_on_stdin_at_another_rate(tmp_path):
    """--source stdin --rate 8000: raw 16-bit PCM is resampled and predicted, live (paced)."""
    import soxr

    audio = np.concatenate([noise(0.5), voiced(2.5, seed=5), noise(0.7, seed=6)])
    pcm = np.round(soxr.resample(audio, 16_000, 8_000) * 32767).astype("<i2").tobytes()
    out = tmp_path / "stdin.jsonl"
    result = up("--source", "stdin", "--rate", "8000", jsonl=out, input=pcm, text=False)
    assert result.returncode == 0, result.stderr
    lines = records(out)
    assert lines[-1]["reason"] == "eof"
    predictions = [r for r in lines if r["kind"] == "prediction"]
    assert len(predictions) == lines[-1]["summary"]["predicted"] >= 2
    first, whole = predictions[0], predictions[-1]
    assert first["t_end"] - first["t_start"] == pytest.approx(0.8, abs=0.01)
    assert 0.3 <= whole["t_start"] == first["t_start"] and whole["t_end"] <= 3.3
