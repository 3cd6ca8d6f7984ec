"""What every benchmark report carries: the machine it ran on and percentiles."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

__all__ = ["machine", "percentiles"]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def percentiles(values_ms: list[float], *, suffix: str = "") -> dict:
    """``p50``/``p95``/``p99``/``mean``/``max`` (keys end with ``suffix``) and ``n``."""
    if not values_ms:
        return {"n": 0}
    a = np.asarray(values_ms, dtype=float)
    figures = {
        "p50": np.percentile(a, 50),
        "p95": np.percentile(a, 95),
        "p99": np.percentile(a, 99),
        "mean": a.mean(),
        "max": a.max(),
    }
    return {"n": len(a), **{f"{k}{suffix}": round(float(v), 3) for k, v in figures.items()}}
