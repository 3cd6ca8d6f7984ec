"""Unit tests of the denoise stage's noise gate: noisereduce's results, statistics reused."""

from __future__ import annotations

import noisereduce
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import (
    DenoiseConfig,
    DenoiseCore,
    NoiseGate,
    normalize_peak,
    reduce_noise,
)
from ser_stream.testing import noise, room_tone, silence, tone, voiced

RATE = 16_000
TOLERANCE = 1e-5
"""Largest difference allowed from noisereduce, in full-scale units."""

CONFIGS = [DenoiseConfig(), DenoiseConfig(prop_decrease=1.0, n_std_thresh=0.5)]


def noisereduce_reference(
    samples: np.ndarray, profile: np.ndarray, config: DenoiseConfig
) -> np.ndarray:
    """The call the stage replaces: noisereduce's stationary gate, as configured."""
    out = noisereduce.reduce_noise(
        y=samples,
        sr=RATE,
        y_noise=profile,
        stationary=True,
        prop_decrease=config.prop_decrease,
        n_std_thresh_stationary=config.n_std_thresh,
        n_fft=512,
        padding=1024,
    )
    return np.asarray(out, dtype=np.float32)


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
        gate = NoiseGate(PROFILES[profile], RATE, config)
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
        assert max_difference(NoiseGate(profile, RATE, config)(samples), expected) <= TOLERANCE

    def test_one_gate_serves_many_windows(self):
        """A gate used for several windows gives each the result of a fresh noisereduce call."""
        profile = PROFILES["fan"]
        gate = NoiseGate(profile, RATE, DenoiseConfig())
        for name in ("speech_over_fan", "noise_only", "short", "speech_over_fan"):
            samples = STRUCTURED[name]
            expected = noisereduce_reference(samples, profile, DenoiseConfig())
            assert max_difference(gate(samples), expected) <= TOLERANCE

    def test_audio_longer_than_a_noisereduce_chunk(self):
        """Beyond noisereduce's 600000-sample chunk the result still matches it."""
        samples = np.tile(STRUCTURED["speech_over_hiss"], 13)[:600_500]
        expected = noisereduce_reference(samples, PROFILES["hiss"], DenoiseConfig())
        gate = NoiseGate(PROFILES["hiss"], RATE, DenoiseConfig())
        assert max_difference(gate(samples), expected) <= TOLERANCE

    def test_reduce_noise_is_a_one_off_gate(self):
        """reduce_noise gives the gate's result."""
        samples, profile = STRUCTURED["tone_in_noise"], PROFILES["hiss"]
        np.testing.assert_array_equal(
            reduce_noise(samples, profile, RATE, DenoiseConfig()),
            NoiseGate(profile, RATE, DenoiseConfig())(samples),
        )


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
