"""Processing cores, one module per pipeline stage, and the table of stages by name."""

from ser_stream.stage import StageSpec
from ser_stream.stages import denoise, features, model, vad

__all__ = ["STAGES"]

STAGES: dict[str, StageSpec] = {
    spec.name: spec for spec in (vad.SPEC, denoise.SPEC, features.SPEC, model.SPEC)
}
"""Every stage the runtime can run, by name (``ser-stream stage NAME``), in chain order:
each takes what the one before it emits (the capture, a source, comes first)."""
