"""Unit tests of the feature cache: per-clip entries shared between lists, robust to damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_stream.analysis import AnalysisConfig
from ser_stream.testing import voiced
from ser_stream.train.augment import AugmentConfig
from ser_stream.train.cache import clip_windows
from ser_stream.train.datasets import Clip

RATE = 16_000
CONFIG = AnalysisConfig()
AUGMENT = AugmentConfig(copies=1)


@pytest.fixture
def corpus(tmp_path: Path) -> list[Clip]:
    """Three short voiced clips of two speakers."""
    clips = []
    for n, (speaker, pitch) in enumerate([("a", 120.0), ("a", 180.0), ("b", 220.0)]):
        path = tmp_path / "audio" / f"{speaker}_{n}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, voiced(3.5, f0=pitch, seed=n), RATE)
        clips.append(Clip(path, "happy", "ravdess", f"ravdess-0{n}"))
    return clips


def rows_of(windows, clip_index: int) -> np.ndarray:
    return windows.features[windows.clip_index == clip_index]


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "clips").rglob("*.npz"))


class TestClipCache:
    def test_a_clip_in_two_lists_is_computed_once_with_the_same_draws(self, corpus, tmp_path):
        """Fold-invariant: a clip's augmented copies do not depend on its place in the list."""
        cache = tmp_path / "cache"
        first = clip_windows(corpus[:2], CONFIG, augmentation=AUGMENT, cache=cache, workers=1)
        assert len(entries(cache)) == 4  # 2 clips x (clean + 1 copy)
        second = clip_windows(corpus[1:], CONFIG, augmentation=AUGMENT, cache=cache, workers=1)
        assert len(entries(cache)) == 6  # only the new clip was computed
        np.testing.assert_array_equal(rows_of(first, 1), rows_of(second, 0))
        fresh = clip_windows(corpus[1:], CONFIG, augmentation=AUGMENT, cache=None, workers=1)
        np.testing.assert_array_equal(fresh.features, second.features)
        np.testing.assert_array_equal(fresh.variant, second.variant)
        np.testing.assert_array_equal(fresh.t_end, second.t_end)

    def test_other_settings_do_not_share_entries(self, corpus, tmp_path):
        """Another augmentation or condition is another entry, never a stale one."""
        cache = tmp_path / "cache"
        clip_windows(corpus[:1], CONFIG, augmentation=AUGMENT, cache=cache, workers=1)
        clip_windows(corpus[:1], CONFIG, condition="gain", cache=cache, workers=1)
        assert len(entries(cache)) == 3

    def test_a_damaged_entry_is_computed_again(self, corpus, tmp_path):
        """An entry cut short (an interrupted run) is recomputed, not trusted or fatal."""
        cache = tmp_path / "cache"
        clean = clip_windows(corpus[:1], CONFIG, cache=cache, workers=1)
        (entry,) = entries(cache)
        entry.write_bytes(entry.read_bytes()[:100])
        again = clip_windows(corpus[:1], CONFIG, cache=cache, workers=1)
        np.testing.assert_array_equal(clean.features, again.features)

    def test_a_clip_that_cannot_be_read_is_skipped_and_remembered(self, corpus, tmp_path):
        """A broken file contributes no window, and the next run does not retry it."""
        cache = tmp_path / "cache"
        broken = tmp_path / "audio" / "broken.wav"
        broken.write_bytes(b"RIFF not audio")
        clips = [corpus[0], Clip(broken, "sad", "ravdess", "ravdess-09")]
        windows = clip_windows(clips, CONFIG, cache=cache, workers=1)
        assert set(windows.clip_index.tolist()) == {0}
        assert len(entries(cache)) == 2
        again = clip_windows(clips, CONFIG, cache=cache, workers=1)
        np.testing.assert_array_equal(windows.features, again.features)

    def test_a_changed_babble_source_is_a_new_entry(self, corpus, tmp_path):
        """Rewriting a recording another clip's babble is made of invalidates that clip."""
        cache = tmp_path / "cache"
        babble = [[corpus[1].path], [corpus[0].path]]
        settings = {"augmentation": AUGMENT, "babble": babble, "cache": cache, "workers": 1}
        clip_windows(corpus[:2], CONFIG, **settings)
        before = len(entries(cache))
        sf.write(corpus[1].path, voiced(3.0, f0=300.0, seed=9), RATE)
        clip_windows(corpus[:2], CONFIG, **settings)
        # clip 1 changed (clean + copy), and clip 0's copy mixes clip 1 in: three new entries
        assert len(entries(cache)) == before + 3

    def test_clean_clips_are_shared_between_augmentations(self, corpus, tmp_path):
        """The clean clip does not depend on augmentation, so recipes share its entry."""
        cache = tmp_path / "cache"
        clip_windows(corpus[:1], CONFIG, augmentation=AUGMENT, cache=cache, workers=1)
        other = AugmentConfig(copies=1, snr_db_range=(5.0, 10.0))
        clip_windows(corpus[:1], CONFIG, augmentation=other, cache=cache, workers=1)
        clip_windows(corpus[:1], CONFIG, cache=cache, workers=1)
        assert len(entries(cache)) == 3  # one clean, one copy per augmentation

    def test_parallel_workers_fill_gaps_in_order(self, corpus, tmp_path):
        """With some clips cached and worker processes computing the rest, rows stay aligned."""
        cache = tmp_path / "cache"
        clip_windows(corpus[1:2], CONFIG, augmentation=AUGMENT, cache=cache, workers=1)
        mixed = clip_windows(corpus, CONFIG, augmentation=AUGMENT, cache=cache, workers=2)
        alone = clip_windows(corpus, CONFIG, augmentation=AUGMENT, cache=None, workers=1)
        np.testing.assert_array_equal(mixed.features, alone.features)
        np.testing.assert_array_equal(mixed.clip_index, alone.clip_index)
        np.testing.assert_array_equal(mixed.variant, alone.variant)

    def test_clip_key_depends_on_speaker_and_name_only(self, corpus, tmp_path):
        """The key (the seed of a clip's draws) does not depend on the folder, and tells
        files apart."""
        moved = Clip(tmp_path / "elsewhere" / corpus[0].path.name, "sad", "ravdess", "ravdess-00")
        assert moved.key == corpus[0].key
        assert len({clip.key for clip in corpus}) == len(corpus)
