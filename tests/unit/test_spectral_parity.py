"""Serve-time features equal librosa's: each numpy function of ``stages.spectral`` against the
librosa function it replaces, and whole feature matrices against the librosa computation the
model was trained on, on synthetic signals (always) and real speech (when the corpora are here).

Tolerances, in the feature's own units:

- rms, zcr, logmel, tilt: identical (the same float operations in the same order; only
  spectrum bins some 300 dB below the peak round apart, far under the mel floor of -100 dB);
- mfcc: 1e-3 and deltas 1e-4 (librosa's float32 DCT and a float64 product round apart;
  MFCCs reach about 600);
- voicing (periodicity, 0 to 1): 1e-4;
- pitch, semitones: 0.05 (0.3% in frequency; librosa's YIN runs in float32, this one in
  float64) on at least 99% of frames. The rest are ties that flip with the last bit of a
  float: YIN's choice between two near-equal troughs, or a frame whose voicing is within
  rounding of the 0.5 that decides whether its pitch is trusted or bridged.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.audio import load_audio
from ser_stream.stages import spectral
from ser_stream.stages.features import (
    FEATURE_KINDS,
    PITCH_RANGE_HZ,
    FeatureConfig,
    extract_features,
    fit_length,
)
from ser_stream.testing import noise, room_tone, tone, voiced

EXACT = ("rms", "zcr", "logmel", "tilt")
TOLERANCE = {"mfcc": 1e-3, "mfcc_delta": 1e-4, "mfcc_delta2": 1e-4, "voicing": 1e-4}
PITCH_TOLERANCE, PITCH_SHARE = 0.05, 0.99

CONFIGS = [
    FeatureConfig(kinds=FEATURE_KINDS),
    FeatureConfig(kinds=("logmel", "mfcc", "mfcc_delta"), n_mels=64, n_mfcc=20, fmin=0.0),
    FeatureConfig(kinds=("rms", "zcr", "mfcc"), n_fft=512, hop_length=160, window_s=1.0),
    FeatureConfig(
        kinds=("logmel", "mfcc", "pitch", "voicing"),
        sample_rate=8_000,
        fmax=4_000.0,
        window_s=2.0,
        hop_length=256,
    ),
]
SIGNALS = {
    "speech": lambda rate: voiced(3.0, seed=1, rate=rate),
    "low voice": lambda rate: voiced(3.0, f0=90.0, seed=4, rate=rate),
    "fan": lambda rate: room_tone(3.0, -40.0, kind="fan", seed=2, rate=rate),
    "hiss": lambda rate: noise(0.7, level=0.2, seed=3, rate=rate),
}


def librosa_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The feature matrix as librosa computes it: what the shipped model was trained on."""
    y = fit_length(np.asarray(samples, dtype=np.float32), config.window_samples)
    frame, hop = config.n_fft, config.hop_length
    mel = librosa.feature.melspectrogram(
        y=y, sr=config.sample_rate, n_fft=frame, hop_length=hop, n_mels=config.n_mels,
        fmin=config.fmin, fmax=config.fmax,
    )  # fmt: skip
    mel_db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=config.n_mfcc)
    f0 = librosa.yin(
        y, fmin=PITCH_RANGE_HZ[0], fmax=PITCH_RANGE_HZ[1], sr=config.sample_rate,
        frame_length=frame, hop_length=hop,
    )  # fmt: skip
    frames = librosa.util.frame(np.pad(y.astype(np.float64), frame // 2), frame_length=frame,
                                hop_length=hop)  # fmt: skip
    voicing = np.zeros(f0.size)
    for i, lag in enumerate(np.clip(np.round(config.sample_rate / f0).astype(int), 1, frame - 1)):
        head, tail = frames[:-lag, i], frames[lag:, i]
        energy = np.sqrt(float(head @ head) * float(tail @ tail))
        voicing[i] = max(0.0, float(head @ tail) / energy) if energy > 1e-12 else 0.0
    semitones = 12.0 * np.log2(f0 / 100.0)
    voiced_frames = voicing >= 0.5
    index = np.arange(semitones.size)
    pitch = (
        np.interp(index, index[voiced_frames], semitones[voiced_frames])
        if voiced_frames.any()
        else np.zeros_like(semitones)
    )
    bands = np.arange(mel_db.shape[0]) - (mel_db.shape[0] - 1) / 2
    kinds = {
        "rms": np.log(librosa.feature.rms(y=y, frame_length=frame, hop_length=hop) + 1e-6),
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=frame, hop_length=hop),
        "mfcc": mfcc,
        "mfcc_delta": librosa.feature.delta(mfcc, order=1),
        "mfcc_delta2": librosa.feature.delta(mfcc, order=2),
        "logmel": mel_db,
        "pitch": pitch[None, :],
        "voicing": voicing[None, :],
        "tilt": ((bands @ (mel_db - mel_db.mean(axis=0))) / float(bands @ bands))[None, :],
    }
    return np.concatenate([kinds[k] for k in config.kinds], axis=0).T.astype(np.float32)


def assert_features_match(ours: np.ndarray, reference: np.ndarray, config: FeatureConfig) -> None:
    """Every column within its kind's tolerance (see the module docstring)."""
    assert ours.shape == reference.shape
    kinds = np.array(config.column_kinds)
    for kind in config.kinds:
        mine, theirs = ours[:, kinds == kind], reference[:, kinds == kind]
        if kind in EXACT:
            np.testing.assert_array_equal(mine, theirs, err_msg=kind)
        elif kind == "pitch":
            close = np.abs(mine - theirs) <= PITCH_TOLERANCE
            assert close.mean() >= PITCH_SHARE, f"pitch equal on {close.mean():.1%} of frames"
        else:
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOLERANCE[kind], err_msg=kind)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
def test_feature_matrix_equals_librosa(config, signal):
    samples = SIGNALS[signal](config.sample_rate)[: config.window_samples]
    assert_features_match(
        extract_features(samples, config), librosa_features(samples, config), config
    )


def test_feature_matrix_equals_librosa_on_real_speech(corpora_root: Path):
    """Windows of 20 recordings from each corpus, every feature kind (the shipped set and more)."""
    config = FeatureConfig(kinds=FEATURE_KINDS)
    rng = np.random.default_rng(0)
    pitch_close = pitch_frames = 0
    for corpus in ("ravdess", "tess", "savee"):
        files = sorted(
            p for p in (corpora_root / corpus).rglob("*") if p.suffix in (".wav", ".flac")
        )
        if not files:
            continue
        for path in rng.choice(files, size=min(20, len(files)), replace=False):
            samples = load_audio(path)[: config.window_samples]
            ours, reference = extract_features(samples, config), librosa_features(samples, config)
            kinds = np.array(config.column_kinds)
            pitch = np.abs(ours[:, kinds == "pitch"] - reference[:, kinds == "pitch"])
            pitch_close += int((pitch <= PITCH_TOLERANCE).sum())
            pitch_frames += pitch.size
            rest = FeatureConfig(kinds=tuple(k for k in FEATURE_KINDS if k != "pitch"))
            keep = kinds != "pitch"
            assert_features_match(ours[:, keep], reference[:, keep], rest)
    assert pitch_frames and pitch_close / pitch_frames >= PITCH_SHARE


class TestFunctions:
    @settings(max_examples=40, deadline=None)
    @given(
        rate=st.sampled_from([8_000, 16_000, 22_050]),
        n_fft=st.sampled_from([256, 512, 1024, 2048]),
        n_mels=st.integers(8, 64),
        fmin=st.floats(0.0, 300.0),
    )
    def test_mel_filter_bank_is_librosas(self, rate, n_fft, n_mels, fmin):
        fmax = rate / 2
        expected = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        ours = spectral.mel_filter_bank(rate, n_fft, n_mels, fmin, fmax)
        np.testing.assert_array_equal(ours, expected)

    def test_mel_filter_bank_is_built_once_and_read_only(self):
        first = spectral.mel_filter_bank(16_000, 1024, 40, 50.0, 8_000.0)
        assert spectral.mel_filter_bank(16_000, 1024, 40, 50.0, 8_000.0) is first
        assert not first.flags.writeable

    @pytest.mark.parametrize(("n_out", "n_in"), [(13, 40), (20, 64), (40, 40)])
    def test_dct_is_scipys_orthonormal_dct2(self, n_out, n_in):
        expected = scipy.fft.dct(np.eye(n_in), type=2, norm="ortho", axis=0)[:n_out]
        np.testing.assert_allclose(spectral.dct_matrix(n_out, n_in), expected, atol=1e-12)

    @settings(max_examples=40, deadline=None)
    @given(
        order=st.sampled_from([1, 2]),
        width=st.sampled_from([3, 5, 9]),
        frames=st.integers(9, 60),
        seed=st.integers(0, 2**16),
    )
    def test_delta_is_librosas(self, order, width, frames, seed):
        if order >= width - 1:
            return  # librosa needs a polynomial degree below the width
        data = np.random.default_rng(seed).standard_normal((4, frames)) * 30
        expected = librosa.feature.delta(data, order=order, width=width)
        np.testing.assert_allclose(spectral.delta(data, order, width), expected, atol=1e-9)

    @pytest.mark.parametrize("f0", [70.0, 110.0, 185.0, 260.0, 440.0, 590.0])
    def test_yin_is_librosas_on_voices(self, f0):
        samples = voiced(2.0, f0=f0, seed=int(f0))
        ours, periodicity = spectral.yin(
            samples, fmin=65.0, fmax=600.0, sample_rate=16_000, frame_length=1024, hop_length=512
        )
        expected = librosa.yin(
            samples, fmin=65.0, fmax=600.0, sr=16_000, frame_length=1024, hop_length=512
        )
        np.testing.assert_allclose(ours, expected, rtol=1e-6)
        assert np.median(periodicity) > 0.8  # a voice repeats at its period

    def test_yin_periodicity_is_low_for_noise(self):
        _, periodicity = spectral.yin(
            noise(2.0, level=0.1), fmin=65.0, fmax=600.0, sample_rate=16_000,
            frame_length=1024, hop_length=512,
        )  # fmt: skip
        assert np.median(periodicity) < 0.3

    @pytest.mark.parametrize("signal", [tone(1.0, 300.0), noise(1.0, level=0.3), np.zeros(16_000)])
    def test_rms_zcr_and_power_are_librosas(self, signal):
        y = signal.astype(np.float32)
        np.testing.assert_array_equal(
            spectral.rms(y, 1024, 512),
            librosa.feature.rms(y=y, frame_length=1024, hop_length=512)[0],
        )
        np.testing.assert_array_equal(
            spectral.zero_crossing_rate(y, 1024, 512),
            librosa.feature.zero_crossing_rate(y, frame_length=1024, hop_length=512)[0],
        )
        power = np.abs(librosa.stft(y, n_fft=1024, hop_length=512, pad_mode="constant")) ** 2
        np.testing.assert_allclose(
            spectral.power_spectrogram(y, 1024, 512), power, rtol=1e-6, atol=1e-12 * power.max()
        )
