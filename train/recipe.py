"""Training recipes: everything that decides what a model learns, under one name.

``ser-stream train --recipe NAME`` and ``ser-stream evaluate --recipe NAME`` use the same
recipe, so every figure in a model card can be reproduced by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ser_stream.analysis import AnalysisConfig
from ser_stream.errors import InputError
from ser_stream.models.lstm import ModelConfig
from ser_stream.stages.features import FeatureConfig
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.stages.vad import VADConfig
from ser_stream.train.augment import AugmentConfig
from ser_stream.train.datasets import CORPORA
from ser_stream.train.training import TrainConfig

__all__ = ["DEFAULT_RECIPE", "RECIPES", "Recipe", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """One way to train the model.

    Attributes:
        name: how commands and the model card refer to it.
        summary: one line on what sets it apart.
        analysis: VAD, denoise, feature and stream-normalization settings (shipped in the
            artifact).
        augment: augmented copies of each training clip (``None``: clean audio only).
        model: shape of the classifier.
        train: optimisation settings.
        sessions: besides each clip normalized alone (as ``predict`` sees a file), train on
            the clips again as live sessions of one speaker (as ``up`` sees a stream); only
            matters with stream normalization.
        session_length: clips per simulated session.
        corpora: the corpora it trains on.
        balance: ``"label"`` weighs every label the same; ``"corpus"`` also gives every
            corpus the same total weight, so the corpus with most clips (TESS: two speakers,
            one sentence) does not decide what the model learns.
    """

    name: str
    summary: str
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sessions: bool = False
    session_length: int = 8
    corpora: tuple[str, ...] = ("ravdess", "tess")
    balance: str = "label"

    def __post_init__(self) -> None:
        if self.balance not in ("label", "corpus"):
            raise InputError(f"recipe balance {self.balance!r} is not 'label' or 'corpus'")

    def to_dict(self) -> dict:
        """Plain-JSON form, for metrics and the model card."""
        analysis = self.analysis.to_dict()
        analysis["normalize"] = {
            k: v for k, v in analysis["normalize"].items() if not k.startswith("prior_")
        }
        return {
            "name": self.name,
            "summary": self.summary,
            "analysis": analysis,
            "augment": self.augment.to_dict() if self.augment else None,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "sessions": self.sessions,
            "session_length": self.session_length,
            "corpora": list(self.corpora),
            "balance": self.balance,
        }

    def with_epochs(self, epochs: int | None) -> Recipe:
        """The recipe with another epoch limit (``None`` keeps it)."""
        return replace(self, train=replace(self.train, epochs=epochs)) if epochs else self

    def without_augmentation(self) -> Recipe:
        """The recipe trained on clean audio only."""
        return replace(self, augment=None)


_RICH_FEATURES = FeatureConfig(kinds=("rms", "zcr", "mfcc", "mfcc_delta", "logmel"))

_BASELINE = Recipe(
    name="baseline",
    summary="the first shipped model: global standardization, speed/noise/gain augmentation",
    analysis=AnalysisConfig(features=_RICH_FEATURES),
    augment=AugmentConfig(),
    model=ModelConfig(),
    train=TrainConfig(epochs=30, patience=6),
)

_CHANNEL_AUGMENT = AugmentConfig(
    copies=3,
    speed_range=(0.9, 1.1),
    snr_db_range=(5.0, 30.0),
    gain_db_range=(-20.0, 6.0),
    pitch_prob=0.4,
    pitch_semitones=3.0,
    reverb_prob=0.4,
    rt60_range_s=(0.2, 1.0),
    noise_kinds=("white", "pink", "brown", "hum", "babble"),
    eq_prob=0.5,
    eq_db=10.0,
    band_prob=0.35,
    codec_prob=0.2,
)

_CHANNEL_AUG = replace(
    _BASELINE,
    name="channel-aug",
    summary="the baseline with augmentation for voice, room, microphone and line: pitch "
    "shift, reverb, babble/hum/colored noise at 5-30 dB SNR, random EQ, band limits, mu-law",
    augment=_CHANNEL_AUGMENT,
)

_PROSODY = replace(
    _CHANNEL_AUG,
    name="prosody",
    summary="channel-aug plus pitch (semitones), voicing and spectral tilt features",
    analysis=AnalysisConfig(
        features=replace(_RICH_FEATURES, kinds=(*_RICH_FEATURES.kinds, "pitch", "voicing", "tilt"))
    ),
)

_STREAM = replace(
    _PROSODY,
    name="stream",
    summary="prosody plus stream normalization (the stream's own mean and spread, the training "
    "statistics weighing 3 s), trained per file and as 8-clip live sessions",
    analysis=replace(
        _PROSODY.analysis, normalize=NormalizeConfig(mode="stream", prior_s=3.0, memory_s=60.0)
    ),
    sessions=True,
)

_CROPPED = replace(
    _STREAM,
    name="cropped",
    summary="stream, each training window cut to a random 1-2.5 s stretch and tiled back "
    "every epoch, so the model cannot learn the course of the corpora's few sentences",
    train=replace(_STREAM.train, crop_s=(1.0, 2.5)),
)

_CORPORA = replace(
    _STREAM,
    name="corpora",
    summary="stream, trained on RAVDESS, TESS and SAVEE with every corpus weighing the same, "
    "speech cut by Silero VAD as in every other mode; one augmented copy per clip",
    analysis=replace(_STREAM.analysis, vad=VADConfig(engine="silero")),
    augment=replace(_CHANNEL_AUGMENT, copies=1),
    corpora=CORPORA,
    balance="corpus",
)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (_BASELINE, _CHANNEL_AUG, _PROSODY, _STREAM, _CROPPED, _CORPORA)
}
"""Every named recipe."""

DEFAULT_RECIPE = "corpora"
"""The recipe of the shipped model."""


def get_recipe(name: str | None = None) -> Recipe:
    """The recipe called ``name`` (the default one for ``None``).

    Raises:
        InputError: no recipe has that name.
    """
    key = name or DEFAULT_RECIPE
    if key not in RECIPES:
        raise InputError(f"no recipe {key!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[key]
