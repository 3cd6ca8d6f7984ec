"""Unit tests of the audio boundary: ``to_canonical``, ``load_audio`` and ``peak_dbfs``."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile

from ser_stream.audio import SAMPLE_RATE, load_audio, peak_dbfs, to_canonical
from ser_stream.errors import InputError


def sine(rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * 440.0 * t)


class TestToCanonicalDtypes:
    @pytest.mark.parametrize(
        ("dtype", "values", "expected"),
        [
            (np.int8, [-128, 0, 64, 127], [-1.0, 0.0, 0.5, 127 / 128]),
            (np.int16, [-32768, 0, 16384, 32767], [-1.0, 0.0, 0.5, 32767 / 32768]),
            (np.int32, [-(2**31), 0, 2**30, 2**31 - 1], [-1.0, 0.0, 0.5, 1.0]),
            (np.int64, [-(2**63), 0, 2**62], [-1.0, 0.0, 0.5]),
            (np.uint8, [0, 128, 192, 255], [-1.0, 0.0, 0.5, 127 / 128]),
            (np.float32, [-1.0, 0.0, 0.5, 1.0], [-1.0, 0.0, 0.5, 1.0]),
            (np.float64, [-1.0, 0.0, 0.5, 1.0], [-1.0, 0.0, 0.5, 1.0]),
            (np.float16, [-1.0, 0.0, 0.5, 1.0], [-1.0, 0.0, 0.5, 1.0]),
        ],
    )
    def test_pcm_scales_to_unit_float32(self, dtype, values, expected):
        """Integer PCM is divided by its full scale; floats pass through as float32."""
        out = to_canonical(np.array(values, dtype=dtype), SAMPLE_RATE)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, np.array(expected, dtype=np.float32), atol=1e-6)

    def test_output_is_contiguous(self):
        """The result is C-contiguous even for a strided view input."""
        out = to_canonical(np.zeros(200, dtype=np.float32)[::2], SAMPLE_RATE)
        assert out.flags["C_CONTIGUOUS"]

    def test_input_is_not_modified(self):
        """The caller's array is left untouched by clipping."""
        samples = np.array([2.0, -3.0, 0.25], dtype=np.float32)
        to_canonical(samples, SAMPLE_RATE)
        assert samples.tolist() == [2.0, -3.0, 0.25]

    @pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.str_])
    def test_non_pcm_dtype_raises_input_error(self, dtype):
        """Booleans, complex numbers and strings are not audio."""
        with pytest.raises(InputError, match="not PCM"):
            to_canonical(np.zeros(4, dtype=dtype), SAMPLE_RATE)


class TestToCanonicalClipping:
    def test_floats_beyond_full_scale_are_clipped(self):
        """Float samples outside [-1, 1] are clipped to full scale."""
        out = to_canonical(np.array([1.5, -7.0, 0.5, 1e6], dtype=np.float64), SAMPLE_RATE)
        assert out.tolist() == [1.0, -1.0, 0.5, 1.0]

    def test_finite_float64_beyond_float32_range_is_clipped(self):
        """A finite float64 sample, however large, is clipped rather than rejected."""
        with np.errstate(over="ignore"):
            out = to_canonical(np.array([1e39, -1e39, 0.5]), SAMPLE_RATE)
        assert out.tolist() == [1.0, -1.0, 0.5]

    def test_resampled_clipped_audio_stays_within_full_scale(self):
        """Clipped input resampled to 16 kHz still lies within [-1, 1]."""
        rate = 44_100
        square = np.sign(np.sin(2 * np.pi * 440 * np.arange(rate) / rate)) * 2.0
        out = to_canonical(square, rate)
        assert float(np.max(np.abs(out))) <= 1.0


class TestToCanonicalChannels:
    def test_stereo_is_averaged_to_mono(self):
        """(n, channels) audio is down-mixed by the channel mean."""
        stereo = np.array([[0.2, 0.4], [-1.0, 1.0], [0.5, 0.5]], dtype=np.float32)
        out = to_canonical(stereo, SAMPLE_RATE)
        np.testing.assert_allclose(out, [0.3, 0.0, 0.5], atol=1e-7)

    def test_int16_six_channels_average(self):
        """Integer multichannel audio is scaled then averaged."""
        frames = np.full((10, 6), 16384, dtype=np.int16)
        frames[:, 0] = -16384
        out = to_canonical(frames, SAMPLE_RATE)
        np.testing.assert_allclose(out, np.full(10, 4 * 0.5 / 6), atol=1e-6)

    def test_single_channel_column_equals_mono(self):
        """(n, 1) audio gives the same result as (n,)."""
        mono = sine(SAMPLE_RATE, 0.1).astype(np.float32)
        np.testing.assert_array_equal(to_canonical(mono[:, None], SAMPLE_RATE), mono)

    def test_zero_channels_raise_input_error(self):
        """(n, 0) audio has no channels to mix."""
        with pytest.raises(InputError, match="no channels"):
            to_canonical(np.zeros((10, 0), dtype=np.float32), SAMPLE_RATE)

    @pytest.mark.parametrize("shape", [(), (2, 3, 4), (1, 1, 1)])
    def test_bad_ndim_raises_input_error(self, shape):
        """Scalars and 3-D arrays are neither mono nor (samples, channels)."""
        with pytest.raises(InputError, match="neither mono"):
            to_canonical(np.zeros(shape, dtype=np.float32), SAMPLE_RATE)


class TestToCanonicalRejects:
    @pytest.mark.parametrize("shape", [(0,), (0, 2)])
    def test_empty_audio_raises_input_error(self, shape):
        """Audio without samples is an input error."""
        with pytest.raises(InputError, match="empty"):
            to_canonical(np.zeros(shape, dtype=np.float32), SAMPLE_RATE)

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_samples_raise_input_error(self, bad):
        """NaN and infinite samples are rejected, not clipped."""
        samples = np.zeros(100, dtype=np.float32)
        samples[37] = bad
        with pytest.raises(InputError, match="NaN or infinite"):
            to_canonical(samples, SAMPLE_RATE)

    def test_non_finite_in_one_stereo_channel_raises_input_error(self):
        """A NaN in any channel is rejected before the down-mix."""
        samples = np.zeros((50, 2), dtype=np.float64)
        samples[10, 1] = np.nan
        with pytest.raises(InputError):
            to_canonical(samples, 44_100)

    @pytest.mark.parametrize("rate", [0, -16_000])
    def test_non_positive_rate_raises_input_error(self, rate):
        """The sample rate must be positive."""
        with pytest.raises(InputError, match="not positive"):
            to_canonical(np.zeros(10, dtype=np.float32), rate)

    def test_input_error_is_a_value_error(self):
        """InputError can be caught as ValueError by generic callers."""
        with pytest.raises(ValueError):
            to_canonical(np.zeros(0, dtype=np.float32), SAMPLE_RATE)


class TestToCanonicalResampling:
    @pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000])
    @pytest.mark.parametrize("n", [1_001, 32_000])
    def test_length_scales_with_rate(self, rate, n):
        """Resampled length is n * target / rate, within one sample."""
        out = to_canonical(np.zeros(n, dtype=np.float32), rate)
        assert abs(out.size - n * SAMPLE_RATE / rate) <= 1

    def test_target_rate_is_honoured(self):
        """target_rate picks the output rate."""
        out = to_canonical(np.zeros(16_000, dtype=np.float32), 16_000, target_rate=8_000)
        assert out.size == 8_000

    def test_same_rate_is_identity_for_float32(self):
        """Audio already at the target rate is returned sample for sample."""
        mono = sine(SAMPLE_RATE, 0.2).astype(np.float32)
        np.testing.assert_array_equal(to_canonical(mono, SAMPLE_RATE), mono)

    def test_resampling_preserves_a_tone(self):
        """A 440 Hz tone at 48 kHz keeps its amplitude and frequency at 16 kHz."""
        out = to_canonical(sine(48_000), 48_000)
        assert float(np.max(np.abs(out[1000:-1000]))) == pytest.approx(0.5, abs=0.01)
        spectrum = np.abs(np.fft.rfft(out))
        assert np.argmax(spectrum) * SAMPLE_RATE / out.size == pytest.approx(440, abs=2)


def _write(path, data, rate, **kwargs):
    soundfile.write(str(path), data, rate, **kwargs)
    return path


class TestLoadAudio:
    @pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
    @pytest.mark.parametrize("channels", [1, 2])
    @pytest.mark.parametrize(
        ("suffix", "fmt", "subtype", "tolerance"),
        [
            ("wav", "WAV", "PCM_16", 0.005),
            ("wav", "WAV", "FLOAT", 0.005),
            ("flac", "FLAC", "PCM_16", 0.005),
            ("ogg", "OGG", "VORBIS", 0.05),
        ],
    )
    def test_reads_any_rate_and_layout_as_16k_mono(
        self, tmp_path, rate, channels, suffix, fmt, subtype, tolerance
    ):
        """Files of any supported format, rate and channel count load as 16 kHz mono."""
        y = sine(rate)
        data = y if channels == 1 else np.stack([y, y], axis=1)
        path = _write(tmp_path / f"a.{suffix}", data, rate, format=fmt, subtype=subtype)
        out = load_audio(path)
        assert out.dtype == np.float32 and out.ndim == 1
        assert abs(out.size - SAMPLE_RATE) <= 1
        assert float(np.max(np.abs(out))) == pytest.approx(0.5, abs=tolerance)

    @pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="no MP3 support")
    @pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
    def test_reads_mp3(self, tmp_path, rate):
        """MP3 files decode to 16 kHz mono of about the written length and level."""
        path = _write(tmp_path / "a.mp3", sine(rate), rate, format="MP3")
        out = load_audio(path)
        assert out.dtype == np.float32
        assert abs(out.size - SAMPLE_RATE) <= SAMPLE_RATE * 0.1
        assert float(np.max(np.abs(out))) == pytest.approx(0.5, abs=0.1)

    def test_int16_wav_matches_to_canonical(self, tmp_path):
        """Loading an int16 wav equals converting its samples directly."""
        rng = np.random.default_rng(0)
        pcm = rng.integers(-30000, 30000, size=4000).astype(np.int16)
        path = _write(tmp_path / "a.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
        np.testing.assert_allclose(load_audio(path), to_canonical(pcm, SAMPLE_RATE), atol=1e-7)

    def test_accepts_str_path(self, tmp_path):
        """A str path works as well as a Path."""
        path = _write(tmp_path / "a.wav", sine(SAMPLE_RATE, 0.1), SAMPLE_RATE)
        assert load_audio(str(path)).size == 1600

    def test_missing_path_raises_input_error_naming_it(self, tmp_path):
        """A missing file names the path and says to check it."""
        path = tmp_path / "nope.wav"
        with pytest.raises(InputError, match="check the path") as info:
            load_audio(path)
        assert str(path) in str(info.value)

    def test_directory_raises_input_error(self, tmp_path):
        """A folder is not an audio file."""
        with pytest.raises(InputError, match="no such file"):
            load_audio(tmp_path)

    @pytest.mark.parametrize(
        "content",
        [b"", os.urandom(4096), b"RIFF" + os.urandom(200), b"fLaC" + os.urandom(200)],
        ids=["empty", "random", "riff-junk", "flac-junk"],
    )
    def test_undecodable_file_raises_input_error_naming_it(self, tmp_path, content):
        """Empty or garbage files name the path and say which formats to pass."""
        path = tmp_path / "broken.wav"
        path.write_bytes(content)
        with pytest.raises(InputError, match="pass a valid wav, flac, ogg or mp3") as info:
            load_audio(path)
        assert str(path) in str(info.value)

    def test_file_with_no_frames_raises_input_error_naming_it(self, tmp_path):
        """A valid header with zero frames is empty audio, reported with the path."""
        path = _write(tmp_path / "empty.wav", np.zeros((0, 1)), SAMPLE_RATE)
        with pytest.raises(InputError, match="empty") as info:
            load_audio(path)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize("suffix,fmt", [("flac", "FLAC"), ("wav", "WAV"), ("ogg", "OGG")])
    @pytest.mark.parametrize("damage", ["truncate", "scramble", "header-only"])
    def test_damaged_file_loads_or_raises_input_error(self, tmp_path, suffix, fmt, damage):
        """A damaged file either decodes to finite audio or raises InputError, never else."""
        rng = np.random.default_rng(1)
        path = _write(
            tmp_path / f"a.{suffix}", 0.3 * rng.standard_normal(24_000), 48_000, format=fmt
        )
        raw = bytearray(path.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "scramble":
            middle = len(raw) // 2
            raw[middle : middle + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
        else:
            raw = raw[:60]
        path.write_bytes(bytes(raw))
        try:
            out = load_audio(path)
        except InputError as exc:
            assert str(path) in str(exc)
        else:
            assert out.dtype == np.float32 and np.all(np.isfinite(out))


class TestPeakDbfs:
    @pytest.mark.parametrize(
        ("peak", "expected"), [(1.0, 0.0), (0.5, -6.0206), (0.1, -20.0), (1e-4, -80.0)]
    )
    def test_peak_level_in_dbfs(self, peak, expected):
        """The peak absolute sample is reported as 20*log10(peak)."""
        samples = np.array([0.0, -peak, peak / 2], dtype=np.float32)
        assert peak_dbfs(samples) == pytest.approx(expected, abs=1e-3)

    @pytest.mark.parametrize("samples", [np.zeros(100, np.float32), np.zeros(0, np.float32)])
    def test_silence_and_empty_are_minus_infinity(self, samples):
        """Digital silence and empty audio peak at -inf dBFS."""
        assert peak_dbfs(samples) == -math.inf
