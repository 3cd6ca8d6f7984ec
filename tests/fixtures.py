"""Builders of small real artifacts and audio files for tests (no corpora needed)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile

from ser_stream.analysis import AnalysisConfig
from ser_stream.models.lstm import ModelConfig
from ser_stream.stages.features import FeatureConfig
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.testing import noise, voiced

TINY_ANALYSIS = AnalysisConfig(features=FeatureConfig(window_s=1.0, hop_s=0.5))
TINY_MODEL = ModelConfig(units=8, layers=1, attention_units=8, dense_units=8)


def train_tiny_artifact(folder: Path, *, stream_normalized: bool = False) -> Path:
    """Train a tiny model on synthetic features for one epoch and write a full artifact.

    With ``stream_normalized`` the artifact normalizes features per stream (with a prior of
    1 s) and carries a calibration temperature, as a model of the current recipes does.
    """
    from ser_stream.train.export import write_artifact
    from ser_stream.train.training import TrainConfig, fit_normalizer, train_model

    analysis = TINY_ANALYSIS
    features = analysis.features
    if stream_normalized:
        normalize = NormalizeConfig(mode="stream", prior_s=1.0, memory_s=20.0).with_prior(
            np.linspace(-5, 5, features.n_features), np.linspace(1, 3, features.n_features)
        )
        analysis = replace(analysis, normalize=normalize)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, features.n_frames, features.n_features)).astype(np.float32)
    y = np.arange(64) % 8
    x[:, :, 0] += y[:, None]  # learnable signal
    normalizer = fit_normalizer(x)
    model = train_model(
        (normalizer.apply(x), y),
        None,
        TINY_MODEL,
        TrainConfig(epochs=1, batch_size=16),
        progress=False,
    )
    calibration = {"temperature": 1.7, "fitted_on": "nothing (test)"} if stream_normalized else None
    return write_artifact(
        folder, model, analysis, normalizer, training={"note": "test"}, calibration=calibration
    )


def speech_like(path: Path, seconds: float = 3.0, *, rate: int = 16_000, seed: int = 0) -> Path:
    """Write speech-like synthetic audio framed by room tone."""
    audio = np.concatenate(
        [noise(0.5, seed=seed), voiced(seconds, seed=seed), noise(0.5, seed=seed + 9)]
    )
    soundfile.write(path, audio, 16_000)
    if rate != 16_000:
        import soxr

        soundfile.write(path, soxr.resample(audio, 16_000, rate), rate)
    return path


def spoken(path: Path, text: str) -> Path | None:
    """Real synthesized speech from espeak-ng (None when it is not installed)."""
    if shutil.which("espeak-ng") is None:
        return None
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


SYNTHETIC_SPEECH_VAD = ("--vad", "webrtc")
"""``up`` flags for :func:`ser_stream.testing.voiced` speech: WebRTC VAD takes that buzz of
harmonics for speech; Silero, the live default, rightly does not."""
