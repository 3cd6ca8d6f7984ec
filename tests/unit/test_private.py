"""The private runtime folder and lock files: nothing another local user can plant or read."""

from __future__ import annotations

import os
import stat

import pytest
import zmq

from ser_stream.errors import InputError
from ser_stream.private import open_lock, runtime_dir
from ser_stream.supervisor.folder import claim_publish_endpoint, default_publish_endpoint
from ser_stream.wire import MAX_FRAME_BYTES


@pytest.fixture
def tmp_runtime(tmp_path, monkeypatch):
    """A temporary folder standing in for $XDG_RUNTIME_DIR (mode 0700, as systemd makes it)."""
    base = tmp_path / "run"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base


def test_the_runtime_folder_is_created_private(tmp_runtime):
    folder = runtime_dir()
    assert folder == tmp_runtime / "ser-stream"
    info = os.lstat(folder)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()


def test_the_publish_endpoint_lives_in_it(tmp_runtime):
    assert default_publish_endpoint() == f"ipc://{tmp_runtime}/ser-stream/pub"


def test_an_open_xdg_folder_is_not_trusted(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert runtime_dir() == tmp_path / f"ser-stream-{os.getuid()}"


def test_a_folder_open_to_others_is_refused(tmp_runtime):
    planted = tmp_runtime / "ser-stream"
    planted.mkdir()
    planted.chmod(0o777)  # as another user's umask 000 or a planted folder would leave it
    with pytest.raises(InputError, match="remove it"):
        runtime_dir()


def test_a_link_in_place_of_the_folder_is_refused(tmp_runtime, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_runtime / "ser-stream").symlink_to(target)
    with pytest.raises(InputError, match="not a private folder"):
        runtime_dir()


def test_a_lock_file_is_created_0600_and_reopened(tmp_path):
    path = tmp_path / "pub.lock"
    first = open_lock(path)
    os.close(first)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = open_lock(path)  # an existing lock of this user opens again
    os.close(second)


def test_a_link_planted_as_the_lock_file_is_never_followed(tmp_path):
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    (tmp_path / "pub.lock").symlink_to(victim)
    with pytest.raises(InputError, match="not a lock file"):
        open_lock(tmp_path / "pub.lock")
    assert victim.read_text() == "keep me"


def test_a_second_pipeline_gets_an_endpoint_of_its_own(tmp_runtime):
    import fcntl

    folder = runtime_dir()
    holder = open_lock(folder / "pub.lock")
    fcntl.flock(holder, fcntl.LOCK_EX)  # another `up` of this user holds the default
    try:
        with claim_publish_endpoint() as claim:
            assert claim.endpoint.startswith(f"ipc://{folder}/pub-")
            assert claim.endpoint != default_publish_endpoint()
    finally:
        os.close(holder)


def test_the_default_endpoint_is_free_again_once_its_claim_is_closed(tmp_runtime):
    with claim_publish_endpoint() as first:
        assert first.endpoint == default_publish_endpoint()
        with claim_publish_endpoint() as second:
            assert second.endpoint != default_publish_endpoint()
    with claim_publish_endpoint() as again:
        assert again.endpoint == default_publish_endpoint()


def test_a_frame_over_the_limit_disconnects_its_sender_unread():
    """ZMQ_MAXMSGSIZE, as every receiving socket sets it: an oversized frame never arrives."""
    context = zmq.Context()
    try:
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push = context.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(b"x" * (MAX_FRAME_BYTES + 1))
        assert not pull.poll(1000)
        small = context.socket(zmq.PUSH)  # the receiver goes on serving well-behaved peers
        small.connect(f"tcp://127.0.0.1:{port}")
        small.send(b"ok")
        assert pull.poll(5000) and pull.recv() == b"ok"
    finally:
        context.destroy(linger=0)
