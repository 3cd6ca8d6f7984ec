"""Unit tests of the real-codec round trips through ffmpeg."""

from __future__ import annotations

import shutil
from functools import cache

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.train import codecs
from ser_stream.train.codecs import CODECS, Codec, ffmpeg_available, round_trip

RATE = 16_000
NARROWBAND = [name for name, codec in CODECS.items() if codec.narrowband]

needs_ffmpeg = pytest.mark.skipif(
    not ffmpeg_available(), reason="ffmpeg not on PATH (apt-get install ffmpeg)"
)


def formant_voice(seconds: float = 1.0, *, f0: float = 130.0, rate: int = RATE) -> np.ndarray:
    """A vowel-like voice: harmonics to 7.5 kHz under three formants and a high shelf."""
    t = np.arange(round(seconds * rate)) / rate
    pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * 0.8 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = np.zeros(t.size)
    for k in range(1, int(7_500 / f0)):
        hz = k * f0
        formants = sum(
            np.exp(-0.5 * ((hz - centre) / width) ** 2)
            for centre, width in ((600, 150), (1_400, 250), (2_600, 400))
        )
        voice += (formants + (0.3 if hz > 4_500 else 0.02)) * np.sin(k * phase + k)
    voice *= 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return (0.4 * voice / np.max(np.abs(voice))).astype(np.float32)


def band_energy(samples: np.ndarray, low_hz: float, high_hz: float) -> float:
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    return float(power[(freqs >= low_hz) & (freqs < high_hz)].sum())


def telephone_band(samples: np.ndarray) -> np.ndarray:
    """Only 100-3400 Hz, through a zero-phase FFT mask (the band every codec here carries)."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    spectrum[(freqs < 100) | (freqs > 3_400)] = 0
    return np.fft.irfft(spectrum, samples.size)


def band_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(telephone_band(a), telephone_band(b))[0, 1])


def best_lag(reference: np.ndarray, signal: np.ndarray, reach: int = 200) -> int:
    size = reference.size + signal.size
    corr = np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.arange(-reach, reach + 1)
    return int(lags[np.argmax(corr[lags])])


CLIP = formant_voice()


@cache
def coded(name: str) -> np.ndarray:
    return round_trip(CLIP, RATE, name)


@needs_ffmpeg
class TestRoundTrip:
    @pytest.mark.parametrize("name", list(CODECS))
    def test_keeps_length_type_energy_and_waveform(self, name):
        """A round trip returns float32 of the input's length, aligned, at about its level."""
        out = coded(name)
        assert out.dtype == np.float32 and out.shape == CLIP.shape
        # Compare within the band the codec carries, so a narrowband line is not blamed
        # for the top octave it never promised.
        top = 3_400.0 if CODECS[name].narrowband else 7_000.0
        change_db = 10 * np.log10(band_energy(out, 100, top) / band_energy(CLIP, 100, top))
        assert abs(change_db) < 3.0
        assert abs(best_lag(CLIP, out)) <= 2
        # Low-rate parametric codecs (Opus at 6 kbit/s) keep the sound more than the waveform.
        assert band_correlation(CLIP, out) > 0.6

    @pytest.mark.parametrize("name", NARROWBAND)
    def test_narrowband_codecs_remove_what_lies_above_four_khz(self, name):
        """An 8 kHz line keeps almost nothing above 4 kHz of a voice that has plenty there."""
        before = band_energy(CLIP, 4_200, 8_000) / band_energy(CLIP, 0, 8_000)
        after = band_energy(coded(name), 4_200, 8_000) / band_energy(coded(name), 0, 8_000)
        assert before > 0.05 and after < 0.01 * before

    @pytest.mark.parametrize("name", ["g711-mulaw", "g711-alaw", "g722"])
    def test_waveform_codecs_follow_the_waveform_closely(self, name):
        """G.711 and G.722 code the waveform itself: in band, the output is nearly the input."""
        assert band_correlation(CLIP, coded(name)) > 0.99

    def test_empty_audio_needs_no_ffmpeg(self, monkeypatch):
        """Nothing in, nothing out, without starting a process."""
        monkeypatch.setattr(codecs, "FFMPEG", "/nonexistent/ffmpeg")
        out = round_trip(np.zeros(0, dtype=np.float32), RATE, "gsm")
        assert out.dtype == np.float32 and out.size == 0

    def test_another_sample_rate_comes_back_at_that_rate(self):
        """Input at 22.05 kHz comes back at 22.05 kHz with its length."""
        clip = formant_voice(0.5, rate=22_050)
        assert round_trip(clip, 22_050, "g722").shape == clip.shape

    def test_a_failing_ffmpeg_is_an_input_error_with_its_first_line(self):
        """An encoder ffmpeg lacks fails with ffmpeg's own complaint on one line."""
        bogus = Codec("bogus", "no_such_encoder", "wav", 8_000, None, "not a codec")
        with pytest.raises(InputError, match="ffmpeg failed on the bogus round trip: .+"):
            round_trip(CLIP, RATE, bogus)


def test_missing_ffmpeg_says_how_to_install_it(monkeypatch):
    """Without the program, the error says what to install."""
    monkeypatch.setattr(codecs, "FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(InputError, match=r"ffmpeg not found: install it \(apt-get install"):
        round_trip(CLIP, RATE, "gsm")


def test_ffmpeg_available_follows_path():
    """ffmpeg_available agrees with a PATH lookup."""
    assert ffmpeg_available() is (shutil.which("ffmpeg") is not None)


@pytest.mark.parametrize("bad", ["speex", "opus"])
def test_unknown_codec_is_an_input_error(bad):
    """A codec name not in CODECS is rejected with the choices."""
    with pytest.raises(InputError, match="g711-mulaw"):
        round_trip(CLIP, RATE, bad)


def test_unusable_audio_is_an_input_error():
    """NaN samples and stereo arrays are rejected before ffmpeg runs."""
    with pytest.raises(InputError, match="NaN"):
        round_trip(np.full(100, np.nan, dtype=np.float32), RATE, "gsm")
    with pytest.raises(InputError, match="mono"):
        round_trip(np.zeros((100, 2), dtype=np.float32), RATE, "gsm")
