"""Keys and endpoints that stay ours: another local user can neither get its key trusted,
block `up` and `tap` by taking the runtime folder's name, nor have a sink write through a link.

The stranger is a forked child that drops to the ``nobody`` user (``helpers.as_stranger``),
so those tests need root and skip otherwise; the pipeline runs as this user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import zmq

from ser_stream.errors import InputError
from ser_stream.private import runtime_dir
from ser_stream.security import create_keys, load_keys
from ser_stream.testing import SER_STREAM, finish, records, talk
from tests.faults import helpers
from tests.faults.helpers import as_stranger, start_up

shared_tmp = helpers.shared_tmp
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def keys_command(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SER_STREAM, "keys", str(folder)], capture_output=True, text=True, timeout=60
    )


def refusals(stderr: str) -> list[str]:
    """The one-line refusals the command line printed (``ser-stream: ...``)."""
    return [line for line in stderr.splitlines() if line.startswith("ser-stream: ")]


@pytest.fixture
def home(monkeypatch):
    """A home folder of this user, short enough for ipc:// paths below it."""
    folder = Path(tempfile.mkdtemp(prefix="home-", dir="/tmp"))
    monkeypatch.setenv("HOME", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stranger_owns(shared_tmp):
    """Make a folder in the shared folder as ``nobody``; return a function taking its name."""

    def make(name: str, mode: int = 0o755) -> Path:
        folder = shared_tmp / name

        def plant() -> dict:
            folder.mkdir()
            os.chmod(folder, mode)
            return {"made": True}

        assert as_stranger(plant) == {"made": True}
        return folder

    return make


class TestKeyFolder:
    """`ser-stream keys DIR` writes keys only where no one else can reach them."""

    @needs_root
    def test_a_folder_of_another_user_is_refused(self, stranger_owns):
        """The stranger made DIR first: keys there would be the stranger's to swap."""
        folder = stranger_owns("keys")
        done = keys_command(folder)
        assert done.returncode == 2, done.stdout
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert f"{folder} belongs to another user" in done.stderr
        assert "ser-stream keys DIR" in done.stderr
        assert os.listdir(folder) == []

    def test_a_folder_writable_by_others_is_refused(self, tmp_path):
        folder = tmp_path / "keys"
        folder.mkdir()
        folder.chmod(0o777)
        done = keys_command(folder)
        assert done.returncode == 2, done.stdout
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert f"{folder} is writable by others (mode 777); `chmod 700 {folder}`" in done.stderr
        assert os.listdir(folder) == []

    def test_a_link_in_place_of_the_folder_is_refused(self, tmp_path):
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        (tmp_path / "keys").symlink_to(target)
        with pytest.raises(InputError, match="is a symbolic link"):
            create_keys(tmp_path / "keys")
        assert os.listdir(target) == []

    def test_a_new_or_private_folder_still_gets_keys(self, tmp_path):
        """The supervisor's session keys and a user's fresh folder work as before."""
        fresh = load_keys(create_keys(tmp_path / "new" / "keys"))
        assert stat.S_IMODE(os.stat(fresh.folder).st_mode) == 0o700
        assert fresh.client_public in fresh.authorized
        existing = tmp_path / "mine"
        existing.mkdir(mode=0o755)
        assert load_keys(create_keys(existing)).authorized == {load_keys(existing).client_public}
        assert stat.S_IMODE(os.stat(existing).st_mode) == 0o700


class TestLoadingKeys:
    """Loading keys checks who owns the folder, `authorized/` and every key read."""

    @needs_root
    def test_a_key_swapped_into_another_users_authorized_folder_is_refused(self, shared_tmp):
        folder = create_keys(shared_tmp / "keys")
        folder.chmod(0o711)  # the stranger may pass through, not write
        authorized = folder / "authorized"
        nobody = pwd.getpwnam("nobody")
        os.chown(authorized, nobody.pw_uid, nobody.pw_gid)
        public, _ = zmq.curve_keypair()

        def swap() -> dict:
            (authorized / "client.key").unlink()
            (authorized / "client.key").write_text(
                f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
            )
            return {"swapped": True}

        assert as_stranger(swap) == {"swapped": True}
        with pytest.raises(InputError, match=f"{authorized} belongs to another user"):
            load_keys(folder)

    @needs_root
    def test_up_with_such_keys_starts_nothing(self, shared_tmp, tmp_path):
        """`up --curve DIR` refuses the folder with one line and exit 2 before it listens."""
        folder = create_keys(shared_tmp / "keys")
        nobody = pwd.getpwnam("nobody")
        os.chown(folder / "authorized", nobody.pw_uid, nobody.pw_gid)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        up = start_up(f"zmq:tcp://127.0.0.1:{port}", tmp_path / "s.jsonl", "--curve", str(folder))
        stderr = finish(up, 60)
        assert up.returncode == 2, stderr
        (line,) = refusals(stderr)
        assert f"{folder / 'authorized'} belongs to another user" in line

    @needs_root
    def test_a_key_file_of_another_user_is_refused(self, tmp_path):
        folder = create_keys(tmp_path / "keys")
        nobody = pwd.getpwnam("nobody")
        os.chown(folder / "authorized" / "client.key", nobody.pw_uid, nobody.pw_gid)
        with pytest.raises(InputError, match="client.key belongs to another user"):
            load_keys(folder)

    def test_an_authorized_folder_writable_by_others_is_refused(self, tmp_path):
        folder = create_keys(tmp_path / "keys")
        (folder / "authorized").chmod(0o777)
        with pytest.raises(InputError, match="authorized is writable by others"):
            load_keys(folder)

    def test_a_key_file_writable_by_others_is_refused(self, tmp_path):
        folder = create_keys(tmp_path / "keys")
        (folder / "authorized" / "client.key").chmod(0o666)
        with pytest.raises(InputError, match=r"client.key is writable by others .*chmod go-w"):
            load_keys(folder)

    def test_links_are_refused(self, tmp_path):
        folder = create_keys(tmp_path / "keys")
        elsewhere = create_keys(tmp_path / "elsewhere")
        key = folder / "authorized" / "client.key"
        key.unlink()
        key.symlink_to(elsewhere / "client.key")
        with pytest.raises(InputError, match=f"{key} is a symbolic link"):
            load_keys(folder)
        shutil.rmtree(folder / "authorized")
        (folder / "authorized").symlink_to(elsewhere / "authorized")
        with pytest.raises(InputError, match="authorized is a symbolic link"):
            load_keys(folder)
        (tmp_path / "link").symlink_to(elsewhere)
        with pytest.raises(InputError, match="link is a symbolic link"):
            load_keys(tmp_path / "link")

    def test_a_folder_without_authorized_keys_lets_no_client_in(self, tmp_path):
        folder = create_keys(tmp_path / "keys")
        shutil.rmtree(folder / "authorized")
        assert load_keys(folder).authorized == frozenset()


@needs_root
class TestSquattedRuntimeFolder:
    """A stranger who takes `ser-stream-UID` in the shared temporary folder blocks nothing."""

    def squat(self, shared_tmp: Path, monkeypatch=None) -> Path:
        """``nobody`` makes the default folder (in this process too, if ``monkeypatch``)."""
        if monkeypatch is not None:  # this process read $TMPDIR once already
            monkeypatch.setattr("tempfile.tempdir", str(shared_tmp))
        taken = shared_tmp / f"ser-stream-{os.getuid()}"

        def plant() -> dict:
            taken.mkdir(mode=0o777)
            os.chmod(taken, 0o777)
            return {"planted": True}

        assert as_stranger(plant) == {"planted": True}
        return taken

    def test_the_folder_falls_back_to_a_private_one_at_home(self, shared_tmp, home, monkeypatch):
        self.squat(shared_tmp, monkeypatch)
        folder = runtime_dir()
        assert folder == home / ".cache" / "ser-stream-run"
        info = os.lstat(folder)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
        assert runtime_dir() == folder  # the same place every time: `tap` finds it

    def test_a_home_too_deep_for_ipc_paths_is_refused_in_one_line(
        self, shared_tmp, tmp_path, monkeypatch
    ):
        taken = self.squat(shared_tmp, monkeypatch)
        deep = tmp_path / ("d" * 60)
        deep.mkdir()
        monkeypatch.setenv("HOME", str(deep))
        with pytest.raises(InputError, match=f"{taken} belongs to another user.*too long"):
            runtime_dir()

    def test_a_fallback_taken_by_another_user_is_refused(self, shared_tmp, home, monkeypatch):
        """(Only root could plant it at home; the check is the same as for the default.)"""
        self.squat(shared_tmp, monkeypatch)
        fallback = home / ".cache" / "ser-stream-run"
        fallback.parent.mkdir(mode=0o700)
        fallback.mkdir(mode=0o700)
        nobody = pwd.getpwnam("nobody")
        os.chown(fallback, nobody.pw_uid, nobody.pw_gid)
        with pytest.raises(InputError, match=f"{fallback} is not a private folder"):
            runtime_dir()

    @pytest.mark.slow
    @pytest.mark.timeout(180)
    def test_up_runs_and_tap_finds_it(self, shared_tmp, home, tmp_path):
        taken = self.squat(shared_tmp)
        fallback = home / ".cache" / "ser-stream-run"
        source, jsonl = talk(tmp_path / "talk.wav", 3), tmp_path / "s.jsonl"
        # tap first: it waits at the default endpoint (wherever that is) for `up` to bind it.
        tap = subprocess.Popen(
            [SER_STREAM, "tap", "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        up = start_up(f"file:{source}", jsonl, default_publish=True)
        try:
            stderr = finish(up, 120)
            out, tap_stderr = tap.communicate(timeout=60)
        finally:
            for process in (up, tap):
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert up.returncode == 0, stderr
        assert tap.returncode == 0, tap_stderr
        warnings = [
            json.loads(line) for line in stderr.splitlines() if "belongs to another" in line
        ]
        assert warnings and warnings[0]["taken"] == str(taken)
        assert warnings[0]["folder"] == str(fallback)
        assert os.listdir(taken) == []
        session = records(jsonl)
        assert session[-1]["kind"] == "session_end"
        tapped = [json.loads(line) for line in out.splitlines()]
        assert any(r["kind"] == "prediction" for r in tapped)
        assert tapped[-1] == {"kind": "end_of_stream", "stream": "stream-1", "reason": "eof"}


@needs_root
def test_the_jsonl_sink_never_writes_through_a_planted_link(shared_tmp, tmp_path):
    """In a folder others may write (no sticky bit), the stranger links the sink's path to a
    file of this user's: `up` refuses it in one line, and the file is untouched."""
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    common = shared_tmp / "common"
    common.mkdir()
    common.chmod(0o777)
    planted = common / "s.jsonl"

    def plant() -> dict:
        planted.symlink_to(victim)
        return {"planted": True}

    assert as_stranger(plant) == {"planted": True}
    up = start_up(f"file:{talk(tmp_path / 'talk.wav', 1)}", planted)
    stderr = finish(up, 60)
    assert up.returncode == 2, stderr
    (line,) = refusals(stderr)
    assert f"{planted} is a symbolic link" in line
    assert victim.read_text() == "keep me"
