"""Unit tests of the denoise stage's noise gate: noisereduce's results, statistics reused."""

from __future__ import annotations

import threading

import noisereduce
import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from noisereduce.spectralgate.stationary import SpectralGateStationary

from ser_stream.errors import InputError
from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseConfig, DenoiseCore, normalize_peak, reduce_noise
from ser_stream.stages.spectral import hann
from ser_stream.stages.spectral_gate import NoiseGate, smoothing_widths
from ser_stream.testing import noise, room_tone, silence, tone, voiced

RATE = 16_000
TOLERANCE = 1e-5
"""Largest difference allowed from noisereduce, in full-scale units."""

CONFIGS = [DenoiseConfig(), DenoiseConfig(prop_decrease=1.0, n_std_thresh=0.5)]


def noisereduce_reference(
    samples: np.ndarray, profile: np.ndarray, config: DenoiseConfig, rate: int = RATE
) -> np.ndarray:
    """The call the stage replaces: noisereduce's stationary gate, as configured.

    The noise goes in as float64: noisereduce (through scipy.signal.stft) transforms float32
    noise in single precision, where the gate computes its statistics in double; the same
    noise values in float64 make noisereduce compute them as the gate does (the float32 call
    is compared in TestNoiseStatistics).
    """
    out = noisereduce.reduce_noise(
        y=samples,
        sr=rate,
        y_noise=np.asarray(profile, dtype=np.float64),
        stationary=True,
        prop_decrease=config.prop_decrease,
        n_std_thresh_stationary=config.n_std_thresh,
        n_fft=512,
        padding=1024,
    )
    return np.asarray(out, dtype=np.float32)


def gate_for(profile: np.ndarray, config: DenoiseConfig, rate: int = RATE) -> NoiseGate:
    return NoiseGate(
        profile, rate, prop_decrease=config.prop_decrease, n_std_thresh=config.n_std_thresh
    )


def noisereduce_statistics(profile: np.ndarray, config: DenoiseConfig, rate: int = RATE):
    """noisereduce's gate object, with the arguments reduce_noise passes it."""
    return SpectralGateStationary(
        y=profile,
        sr=rate,
        y_noise=profile,
        n_std_thresh_stationary=config.n_std_thresh,
        chunk_size=600_000,
        clip_noise_stationary=True,
        padding=1024,
        n_fft=512,
        win_length=None,
        hop_length=None,
        time_constant_s=2.0,
        freq_mask_smooth_hz=500,
        time_mask_smooth_ms=50,
        tmp_folder=None,
        prop_decrease=config.prop_decrease,
        use_tqdm=False,
        n_jobs=1,
    )


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    return float(np.max(np.abs(a.astype(np.float64) - b)))


def window(samples: np.ndarray, index: int = 0) -> Window:
    return Window(samples, 0.0, samples.size / RATE, utterance=0, index=index)


def clicks(seconds: float, every: int = 1_777) -> np.ndarray:
    """Isolated full-scale impulses over digital silence."""
    out = silence(seconds)
    out[::every] = 0.9
    return out


STRUCTURED = {
    "speech_over_hiss": voiced(3.0, seed=3) + room_tone(3.0, -40.0, kind="hiss", seed=4),
    "speech_over_fan": voiced(3.0, seed=5) + room_tone(3.0, -35.0, kind="fan", seed=6),
    "speech_over_hum": voiced(2.2, seed=7) + room_tone(2.2, -35.0, kind="hum", seed=8),
    "tone_in_noise": tone(1.0, 1_000.0) + noise(1.0, level=0.05, seed=9),
    "noise_only": room_tone(3.0, -40.0, kind="fan", seed=10),
    "silence": silence(1.0),
    "clicks": clicks(2.0),
    "short": voiced(0.2, seed=11),
    "loud": np.clip(voiced(3.0, amplitude=1.0, seed=12) * 3.0, -1.0, 1.0),
}
PROFILES = {
    "hiss": room_tone(2.0, -40.0, kind="hiss", seed=20),
    "fan": room_tone(2.0, -35.0, kind="fan", seed=21),
    "hum": room_tone(0.5, -35.0, kind="hum", seed=22),
    "quiet": noise(2.0, level=1e-4, seed=23),
}


class TestNoiseGate:
    @pytest.mark.parametrize("config", CONFIGS)
    @pytest.mark.parametrize("profile", PROFILES)
    @pytest.mark.parametrize("name", STRUCTURED)
    def test_matches_noisereduce_on_structured_audio(self, name, profile, config):
        """Speech over noise, noise, tones, clicks and silence come out as noisereduce's."""
        samples = STRUCTURED[name].astype(np.float32)
        gate = gate_for(PROFILES[profile], config)
        expected = noisereduce_reference(samples, PROFILES[profile], config)
        assert max_difference(gate(samples), expected) <= TOLERANCE

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        seed=st.integers(0, 2**32 - 1),
        n_samples=st.integers(1, 64_000),
        noise_samples=st.integers(512, 40_000),
        level=st.floats(1e-4, 1.0),
        noise_level=st.floats(1e-5, 0.5),
        prop_decrease=st.floats(0.0, 1.0),
        n_std_thresh=st.floats(0.0, 3.0),
    )
    def test_matches_noisereduce_on_random_audio(
        self, seed, n_samples, noise_samples, level, noise_level, prop_decrease, n_std_thresh
    ):
        """Random lengths, levels and settings: within 1e-5 of noisereduce."""
        rng = np.random.default_rng(seed)
        samples = (level * rng.standard_normal(n_samples)).astype(np.float32)
        profile = (noise_level * rng.standard_normal(noise_samples)).astype(np.float32)
        config = DenoiseConfig(prop_decrease=prop_decrease, n_std_thresh=n_std_thresh)
        expected = noisereduce_reference(samples, profile, config)
        assert max_difference(gate_for(profile, config)(samples), expected) <= TOLERANCE

    def test_one_gate_serves_many_windows(self):
        """A gate used for several windows gives each the result of a fresh noisereduce call."""
        profile = PROFILES["fan"]
        gate = gate_for(profile, DenoiseConfig())
        for name in ("speech_over_fan", "noise_only", "short", "speech_over_fan"):
            samples = STRUCTURED[name]
            expected = noisereduce_reference(samples, profile, DenoiseConfig())
            assert max_difference(gate(samples), expected) <= TOLERANCE

    def test_audio_longer_than_a_noisereduce_chunk(self):
        """Beyond noisereduce's 600000-sample chunk the result still matches it."""
        samples = np.tile(STRUCTURED["speech_over_hiss"], 13)[:600_500]
        expected = noisereduce_reference(samples, PROFILES["hiss"], DenoiseConfig())
        gate = gate_for(PROFILES["hiss"], DenoiseConfig())
        assert max_difference(gate(samples), expected) <= TOLERANCE

    @pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
    @pytest.mark.parametrize("name", ["speech_over_fan", "clicks", "short"])
    def test_matches_noisereduce_at_other_sample_rates(self, name, rate):
        """Other rates give other smoothing triangles (odd and even widths): still noisereduce's."""
        samples, profile = STRUCTURED[name], PROFILES["fan"]
        expected = noisereduce_reference(samples, profile, DenoiseConfig(), rate)
        gate = gate_for(profile, DenoiseConfig(), rate)
        assert max_difference(gate(samples), expected) <= TOLERANCE

    def test_audio_of_several_chunks(self):
        """Three chunks, the last one short: each gated with its neighbours' context."""
        samples = np.tile(STRUCTURED["speech_over_fan"], 26)[:1_250_000]
        expected = noisereduce_reference(samples, PROFILES["fan"], DenoiseConfig())
        gate = gate_for(PROFILES["fan"], DenoiseConfig())
        assert max_difference(gate(samples), expected) <= TOLERANCE

    def test_gates_in_threads_give_what_they_give_alone(self):
        """Gates running at once in several threads give the results they give alone."""
        names = ["speech_over_hiss", "short", "speech_over_fan", "noise_only"]
        alone = {
            name: gate_for(PROFILES["fan"], DenoiseConfig())(STRUCTURED[name]) for name in names
        }
        barrier = threading.Barrier(len(names))
        results: dict[str, list[np.ndarray]] = {}

        def run(name: str) -> None:
            gate = gate_for(PROFILES["fan"], DenoiseConfig())
            barrier.wait()
            results[name] = [gate(STRUCTURED[name]) for _ in range(5)]

        threads = [threading.Thread(target=run, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name in names:
            for result in results[name]:
                np.testing.assert_array_equal(result, alone[name])

    def test_reduce_noise_is_a_one_off_gate(self):
        """reduce_noise gives the gate's result."""
        samples, profile = STRUCTURED["tone_in_noise"], PROFILES["hiss"]
        np.testing.assert_array_equal(
            reduce_noise(samples, profile, RATE, DenoiseConfig()),
            gate_for(profile, DenoiseConfig())(samples),
        )


class TestNoiseStatistics:
    def test_hann_is_scipys_periodic_window(self):
        """The window equals scipy.signal.get_window("hann", n) bit for bit."""
        for n in (8, 511, 512):
            np.testing.assert_array_equal(hann(n), scipy.signal.get_window("hann", n))

    @pytest.mark.parametrize("config", CONFIGS)
    @pytest.mark.parametrize("profile", PROFILES)
    def test_threshold_is_noisereduces_for_float64_noise(self, profile, config):
        """Given float64 noise, the threshold per bin is noisereduce's, bit for bit."""
        noise64 = PROFILES[profile].astype(np.float64)
        np.testing.assert_array_equal(
            gate_for(noise64, config).threshold_db,
            noisereduce_statistics(noise64, config).noise_thresh,
        )

    @pytest.mark.parametrize("profile", PROFILES)
    def test_threshold_of_float32_noise_differs_by_rounding_only(self, profile):
        """noisereduce transforms float32 noise in single precision: within 1e-3 dB of it."""
        noise32 = PROFILES[profile]
        assert noise32.dtype == np.float32
        threshold = gate_for(noise32, DenoiseConfig()).threshold_db
        expected = noisereduce_statistics(noise32, DenoiseConfig()).noise_thresh
        np.testing.assert_allclose(threshold, expected, rtol=0, atol=1e-3)

    def test_noise_beyond_a_chunk_is_clipped_as_noisereduce_clips_it(self):
        """Only the first 600000 samples of a longer profile count."""
        profile = np.tile(PROFILES["fan"], 20)[:600_700].astype(np.float64)
        profile[600_000:] = 0.5
        np.testing.assert_array_equal(
            gate_for(profile, DenoiseConfig()).threshold_db,
            gate_for(profile[:600_000], DenoiseConfig()).threshold_db,
        )

    @pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
    def test_smoothing_widths_are_noisereduces(self, rate):
        """The triangles span the bins and frames of noisereduce's smoothing filter."""
        n_freq, n_time = smoothing_widths(rate)
        filter_ = noisereduce_statistics(PROFILES["fan"], DenoiseConfig(), rate)._smoothing_filter
        assert filter_.shape == (2 * n_freq + 1, 2 * n_time + 1)

    @pytest.mark.parametrize("noise_samples", [0, 100, 511])
    def test_less_than_a_frame_of_noise_is_refused(self, noise_samples):
        """A profile shorter than one STFT frame is an InputError."""
        with pytest.raises(InputError, match="at least 512 samples"):
            gate_for(PROFILES["fan"][:noise_samples], DenoiseConfig())


class TestDenoiseCoreReusesStatistics:
    def test_every_window_is_gated_with_the_current_profile(self):
        """Noise arriving between windows changes the profile the next window is gated with."""
        config = DenoiseConfig()
        core = DenoiseCore(config, RATE)
        steps = [
            Noise(PROFILES["hiss"], 0.0, 2.0),
            window(STRUCTURED["speech_over_hiss"], 0),
            window(STRUCTURED["noise_only"], 1),
            Noise(PROFILES["fan"][:8_000], 2.0, 2.5),
            window(STRUCTURED["speech_over_fan"], 2),
            Noise(PROFILES["fan"], 2.5, 4.5),
            window(STRUCTURED["speech_over_fan"], 3),
        ]
        outputs = 0
        for step in steps:
            if isinstance(step, Noise):
                core.push_noise(step)
                continue
            expected = normalize_peak(
                noisereduce_reference(step.samples, core.noise_profile, config), 0.1
            )
            assert max_difference(core.push(step).samples, expected) <= TOLERANCE
            outputs += 1
        assert outputs == 4

    def test_reset_forgets_the_gate(self):
        """After reset, too little noise means no gating, even though a gate was built."""
        core = DenoiseCore(DenoiseConfig(), RATE)
        core.push_noise(Noise(PROFILES["fan"], 0.0, 2.0))
        core.push(window(STRUCTURED["speech_over_fan"]))
        core.reset()
        samples = STRUCTURED["speech_over_fan"]
        np.testing.assert_array_equal(
            core.push(window(samples)).samples, normalize_peak(samples, 0.1)
        )
