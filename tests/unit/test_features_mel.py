"""Unit tests of the mel features: the cached filter bank gives librosa's numbers exactly."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from ser_stream.stages.features import FeatureConfig, extract_features
from ser_stream.testing import noise, room_tone, voiced

CONFIGS = [
    FeatureConfig(kinds=("logmel", "mfcc", "mfcc_delta", "tilt")),
    FeatureConfig(kinds=("logmel", "mfcc"), n_mels=64, n_mfcc=20, fmin=0.0),
    FeatureConfig(kinds=("logmel", "mfcc"), n_fft=512, hop_length=160, window_s=1.0),
    FeatureConfig(
        kinds=("logmel", "mfcc"), sample_rate=8_000, fmax=4_000.0, window_s=2.0, hop_length=256
    ),
]
SIGNALS = {
    "speech": lambda rate: voiced(3.0, seed=1, rate=rate),
    "fan": lambda rate: room_tone(3.0, -40.0, kind="fan", seed=2, rate=rate),
    "hiss": lambda rate: noise(0.7, level=0.2, seed=3, rate=rate),
}


def librosa_log_mel(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """``(bands, frames)`` log-mel as the stage computed it before: librosa's melspectrogram."""
    mel = librosa.feature.melspectrogram(
        y=samples,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


def columns(matrix: np.ndarray, config: FeatureConfig, kind: str) -> np.ndarray:
    return matrix[:, [i for i, k in enumerate(config.column_kinds) if k == kind]]


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
class TestMelFeaturesMatchLibrosa:
    def test_logmel_equals_librosa_melspectrogram(self, config, signal):
        """logmel columns are exactly librosa's power_to_db(melspectrogram) of the window."""
        samples = SIGNALS[signal](config.sample_rate)[: config.window_samples]
        matrix = extract_features(samples, config)
        expected = librosa_log_mel(
            np.resize(samples, config.window_samples).astype(np.float32), config
        )
        np.testing.assert_array_equal(columns(matrix, config, "logmel"), expected.T)

    def test_mfcc_equals_librosa_mfcc(self, config, signal):
        """mfcc columns are exactly librosa's MFCC of that log-mel."""
        samples = SIGNALS[signal](config.sample_rate)[: config.window_samples]
        matrix = extract_features(samples, config)
        log_mel = librosa_log_mel(
            np.resize(samples, config.window_samples).astype(np.float32), config
        )
        expected = librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc)
        np.testing.assert_array_equal(columns(matrix, config, "mfcc"), expected.T)


class TestMelFilterBank:
    def test_filter_bank_is_built_once_per_setting(self, monkeypatch):
        """Windows with the same settings share one filter bank; new settings build their own."""
        calls = []
        build = librosa.filters.mel

        def counting(**kwargs):
            calls.append(kwargs)
            return build(**kwargs)

        monkeypatch.setattr(librosa.filters, "mel", counting)
        first = FeatureConfig(kinds=("logmel",), n_mels=37, fmin=61.0)
        for seed in range(3):
            extract_features(noise(3.0, seed=seed), first)
        second = FeatureConfig(kinds=("logmel",), n_mels=37, fmin=62.0)
        extract_features(noise(3.0), second)
        assert [c["fmin"] for c in calls] == [61.0, 62.0]
