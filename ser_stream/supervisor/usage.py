"""What the processes of a session used: peak and proportional memory, and CPU time."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["usage"]


def usage(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per process by label: ``peak_rss_mb``, ``pss_mb`` and ``cpu_s`` (a gone one is left out).

    Read from ``/proc`` (Linux). RSS counts shared libraries in every process that maps
    them; PSS splits each shared page between its processes, so PSS adds up to what the
    pipeline really occupies.
    """
    found: dict[str, dict[str, float]] = {"peak_rss_mb": {}, "pss_mb": {}, "cpu_s": {}}
    ticks = os.sysconf("SC_CLK_TCK")
    for label, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                found["peak_rss_mb"][label] = round(int(line.split()[1]) / 1024, 1)
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                found["pss_mb"][label] = round(int(line.split()[1]) / 1024, 1)
        fields = stat.rsplit(")", 1)[1].split()
        found["cpu_s"][label] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
    return found
