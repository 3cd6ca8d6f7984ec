"""The processing cores chained in-process over a whole recording.

``predict`` and training use this module; it runs the stages' own processors in this
process (:func:`~ser_stream.adapter.run_chain`), which the pipeline runs one process each.
VAD -> denoise/normalize -> features, with one defined outcome per kind of input: speech
gives its windows; sound without detected speech is analysed whole; digital silence is an
:class:`~ser_stream.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ser_stream.adapter import run_chain
from ser_stream.audio import peak_dbfs
from ser_stream.errors import InputError
from ser_stream.messages import Audio, Features, Window
from ser_stream.stages import denoise, features, vad
from ser_stream.stages.denoise import DenoiseConfig, DenoiseCore
from ser_stream.stages.features import FeatureConfig, FeaturesCore
from ser_stream.stages.normalize import NormalizeConfig
from ser_stream.stages.vad import VADConfig, sliding_spans

__all__ = ["AnalysisConfig", "speech_windows", "analyze"]

SILENCE_DBFS = -80.0
"""Audio whose peak stays below this level is treated as digital silence."""


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Settings of the cores, as stored together in a model artifact."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)

    def vad_with_windowing(self) -> VADConfig:
        """The VAD settings with the window length and hop the features were trained on."""
        return replace(self.vad, window_s=self.features.window_s, hop_s=self.features.hop_s)

    def to_dict(self) -> dict:
        """Plain-JSON form, as stored in the model artifact.

        Window length and hop are stored once, with the features (the VAD takes them from
        there).
        """
        vad = {k: v for k, v in asdict(self.vad).items() if k not in _WINDOWING}
        return {
            "features": self.features.to_dict(),
            "vad": vad,
            "denoise": asdict(self.denoise),
            "normalize": self.normalize.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AnalysisConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`.

        Artifacts written before stream normalization existed have no ``normalize`` entry:
        their features pass unnormalized, as they were trained.
        """
        return cls(
            features=FeatureConfig.from_dict(data["features"]),
            vad=_strict(VADConfig, data["vad"], allowed_extra=_WINDOWING),
            denoise=_strict(DenoiseConfig, data["denoise"]),
            normalize=NormalizeConfig.from_dict(data.get("normalize", {})),
        )


_WINDOWING = frozenset({"window_s", "hop_s"})


def _strict(cls, data: dict, allowed_extra: frozenset[str] = frozenset()):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InputError(f"{cls.__name__} has no settings {sorted(unknown)}")
    return cls(**{k: v for k, v in data.items() if k not in allowed_extra})


def speech_windows(samples: np.ndarray, config: AnalysisConfig) -> list[Window]:
    """Cut a whole recording (16 kHz mono float32) into denoised, normalized speech windows.

    Raises:
        InputError: the recording is digital silence.
    """
    rate = config.features.sample_rate
    if peak_dbfs(samples) < SILENCE_DBFS:
        raise InputError(
            f"no sound: the audio peaks below {SILENCE_DBFS:.0f} dBFS; check the recording level"
        )
    # The stage processors themselves, chained as the pipeline chains them (no stop on
    # silence: a recording is judged whole).
    chain = [
        (
            vad.SPEC,
            vad.vad_stream(config.vad_with_windowing(), stop_on_silence=False, sample_rate=rate),
        ),
        (denoise.SPEC, denoise.denoise_stream(DenoiseCore(config.denoise, rate))),
    ]
    outputs = run_chain(chain, [Audio(samples, rate, 0.0)])
    windows = [item for item in outputs if isinstance(item, Window)]
    if windows:
        return windows
    # Sound, but no speech the VAD trusts (very quiet or unusual voice): judge the whole file.
    # All of it was handed over as noise, so it is normalized but not gated by itself.
    normalize = DenoiseCore(replace(config.denoise, enabled=False), rate)
    spans = sliding_spans(samples.size, config.features.window_samples, _hop(config))
    return [
        normalize.push(Window(samples[a:b], a / rate, b / rate, 0, i, final=i == len(spans) - 1))
        for i, (a, b) in enumerate(spans)
    ]


def analyze(samples: np.ndarray, config: AnalysisConfig) -> list[Features]:
    """Return the feature matrix of every speech window of a recording.

    The recording is one stream: its windows are normalized in order by its own running
    statistics, exactly as the features stage does for a live stream.
    """
    stream = features.features_stream(FeaturesCore(config.features, config.normalize))
    outputs = run_chain([(features.SPEC, stream)], speech_windows(samples, config))
    return [item for item in outputs if isinstance(item, Features)]


def _hop(config: AnalysisConfig) -> int:
    return round(config.features.hop_s * config.features.sample_rate)
