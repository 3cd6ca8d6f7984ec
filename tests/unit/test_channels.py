"""Unit tests of the acoustic building blocks and the channel-shift conditions."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.testing import voiced
from ser_stream.train import acoustics, augment, channels, codecs, rooms
from ser_stream.train.channels import (
    CONDITIONS,
    DESCRIPTIONS,
    NOISE_SNR_DB,
    SHARED_WITH_TRAINING,
    apply_condition,
)
from tests.unit.test_codecs import band_energy, formant_voice, needs_ffmpeg

RATE = 16_000


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def gain_db(before: np.ndarray, after: np.ndarray) -> float:
    trim = slice(2000, -2000)
    return 10 * np.log10(
        np.mean(after[trim].astype(float) ** 2) / np.mean(before[trim].astype(float) ** 2)
    )


class TestFilters:
    def test_peaking_eq_boosts_its_centre_and_spares_far_bands(self):
        """+8 dB at 3 kHz: a 3 kHz tone gains ~8 dB, a 200 Hz tone almost nothing."""
        eq = acoustics.peaking_eq(3_000.0, 8.0, 1.0, RATE)
        assert gain_db(tone(3_000), acoustics.apply_biquad(tone(3_000), eq)) == pytest.approx(
            8.0, abs=0.3
        )
        assert abs(gain_db(tone(200), acoustics.apply_biquad(tone(200), eq))) < 0.5

    @pytest.mark.parametrize("high", [False, True])
    def test_shelf_moves_its_side_of_the_spectrum(self, high):
        """A -6 dB shelf cuts the side it shelves by ~6 dB and leaves the other side."""
        shelf = acoustics.shelf_eq(1_000.0, -6.0, RATE, high=high)
        shelved, spared = (6_000, 100) if high else (100, 6_000)
        assert gain_db(
            tone(shelved), acoustics.apply_biquad(tone(shelved), shelf)
        ) == pytest.approx(-6.0, abs=0.5)
        assert abs(gain_db(tone(spared), acoustics.apply_biquad(tone(spared), shelf))) < 0.6

    def test_band_limit_removes_what_lies_outside(self):
        """A 300-3400 Hz band keeps 1 kHz and removes 100 Hz and 6 kHz."""
        for hz, inside in ((100, False), (1_000, True), (6_000, False)):
            out = acoustics.band_limit(tone(hz), RATE, 300.0, 3_400.0)
            change = gain_db(tone(hz), out)
            assert (abs(change) < 1.0) if inside else (change < -20.0)

    def test_mu_law_round_trip_keeps_speech_recognizable(self):
        """An 8 kHz mu-law round trip keeps length and correlates with the band-limited input."""
        clip = voiced(1.0)
        out = acoustics.mu_law_round_trip(clip, RATE)
        assert out.shape == clip.shape and out.dtype == np.float32
        reference = acoustics.band_limit(clip, RATE, None, 3_800.0)
        assert np.corrcoef(out, reference)[0, 1] > 0.9


class TestNoiseAndRooms:
    @pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
    def test_colored_noise_has_unit_rms_and_its_slope(self, exponent):
        """Noise has RMS 1 and loses about 3 dB per octave for each unit of exponent."""
        noise = acoustics.colored_noise(2**16, exponent, np.random.default_rng(0))
        assert np.sqrt(np.mean(noise.astype(float) ** 2)) == pytest.approx(1.0, rel=1e-3)
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
        low = power[(freqs > 500) & (freqs < 1_000)].mean()
        high = power[(freqs > 1_000) & (freqs < 2_000)].mean()
        assert 10 * np.log10(low / high) == pytest.approx(3.0 * exponent, abs=1.0)

    def test_mix_at_snr_sets_the_stated_ratio(self):
        """Speech (measured over its louder half) sits snr_db above the added noise."""
        speech = voiced(2.0)
        noise = acoustics.colored_noise(speech.size, 1.0, np.random.default_rng(1))
        mixed = acoustics.mix_at_snr(speech, noise, 10.0)
        added = mixed.astype(float) - speech
        frames = speech[: speech.size // 480 * 480].astype(float).reshape(-1, 480)
        powers = np.sort(np.mean(frames**2, axis=1))
        louder = powers[powers.size // 2 :].mean()
        assert 10 * np.log10(louder / np.mean(added**2)) == pytest.approx(10.0, abs=0.1)

    def test_decaying_noise_rir_decays_sixty_db_in_rt60(self):
        """The statistical room response starts with the direct path and falls 60 dB by RT60."""
        rir = acoustics.decaying_noise_rir(0.5, RATE, np.random.default_rng(2))
        assert rir[0] == 1.0 and rir.size == RATE // 2
        early = np.sqrt(np.mean(rir[100:800] ** 2))
        late = np.sqrt(np.mean(rir[-700:] ** 2))
        assert 20 * np.log10(early / late) > 45

    def test_convolve_rir_keeps_length_and_peak(self):
        """Reverberated audio keeps its length and its peak level."""
        clip = voiced(1.0)
        out = acoustics.convolve_rir(
            clip, acoustics.decaying_noise_rir(0.4, RATE, np.random.default_rng(3))
        )
        assert out.shape == clip.shape
        assert np.max(np.abs(out)) == pytest.approx(np.max(np.abs(clip)), rel=1e-5)

    def test_babble_is_unit_rms_and_uses_its_sources(self):
        """Babble of two talkers comes out at unit RMS."""
        sources = [voiced(0.8, f0=120.0, seed=1), voiced(1.1, f0=210.0, seed=2)]
        out = acoustics.babble(sources, RATE, np.random.default_rng(4))
        assert np.sqrt(np.mean(out.astype(float) ** 2)) == pytest.approx(1.0, rel=1e-3)


CODEC_CONDITIONS = [c for c in CONDITIONS if c in codecs.CODECS]
NARROWBAND = [c for c in CODEC_CONDITIONS if codecs.CODECS[c].narrowband] + ["band-cheby"]
OTHER_TALKERS = [voiced(1.0, f0=220.0, seed=7), voiced(1.3, f0=105.0, seed=9)]


CLIP = formant_voice(1.0)


@cache
def heard(name: str) -> np.ndarray:
    """The test clip through a condition (seed 11), computed once per test run."""
    return apply_condition(name, CLIP, RATE, 11, babble_sources=OTHER_TALKERS)


def condition_param(name: str):
    marks = [needs_ffmpeg] if name in codecs.CODECS else []
    return pytest.param(name, marks=marks, id=name)


class TestConditions:
    @pytest.mark.parametrize("name", [condition_param(c) for c in CONDITIONS if c != "reverb"])
    def test_conditions_are_deterministic_finite_and_keep_length(self, name):
        """Every condition keeps the length, stays finite in [-1, 1] and repeats for a seed."""
        first = heard(name)
        again = apply_condition(name, CLIP, RATE, 11, babble_sources=OTHER_TALKERS)
        assert first.shape == CLIP.shape and first.dtype == np.float32
        assert np.all(np.isfinite(first)) and float(np.max(np.abs(first))) <= 1.0
        np.testing.assert_array_equal(first, again)

    @pytest.mark.parametrize("name", [condition_param(c) for c in NARROWBAND])
    def test_narrowband_lines_remove_what_lies_above_four_khz(self, name):
        """Telephone lines keep the speech band's energy and almost nothing above 4 kHz.

        (The line filters shift phase as real lines do, so the waveform is not compared.)
        """
        out = heard(name)
        above = band_energy(out, 4_200, 8_000) / band_energy(out, 0, 8_000)
        assert above < 0.01 * band_energy(CLIP, 4_200, 8_000) / band_energy(CLIP, 0, 8_000)
        kept_db = 10 * np.log10(band_energy(out, 400, 3_000) / band_energy(CLIP, 400, 3_000))
        assert abs(kept_db) < 3.0

    def test_band_cheby_keeps_the_telephone_band_only(self):
        """The Chebyshev band keeps 1 kHz and removes 100 Hz and 6 kHz."""
        for hz, inside in ((100, False), (1_000, True), (6_000, False)):
            change = gain_db(tone(hz), apply_condition("band-cheby", tone(hz), RATE, 0))
            assert (abs(change) < 1.5) if inside else (change < -30.0)

    def test_gain_condition_is_minus_twenty_db(self):
        """The gain condition scales by -20 dB exactly."""
        clip = voiced(1.0)
        np.testing.assert_allclose(apply_condition("gain", clip, RATE, 0), clip * 0.1, rtol=1e-6)

    def test_noise_condition_adds_noise_at_ten_db(self):
        """Room noise is added at the stated SNR, a different room for another seed."""
        clip = voiced(2.0)
        out = apply_condition("noise", clip, RATE, 3, babble_sources=OTHER_TALKERS)
        added = out.astype(float) - clip
        frames = clip[: clip.size // 480 * 480].astype(float).reshape(-1, 480)
        powers = np.sort(np.mean(frames**2, axis=1))
        assert 10 * np.log10(
            powers[powers.size // 2 :].mean() / np.mean(added**2)
        ) == pytest.approx(NOISE_SNR_DB, abs=0.3)
        other = apply_condition("noise", clip, RATE, 4, babble_sources=OTHER_TALKERS)
        assert not np.array_equal(out, other)

    def test_unknown_condition_is_an_input_error(self):
        """A condition name not in the list is rejected with the choices."""
        with pytest.raises(InputError, match="g711-mulaw"):
            apply_condition("underwater", voiced(0.5), RATE, 0)
        with pytest.raises(InputError, match="unknown channel condition 'telephone'"):
            apply_condition("telephone", voiced(0.5), RATE, 0)

    def test_every_condition_is_described_and_sharing_names_real_conditions(self):
        """Reports find one line per condition; the shared list names only conditions."""
        assert set(DESCRIPTIONS) == set(CONDITIONS)
        assert set(SHARED_WITH_TRAINING) <= set(CONDITIONS)
        assert all(text and "\n" not in text for text in DESCRIPTIONS.values())
        assert all(text and "\n" not in text for text in SHARED_WITH_TRAINING.values())


# Arithmetic that augment also calls but that simulates nothing: convolving with a given
# response, and scaling noise to a stated SNR (so "10 dB" means the same everywhere).
UTILITIES = {"apply_biquad", "convolve_rir", "mix_at_snr"}
NAMED_GENERATORS = {
    "band_limit",
    "mu_law_round_trip",
    "colored_noise",
    "mains_hum",
    "babble",
    "decaying_noise_rir",
    "peaking_eq",
    "shelf_eq",
}


def acoustics_used(module) -> set[str]:
    """Names of ``acoustics`` a module calls as ``acoustics.x`` or imports from it."""
    tree = ast.parse(Path(module.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "acoustics"
        ):
            used.add(node.attr)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("acoustics"):
            used.update(alias.name for alias in node.names)
    return used


def train_imports(module) -> set[str]:
    """Modules of ``ser_stream.train`` that a module imports."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "ser_stream.train":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "ser_stream.train."
        ):
            found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.rsplit(".", 1)[1]
                for a in node.names
                if a.name.startswith("ser_stream.train.")
            )
    return found


def test_the_yardstick_calls_no_generator_of_augmentation():
    """No condition makes its degradation with a generator that training augmentation uses.

    Shared conditions (SHARED_WITH_TRAINING) share a kind of degradation, never the code
    that makes it; the codec and room-noise modules import nothing of training at all.
    """
    generators = acoustics_used(augment) - UTILITIES
    assert NAMED_GENERATORS <= generators
    assert not acoustics_used(channels) & generators
    assert train_imports(rooms) == set() and train_imports(codecs) == set()
    assert "augment" not in train_imports(channels)


@pytest.mark.slow
def test_reverb_condition_reverberates_deterministically():
    """Image-source rooms smear the clip's energy in time, the same way for the same seed."""
    clip = voiced(1.0)
    first = apply_condition("reverb", clip, RATE, 5)
    np.testing.assert_array_equal(first, apply_condition("reverb", clip, RATE, 5))
    assert first.shape == clip.shape and not np.allclose(first, clip, atol=1e-3)
