"""Properties of ``to_canonical``: any PCM layout in, finite 16 kHz mono float32 out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ser_stream.audio import SAMPLE_RATE, to_canonical
from ser_stream.errors import InputError

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8]
RATES = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000]


@st.composite
def pcm(draw):
    dtype = draw(st.sampled_from(INT_DTYPES + [np.float32, np.float64]))
    n = draw(st.integers(1, 4_000))
    channels = draw(st.sampled_from([None, 1, 2, 6]))
    shape = (n,) if channels is None else (n, channels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    else:
        elements = st.floats(-4.0, 4.0, width=32)
    return draw(arrays(dtype, shape, elements=elements))


class TestToCanonicalProperties:
    @settings(max_examples=80, deadline=None)
    @given(samples=pcm(), rate=st.sampled_from(RATES))
    def test_any_pcm_gives_finite_mono_float32_of_scaled_length(self, samples, rate):
        """Output is 1-D float32, finite, and n * 16000 / rate samples long (within one).

        Audio too short to give a single sample at 16 kHz is an InputError instead.
        """
        expected = samples.shape[0] * SAMPLE_RATE / rate
        try:
            out = to_canonical(samples, rate)
        except InputError as exc:
            assert expected < 1 and "too short to resample" in str(exc)
            return
        assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
        assert np.all(np.isfinite(out))
        assert abs(out.size - expected) <= 1

    @settings(max_examples=80, deadline=None)
    @given(samples=pcm())
    def test_without_resampling_output_is_within_full_scale(self, samples):
        """At the target rate, every output sample lies in [-1, 1]."""
        out = to_canonical(samples, SAMPLE_RATE)
        assert out.size == samples.shape[0]
        assert float(np.max(np.abs(out))) <= 1.0

    @settings(max_examples=50, deadline=None)
    @given(
        samples=arrays(np.float64, st.integers(1, 500), elements=st.floats(-1, 1)),
        at=st.integers(0, 499),
        bad=st.sampled_from([np.nan, np.inf, -np.inf]),
        rate=st.sampled_from(RATES),
    )
    def test_any_non_finite_sample_raises_input_error(self, samples, at, bad, rate):
        """A single NaN or infinity anywhere is an InputError, at any rate."""
        samples = samples.copy()
        samples[at % samples.size] = bad
        with pytest.raises(InputError):
            to_canonical(samples, rate)
