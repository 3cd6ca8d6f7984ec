"""Unit tests of the corpus loaders on tiny fixture trees named like RAVDESS and TESS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.errors import InputError
from ser_stream.train.datasets import (
    DATA_ENV,
    Clip,
    data_root,
    load_corpora,
    load_ravdess,
    load_savee,
    load_tess,
)

RAVDESS_LABELS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgusted",
    "08": "surprised",
}
TESS_LABELS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fear": "fearful",
    "disgust": "disgusted",
    "ps": "surprised",
}


def write_clip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(160, dtype=np.float32), 16_000, format="FLAC")
    return path


@pytest.fixture
def corpora(tmp_path: Path) -> Path:
    """A data root with a few real (tiny) flac clips and some files that must be skipped."""
    write_clip(tmp_path / "ravdess/Actor_01/03-01-05-02-01-01-01.flac")
    write_clip(tmp_path / "ravdess/Actor_12/03-01-01-01-02-02-12.flac")
    write_clip(tmp_path / "ravdess/Actor_01/03-02-05-02-01-01-01.flac")  # song, not speech
    write_clip(tmp_path / "ravdess/Actor_01/02-01-05-02-01-01-01.flac")  # video-only
    write_clip(tmp_path / "ravdess/Actor_01/03-01-09-01-01-01-01.flac")  # no such emotion
    write_clip(tmp_path / "ravdess/Actor_01/README.flac")
    (tmp_path / "ravdess/Actor_01/03-01-03-01-01-01-01.txt").write_text("not audio")
    write_clip(tmp_path / "tess/OAF_Fear/OAF_back_fear.flac")
    write_clip(tmp_path / "tess/YAF_pleasant_surprised/YAF_dog_ps.flac")
    write_clip(tmp_path / "tess/OAF_neutral/OA_bite_neutral.flac")
    write_clip(tmp_path / "tess/OAF_neutral/OAF_bite_calm.flac")  # TESS has no calm
    (tmp_path / "tess/OAF_Fear/notes_fear.txt").write_text("not audio")
    return tmp_path


class TestLoadRavdess:
    def test_lists_only_speech_clips_with_known_emotions(self, corpora):
        """Only 03-01-<known emotion>-... audio files are listed, sorted by path."""
        clips = load_ravdess(corpora)
        assert [c.path.name for c in clips] == [
            "03-01-05-02-01-01-01.flac",
            "03-01-01-01-02-02-12.flac",
        ]
        assert [(c.label, c.corpus, c.speaker) for c in clips] == [
            ("angry", "ravdess", "ravdess-01"),
            ("neutral", "ravdess", "ravdess-12"),
        ]

    @pytest.mark.parametrize(("code", "label"), sorted(RAVDESS_LABELS.items()))
    def test_every_emotion_code_maps_to_its_label(self, tmp_path, code, label):
        """All eight RAVDESS emotion codes map to the project's labels."""
        write_clip(tmp_path / f"ravdess/Actor_07/03-01-{code}-01-01-01-07.flac")
        (clip,) = load_ravdess(tmp_path)
        assert (clip.label, clip.speaker, clip.actor) == (label, "ravdess-07", 7)

    def test_wav_and_upper_case_suffixes_count(self, tmp_path):
        """.wav and .WAV files are audio too."""
        write_clip(tmp_path / "ravdess/Actor_02/03-01-02-01-01-01-02.WAV")
        write_clip(tmp_path / "ravdess/Actor_02/03-01-03-01-01-01-02.wav")
        assert [c.label for c in load_ravdess(tmp_path)] == ["calm", "happy"]

    def test_missing_folder_gives_no_clips(self, tmp_path):
        """A root without ravdess/ lists nothing."""
        assert load_ravdess(tmp_path) == []


class TestLoadTess:
    def test_label_from_file_and_speaker_from_folder(self, corpora):
        """The emotion is the file's last part; the speaker is the folder prefix, upper-cased."""
        found = {c.path.name: (c.label, c.corpus, c.speaker) for c in load_tess(corpora)}
        assert found == {
            "OAF_back_fear.flac": ("fearful", "tess", "tess-OAF"),
            "YAF_dog_ps.flac": ("surprised", "tess", "tess-YAF"),
            "OA_bite_neutral.flac": ("neutral", "tess", "tess-OAF"),
        }

    @pytest.mark.parametrize(("suffix", "label"), sorted(TESS_LABELS.items()))
    def test_every_suffix_maps_to_its_label(self, tmp_path, suffix, label):
        """All seven TESS emotion suffixes map to the project's labels."""
        write_clip(tmp_path / f"tess/yaf_{suffix}/YAF_word_{suffix.upper()}.flac")
        (clip,) = load_tess(tmp_path)
        assert (clip.label, clip.speaker, clip.actor) == (label, "tess-YAF", None)

    def test_missing_folder_gives_no_clips(self, tmp_path):
        """A root without tess/ lists nothing."""
        assert load_tess(tmp_path) == []


class TestLoadSavee:
    @pytest.mark.parametrize(
        ("code", "label"),
        [
            ("n", "neutral"),
            ("h", "happy"),
            ("sa", "sad"),
            ("a", "angry"),
            ("f", "fearful"),
            ("d", "disgusted"),
            ("su", "surprised"),
        ],
    )
    def test_every_code_maps_to_its_label_and_the_folder_is_the_speaker(
        self, tmp_path, code, label
    ):
        """The letters before the number are the emotion; the folder names the speaker."""
        write_clip(tmp_path / f"savee/jk/{code}07.flac")
        (clip,) = load_savee(tmp_path)
        assert (clip.label, clip.corpus, clip.speaker, clip.actor) == (
            label,
            "savee",
            "savee-JK",
            None,
        )

    def test_other_files_are_not_clips(self, tmp_path):
        """Names that are not <code><NN> (or unknown codes) are left out."""
        for name in ("x01.flac", "sa.flac", "notes.txt", "n1.flac"):
            write_clip(tmp_path / "savee/DC" / name)
        assert load_savee(tmp_path) == []


class TestClip:
    def test_actor_is_the_ravdess_number(self):
        """Clip.actor is the RAVDESS actor as an int."""
        assert Clip(Path("x.flac"), "sad", "ravdess", "ravdess-24").actor == 24

    def test_actor_is_none_for_tess(self):
        """TESS clips have no actor number."""
        assert Clip(Path("x.flac"), "sad", "tess", "tess-OAF").actor is None


class TestLoadCorpora:
    def test_both_corpora_in_order(self, corpora):
        """RAVDESS clips come first, then TESS."""
        clips = load_corpora(corpora, ("ravdess", "tess"))
        assert [c.corpus for c in clips] == ["ravdess"] * 2 + ["tess"] * 3

    def test_every_corpus_by_default(self, corpora):
        """Without a list, all three corpora are loaded, SAVEE last."""
        write_clip(corpora / "savee/DC/sa01.flac")
        clips = load_corpora(corpora)
        assert [c.corpus for c in clips] == ["ravdess"] * 2 + ["tess"] * 3 + ["savee"]

    def test_one_corpus_only(self, corpora):
        """corpora=('tess',) loads TESS alone."""
        assert {c.corpus for c in load_corpora(corpora, ("tess",))} == {"tess"}

    @pytest.mark.parametrize("missing", ["ravdess", "tess"])
    def test_missing_corpus_raises_input_error(self, tmp_path, missing):
        """A corpus without clips is an error naming the folder and how to point elsewhere."""
        present = "tess" if missing == "ravdess" else "ravdess"
        name = (
            "tess/OAF_Fear/OAF_back_fear.flac"
            if present == "tess"
            else ("ravdess/Actor_01/03-01-05-02-01-01-01.flac")
        )
        write_clip(tmp_path / name)
        with pytest.raises(InputError, match=DATA_ENV) as info:
            load_corpora(tmp_path, ("ravdess", "tess"))
        assert str(tmp_path / missing) in str(info.value)

    def test_empty_corpus_folder_raises_input_error(self, tmp_path):
        """A corpus folder with no usable clips counts as missing."""
        write_clip(tmp_path / "ravdess/Actor_01/03-02-05-02-01-01-01.flac")
        with pytest.raises(InputError, match="no ravdess clips"):
            load_corpora(tmp_path, ("ravdess",))


class TestDataRoot:
    def test_explicit_wins_over_environment(self, tmp_path, monkeypatch):
        """An explicit folder beats $SER_STREAM_DATA."""
        monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
        assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
        assert data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"

    def test_environment_wins_over_default(self, tmp_path, monkeypatch):
        """Without an explicit folder, $SER_STREAM_DATA is used."""
        monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
        assert data_root() == tmp_path / "env"
        assert data_root("") == tmp_path / "env"

    def test_default_is_shared_data_beside_the_cwd(self, tmp_path, monkeypatch):
        """Without either, ../shared/data beside the current directory is used."""
        monkeypatch.delenv(DATA_ENV, raising=False)
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "project").mkdir()
        monkeypatch.chdir(tmp_path / "project")
        assert data_root() == (tmp_path / "shared" / "data").resolve()

    def test_empty_environment_is_ignored(self, tmp_path, monkeypatch):
        """An empty $SER_STREAM_DATA falls through to the default."""
        monkeypatch.setenv(DATA_ENV, "")
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "project").mkdir()
        monkeypatch.chdir(tmp_path / "project")
        assert data_root() == (tmp_path / "shared" / "data").resolve()
