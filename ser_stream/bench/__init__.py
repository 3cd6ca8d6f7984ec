"""``ser-stream bench``: the whole pipeline measured as it runs, real processes over ZeroMQ.

Each measurement is one or more ``up`` sessions of real stage processes, all recorded by
:mod:`.session`'s sink: :mod:`.latency` (one live stream), :mod:`.throughput` (a file as fast
as it goes, and memory), :mod:`.streams` (concurrent live streams) and :mod:`.backpressure`
(a slow model, a slow subscriber). :mod:`.original` times the original system's approach for
comparison, :mod:`.report` writes the JSON and the Markdown report with its plots, and
:mod:`.main` runs them all. :mod:`.cluster` runs the streams sweep on simulated Ray clusters
(``bench --engine ray``).
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
