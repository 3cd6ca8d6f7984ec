"""A stage host writes the session's keys only where its own user can read them."""

from __future__ import annotations

import dataclasses
import stat

import pytest

from ser_stream.security import create_keys, load_keys

pytest.importorskip("ray", reason="the stage host needs the [ray] extra")

from ser_stream.supervisor.ray_host import KEY_FILES, HostSession, _write_keys  # noqa: E402


def test_a_host_writes_the_keys_it_is_given_into_a_private_key_folder(tmp_path):
    made = create_keys(tmp_path / "session")
    given = {name: (made / name).read_bytes() for name in KEY_FILES}
    host = tmp_path / "host"
    host.mkdir(mode=0o700)
    keys = _write_keys(host, HostSession("registry", "tcp://a:1", "tcp://a:3", given))
    assert keys == dataclasses.replace(load_keys(made), folder=host / "keys")
    for folder in (host / "keys", host / "keys" / "authorized"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in KEY_FILES:
        mode = stat.S_IMODE((host / "keys" / name).stat().st_mode)
        assert mode == (0o600 if name.endswith("_secret") else 0o644), name
