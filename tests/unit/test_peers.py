"""Where a stage's upstream replicas are: fixed endpoints, dns: names and file: listings."""

from __future__ import annotations

import pytest

from ser_stream.errors import InputError
from ser_stream.peers import Peers, check_input, write_listing


@pytest.mark.parametrize(
    "item", ["tcp://10.0.0.1:5555", "ipc:///run/x/vad.0", "dns:vad.ns.svc:5555", "file:/x/in"]
)
def test_every_form_of_an_input_is_taken(item):
    check_input(item)


@pytest.mark.parametrize(
    "item", ["vad:5555", "dns:vad", "dns::5555", "dns:vad:http", "dns:vad:70000", "file:", ""]
)
def test_an_input_that_names_no_endpoint_is_refused_in_one_line(item):
    with pytest.raises(InputError) as refused:
        Peers([item])
    assert "\n" not in str(refused.value)


def test_fixed_endpoints_stand_for_themselves_once_each():
    peers = Peers(["tcp://127.0.0.1:5000", "ipc:///tmp/a", "tcp://127.0.0.1:5000"])
    assert not peers.moving
    assert peers.lookup() == ["tcp://127.0.0.1:5000", "ipc:///tmp/a"]


def test_a_listing_is_read_again_as_it_changes(tmp_path):
    listing = tmp_path / "upstream"
    peers = Peers([f"file:{listing}"])
    assert peers.moving
    assert peers.lookup() == []  # not written yet: nothing, and no error
    write_listing(str(listing), ["tcp://127.0.0.1:5000", "tcp://127.0.0.1:6000"])
    assert peers.lookup() == ["tcp://127.0.0.1:5000", "tcp://127.0.0.1:6000"]
    write_listing(str(listing), ["tcp://127.0.0.2:7000"])  # one moved, one went away
    assert peers.lookup() == ["tcp://127.0.0.2:7000"]
    assert not list(tmp_path.glob("*.part"))


def test_a_listing_keeps_only_endpoints(tmp_path):
    listing = tmp_path / "upstream"
    listing.write_text("tcp://127.0.0.1:5000\n\n# a note\nrm -rf /\nipc:///tmp/a\n")
    assert Peers([f"file:{listing}"]).lookup() == ["tcp://127.0.0.1:5000", "ipc:///tmp/a"]


def test_a_name_stands_for_every_address_it_resolves_to():
    peers = Peers(["dns:localhost:5555"])
    found = peers.lookup()
    assert "tcp://127.0.0.1:5555" in found
    assert all(e in ("tcp://127.0.0.1:5555", "tcp://[::1]:5555") for e in found)
    peers.close()


def test_a_lookup_that_fails_keeps_what_the_name_stood_for(tmp_path):
    listing = tmp_path / "upstream"
    write_listing(str(listing), ["tcp://127.0.0.1:5000"])
    peers = Peers([f"file:{listing}", "dns:no-such-host.invalid:5555"])
    assert peers.lookup() == ["tcp://127.0.0.1:5000"]
    listing.unlink()  # the host is rewriting it, or gone for a moment
    assert peers.lookup() == ["tcp://127.0.0.1:5000"]
