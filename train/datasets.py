"""Loaders of the RAVDESS (speech), TESS and SAVEE corpora, mapped to the project's 8 labels."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ser_stream.errors import InputError

__all__ = [
    "Clip",
    "DATA_ENV",
    "data_root",
    "load_corpora",
    "CORPORA",
    "load_ravdess",
    "load_savee",
    "load_tess",
]

DATA_ENV = "SER_STREAM_DATA"
"""Environment variable naming the folder that holds ``ravdess/``, ``tess/`` and ``savee/``."""

CORPORA = ("ravdess", "tess", "savee")
"""Every corpus the loaders know, in report order."""

_RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgusted",
    "08": "surprised",
}
_TESS_EMOTIONS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fear": "fearful",
    "disgust": "disgusted",
    "ps": "surprised",
}
_SAVEE_EMOTIONS = {
    "n": "neutral",
    "h": "happy",
    "sa": "sad",
    "a": "angry",
    "f": "fearful",
    "d": "disgusted",
    "su": "surprised",
}
_SAVEE_NAME = re.compile(r"^([a-z]+)(\d\d)$")
_RAVDESS_NAME = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_AUDIO_SUFFIXES = {".flac", ".wav"}


@dataclass(frozen=True, slots=True)
class Clip:
    """One labelled recording.

    Attributes:
        path: the audio file.
        label: one of the project's 8 labels.
        corpus: ``"ravdess"``, ``"tess"`` or ``"savee"``.
        speaker: corpus-qualified speaker id, e.g. ``"ravdess-07"``, ``"tess-OAF"`` or
            ``"savee-DC"``.
    """

    path: Path
    label: str
    corpus: str
    speaker: str

    @property
    def actor(self) -> int | None:
        """RAVDESS actor number, ``None`` for the other corpora."""
        return int(self.speaker.split("-")[1]) if self.corpus == "ravdess" else None

    @property
    def key(self) -> int:
        """A stable number for this recording (its speaker and file name), whatever list it is in.

        Random draws seeded with it (augmentation, babble) are the same in every fold, so one
        clip's features can be computed once and shared.
        """
        name = f"{self.speaker}/{self.path.name}".encode()
        return int.from_bytes(hashlib.sha256(name).digest()[:4], "big")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``explicit``, else ``$SER_STREAM_DATA``, else ``../shared/data``.

    The default is looked up beside the current directory and beside the project checkout.
    """
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    candidates = [Path.cwd() / ".." / "shared" / "data"]
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return candidates[0]


def load_ravdess(root: Path) -> list[Clip]:
    """List the RAVDESS speech clips under ``root/ravdess`` (``Actor_NN/03-01-...``)."""
    clips = []
    for path in sorted(_audio_files(root / "ravdess")):
        match = _RAVDESS_NAME.match(path.stem)
        if not match or match.group(1) not in _RAVDESS_EMOTIONS:
            continue
        actor = match.group(5)
        clips.append(Clip(path, _RAVDESS_EMOTIONS[match.group(1)], "ravdess", f"ravdess-{actor}"))
    return clips


def load_tess(root: Path) -> list[Clip]:
    """List the TESS clips under ``root/tess`` (``<SPEAKER>_<emotion>/<SPK>_<word>_<emotion>``).

    The emotion comes from the file name's last part and the speaker from the folder name,
    since folder case and one file prefix (``OA_bite_neutral``) are inconsistent.
    """
    clips = []
    for path in sorted(_audio_files(root / "tess")):
        emotion = path.stem.rsplit("_", 1)[-1].lower()
        if emotion not in _TESS_EMOTIONS:
            continue
        speaker = path.parent.name.split("_", 1)[0].upper()
        clips.append(Clip(path, _TESS_EMOTIONS[emotion], "tess", f"tess-{speaker}"))
    return clips


def load_savee(root: Path) -> list[Clip]:
    """List the SAVEE clips under ``root/savee`` (``<SPEAKER>/<code><NN>``, e.g. ``DC/sa03``)."""
    clips = []
    for path in sorted(_audio_files(root / "savee")):
        match = _SAVEE_NAME.match(path.stem.lower())
        if not match or match.group(1) not in _SAVEE_EMOTIONS:
            continue
        speaker = path.parent.name.upper()
        clips.append(Clip(path, _SAVEE_EMOTIONS[match.group(1)], "savee", f"savee-{speaker}"))
    return clips


def load_corpora(root: Path, corpora: tuple[str, ...] = CORPORA) -> list[Clip]:
    """List the clips of the named corpora.

    Raises:
        InputError: a corpus folder is missing or holds no clips.
    """
    loaders = {"ravdess": load_ravdess, "tess": load_tess, "savee": load_savee}
    unknown = sorted(set(corpora) - set(loaders))
    if unknown:
        raise InputError(f"unknown corpora {unknown}; choose from {sorted(loaders)}")
    clips: list[Clip] = []
    for corpus in corpora:
        found = loaders[corpus](root)
        if not found:
            raise InputError(
                f"no {corpus} clips under {root / corpus}; pass --data DIR or set {DATA_ENV}"
            )
        clips.extend(found)
    return clips


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file()]
