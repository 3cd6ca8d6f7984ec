"""librosa's numba kernels compile on first use (20-30 s) and are cached afterwards.

The project's setup runs ``python -m ser_stream.warmup`` so a user's first command does not
pay for it; a command that would pay for it says so before it starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["kernels_cached", "warm_up"]


def kernels_cached() -> bool:
    """Return True when librosa's compiled kernels are already in numba's cache."""
    spec = importlib.util.find_spec("librosa")
    if spec is None or spec.origin is None:
        return True
    return any(Path(spec.origin).parent.rglob("*.nbi"))


def warm_up() -> None:
    """Run every feature kind once on a short tone, compiling and caching the kernels."""
    from ser_stream.audio import SAMPLE_RATE
    from ser_stream.stages.features import FEATURE_KINDS, FeatureConfig, extract_features

    tone = np.sin(np.linspace(0, 2 * np.pi * 440, SAMPLE_RATE)).astype(np.float32) * 0.1
    extract_features(tone, FeatureConfig(window_s=1.0, kinds=FEATURE_KINDS))


if __name__ == "__main__":
    warm_up()
