"""``ser-stream bench``: the whole pipeline measured as it runs, real processes over ZeroMQ.

:mod:`.pipeline` runs the measurements, :mod:`.original` times the original system's approach
for comparison, :mod:`.report` writes the JSON and the Markdown report with its plots.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_out"]


def default_out() -> Path:
    """Where the report goes unless ``--out`` says: ``$XDG_CACHE_HOME/ser-stream/bench``.

    Never a folder of the working directory: run inside the checkout, that would overwrite
    the committed reports in ``benchmarks/results``, which only ``--out`` replaces.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ser-stream" / "bench"
