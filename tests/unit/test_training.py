"""Unit tests of the training helpers that need no TensorFlow: cropping and tiling windows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.stages.features import fit_length
from ser_stream.train.training import crop_and_tile


class TestCropAndTile:
    def test_matches_tiling_the_stretch_as_a_short_utterance_is(self):
        """A cropped stretch is tiled exactly as fit_length tiles short audio."""
        windows = np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3)
        out = crop_and_tile(windows, np.array([4, 10]), np.array([3, 0]))
        for column in range(3):
            np.testing.assert_array_equal(
                out[0, :, column], fit_length(windows[0, 3:7, column], 10)
            )
        np.testing.assert_array_equal(out[1], windows[1])

    @settings(max_examples=60, deadline=None)
    @given(frames=st.integers(2, 40), data=st.data())
    def test_every_frame_comes_from_the_chosen_stretch(self, frames, data):
        """Whatever the crop, output frames are frames of the stretch, in cyclic order."""
        length = data.draw(st.integers(1, frames))
        start = data.draw(st.integers(0, frames - length))
        window = np.arange(frames, dtype=np.float32)[None, :, None]
        out = crop_and_tile(window, np.array([length]), np.array([start]))[0, :, 0]
        assert out.shape == (frames,)
        expected = start + np.arange(frames) % length
        np.testing.assert_array_equal(out, expected)
