"""One thread per numeric library in every ser-stream process.

The stages run side by side, one process each, and ``predict`` and training spread files over
worker processes: a BLAS or OpenMP thread pool inside each process only makes them compete
for the cores and spin while they wait. On a 2-core machine a default OpenBLAS pool turned a
0.1 ms matrix product of the features stage into a 30 ms one at p99. One thread also keeps
the features bit-for-bit the same in every process (the thread count changes float rounding).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["NUMERIC_THREAD_VARIABLES", "limit_numeric_threads", "unlimited_environment"]

NUMERIC_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def limit_numeric_threads(
    env: MutableMapping[str, str] | None = None,
) -> MutableMapping[str, str]:
    """Set each library's thread count to 1 in ``env`` (default: this process's environment).

    Values already set are kept, so a user can still choose. In this process it takes effect
    only if numpy has not been imported yet; children always inherit it.
    """
    env = os.environ if env is None else env
    for name in NUMERIC_THREAD_VARIABLES:
        if name not in env:
            env[name] = "1"
            if env is os.environ:
                _SET_HERE.add(name)
    return env


_SET_HERE: set[str] = set()


def unlimited_environment() -> dict[str, str]:
    """This process's environment without the limits :func:`limit_numeric_threads` added.

    For running something else as it would run on its own (the bench's comparison).
    """
    return {k: v for k, v in os.environ.items() if k not in _SET_HERE}
