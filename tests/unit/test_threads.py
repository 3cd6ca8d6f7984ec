"""Numeric libraries on one thread, unless the user chose; the bench can undo it for others."""

from __future__ import annotations

from ser_stream import threads


def test_limits_only_what_is_not_set():
    env = {"OPENBLAS_NUM_THREADS": "4", "PATH": "/bin"}
    threads.limit_numeric_threads(env)
    assert env["OPENBLAS_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    assert all(
        env[name] == "1" for name in threads.NUMERIC_THREAD_VARIABLES[:1] + ("MKL_NUM_THREADS",)
    )


def test_the_unlimited_environment_drops_only_the_limits_set_here(monkeypatch):
    for name in threads.NUMERIC_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice stays
    monkeypatch.setattr(threads, "_SET_HERE", set())
    threads.limit_numeric_threads()
    env = threads.unlimited_environment()
    assert env["OMP_NUM_THREADS"] == "3"
    assert "OPENBLAS_NUM_THREADS" not in env and "NUMBA_NUM_THREADS" not in env
