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
from ser_stream.train.augment import AugmentConfig
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
    """

    name: str
    summary: str
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sessions: bool = False
    session_length: int = 8

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

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (_BASELINE,)}
"""Every named recipe."""

DEFAULT_RECIPE = "baseline"
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
