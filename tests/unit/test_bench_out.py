"""`ser-stream bench` writes its report outside the checkout unless told where."""

from __future__ import annotations

from pathlib import Path

from ser_stream.bench import default_out

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_report_folder_is_the_users_cache_not_the_working_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_out() == tmp_path / "cache" / "ser-stream" / "bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = default_out()
    assert out == tmp_path / "home" / ".cache" / "ser-stream" / "bench"
    assert ROOT not in out.resolve().parents
