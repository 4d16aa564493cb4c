"""The gateway registry, through its public surface, on a fresh SQLite file per test."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat

import pytest

from gateway.registry import BTHOME_COUNTER_MAX, DEVICE_KINDS, Device, Registry, RegistryError, Tablet

#: The official BTHome example key (ble_health.md §11.4).
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
ADDRESS = "54:48:E6:8F:80:A5"
PATTERN = "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'"


def _provision(registry, **fields):
    return registry.provision_device(ADDRESS, **{"kind": "fall_pendant", "location_id": "loc-a", **fields})


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "gateway" / "registry.sqlite")
    yield registry
    registry.close()


@pytest.fixture
def home(registry):
    """Two residents at two locations, and res-1's fall pendant."""
    registry.add_resident("res-1", "loc-a")
    registry.add_resident("res-2", "loc-b")
    _provision(registry, resident_id="res-1", bthome_key=KEY)
    return registry


def _modes(directory):
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}


def test_the_file_and_its_journal_are_readable_by_the_owner_only(tmp_path):
    path = tmp_path / "gateway" / "registry.sqlite"
    registry = Registry(path)
    registry.provision_tablet("tab-1", "loc-a")  # a write creates the -wal and -shm files
    assert _modes(path.parent) == {"registry.sqlite": 0o600, "registry.sqlite-wal": 0o600,
                                   "registry.sqlite-shm": 0o600}
    registry.close()


def test_an_existing_file_is_tightened_to_owner_only(tmp_path):
    path = tmp_path / "registry.sqlite"
    path.touch()
    os.chmod(path, 0o644)
    Registry(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_residents_are_upserted_listed_and_removed(registry):
    registry.add_resident("res-2", "loc-b")
    registry.add_resident("res-1", "loc-a")
    registry.add_resident("res-1", "loc-a")
    assert (registry.residents(), registry.residents("loc-a"), registry.residents("loc-z")) == (
        ["res-1", "res-2"], ["res-1"], []
    )
    assert (registry.location_of("res-1"), registry.location_of("res-9")) == ("loc-a", None)
    registry.remove_resident("res-1")
    registry.remove_resident("res-1")  # already gone: nothing to do
    assert registry.residents() == ["res-2"]


def test_moving_a_resident_moves_their_devices(home):
    home.add_resident("res-1", "loc-b")
    assert home.device(ADDRESS) == Device(ADDRESS, "fall_pendant", "loc-b", "res-1", KEY)


def test_a_device_is_provisioned_once_and_read_back(home):
    shared = home.provision_device("11:22:33:44:55:66", kind="pulse_oximeter", location_id="loc-b")
    assert shared == Device("11:22:33:44:55:66", "pulse_oximeter", "loc-b", None, None)
    assert home.devices() == [shared, Device(ADDRESS, "fall_pendant", "loc-a", "res-1", KEY)]
    assert home.device("AA:AA:AA:AA:AA:AA") is None


@pytest.mark.parametrize("written", ["54:48:e6:8f:80:a5", "54-48-E6-8F-80-A5",
                                     "5448e68f80a5", " 54:48:E6:8f:80:A5 "])
def test_addresses_are_normalised_to_upper_case_with_colons(registry, written):
    device = registry.provision_device(written, kind="thermometer", location_id="loc-a")
    assert (device.address, registry.device(written), registry.device(ADDRESS)) == (ADDRESS, device, device)


def test_the_key_is_left_out_of_a_device_repr(home):
    assert repr(home.device(ADDRESS)) == (
        "Device(address='54:48:E6:8F:80:A5', kind='fall_pendant', location_id='loc-a', resident_id='res-1')"
    )


NOT_AN_ADDRESS = "is not a Bluetooth address like AA:BB:CC:DD:EE:FF"
NHS_NUMBER = "Value error, resident_id must be a pseudonymous id; this value looks like an NHS number"


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda r: r.add_resident("4505577104", "loc-a"), f"resident id is not valid: {NHS_NUMBER}",
                 id="nhs-number-not-echoed"),
    pytest.param(lambda r: r.add_resident("res 1", "loc-a"), f"resident id is not valid: {PATTERN}",
                 id="resident-pattern"),
    pytest.param(lambda r: r.add_resident("res-3", ""), f"location id '' is not valid: {PATTERN}",
                 id="location-pattern"),
    pytest.param(lambda r: r.remove_resident("res-1"),
                 "resident res-1 still has devices 54:48:E6:8F:80:A5: provision them without a resident or "
                 "for another resident before removing this one", id="remove-resident-with-devices"),
    pytest.param(lambda r: r.provision_device("54:48:E6:8F:80", kind="thermometer", location_id="loc-a"),
                 f"device address '54:48:E6:8F:80' {NOT_AN_ADDRESS}", id="short-address"),
    pytest.param(lambda r: r.provision_device("54:48-E6:8F:80:A5", kind="thermometer", location_id="loc-a"),
                 f"device address '54:48-E6:8F:80:A5' {NOT_AN_ADDRESS}", id="mixed-separators"),
    pytest.param(lambda r: r.provision_device(ADDRESS, kind="toaster", location_id="loc-a"),
                 f"device kind 'toaster' is not one of {', '.join(DEVICE_KINDS)}", id="kind"),
    pytest.param(lambda r: r.provision_device(ADDRESS, kind="smart_cup", location_id="loc a"),
                 f"location id 'loc a' is not valid: {PATTERN}", id="device-location"),
    pytest.param(lambda r: _provision(r, bthome_key=KEY[:15]),
                 "BTHome key of device 54:48:E6:8F:80:A5 must be 16 bytes, got 15", id="key-length"),
    pytest.param(lambda r: _provision(r, resident_id="res-9"),
                 "device 54:48:E6:8F:80:A5 is assigned to resident res-9 at loc-a, but res-9 is not "
                 "registered at this gateway", id="unknown-resident"),
    pytest.param(lambda r: _provision(r, resident_id="res-2"),
                 "device 54:48:E6:8F:80:A5 is assigned to resident res-2 at loc-a, but res-2 is at loc-b",
                 id="resident-elsewhere"),
    pytest.param(lambda r: r.device("not an address"), f"device address 'not an address' {NOT_AN_ADDRESS}",
                 id="lookup-address"),
    pytest.param(lambda r: r.accept_bthome_counter("11:22:33:44:55:66", 1),
                 "device 11:22:33:44:55:66 is not provisioned at this gateway", id="counter-unknown-device"),
    pytest.param(lambda r: r.accept_bthome_counter(ADDRESS, -1),
                 "BTHome counter -1 of device 54:48:E6:8F:80:A5 is not a 4-byte unsigned integer",
                 id="counter-negative"),
    pytest.param(lambda r: r.accept_bthome_counter(ADDRESS, 2**32),
                 "BTHome counter 4294967296 of device 54:48:E6:8F:80:A5 is not a 4-byte unsigned integer",
                 id="counter-over-uint32"),
    pytest.param(lambda r: r.provision_tablet("tab 1", "loc-a"), f"tablet id 'tab 1' is not valid: {PATTERN}",
                 id="tablet-pattern"),
    pytest.param(lambda r: r.revoke_tablet("tab-9"), "tablet tab-9 is not provisioned at this gateway",
                 id="revoke-unknown-tablet"),
])
def test_refused_requests_say_why_and_change_nothing(home, call, message):
    before = (home.residents(), home.devices())
    with pytest.raises(RegistryError) as refused:
        call(home)
    assert str(refused.value) == message
    assert (home.residents(), home.devices()) == before


@pytest.mark.parametrize("counters, accepted", [
    ([0, 1, 2], [True, True, True]),
    ([7, 7], [True, False]),                  # the same frame again: a replay
    ([7, 3, 8], [True, False, True]),         # an older frame is refused, a newer one still accepted
    ([BTHOME_COUNTER_MAX, 0], [True, False]),
])
def test_bthome_counters_must_increase(home, counters, accepted):
    assert [home.accept_bthome_counter(ADDRESS, counter) for counter in counters] == accepted


def test_the_last_counter_survives_a_restart(tmp_path):
    path = tmp_path / "registry.sqlite"
    registry = Registry(path)
    registry.provision_device(ADDRESS, kind="smart_cup", location_id="loc-a", bthome_key=KEY)
    assert registry.accept_bthome_counter(ADDRESS, 10)
    registry.close()
    reopened = Registry(path)
    assert [reopened.accept_bthome_counter(ADDRESS, counter) for counter in (10, 11)] == [False, True]
    reopened.close()


def test_reprovisioning_keeps_the_counter_unless_the_key_changes(home):
    assert home.accept_bthome_counter(ADDRESS, 10)
    _provision(home, resident_id="res-1", bthome_key=KEY)
    assert not home.accept_bthome_counter(ADDRESS, 10)
    _provision(home, bthome_key=bytes(16))
    assert home.accept_bthome_counter(ADDRESS, 1)


def test_a_tablet_token_authenticates_its_tablet_only_while_not_revoked(registry):
    token_a = registry.provision_tablet("tab-1", "loc-a")
    token_b = registry.provision_tablet("tab-2", "loc-b")
    assert [registry.authenticate_tablet(t) for t in (token_a, token_b, token_a + "x", "")] == [
        Tablet("tab-1", "loc-a"), Tablet("tab-2", "loc-b"), None, None
    ]
    registry.revoke_tablet("tab-1")
    registry.revoke_tablet("tab-1")
    assert (registry.authenticate_tablet(token_a), registry.authenticate_tablet(token_b)) == (
        None, Tablet("tab-2", "loc-b")
    )


def test_reprovisioning_a_tablet_replaces_its_token_and_lifts_a_revocation(registry):
    old = registry.provision_tablet("tab-1", "loc-a")
    registry.revoke_tablet("tab-1")
    new = registry.provision_tablet("tab-1", "loc-b")
    assert len(new) == 43 and new != old  # 32 random bytes, URL-safe base64
    assert (registry.authenticate_tablet(old), registry.authenticate_tablet(new)) == (
        None, Tablet("tab-1", "loc-b")
    )


def test_only_the_sha256_of_a_token_is_stored_and_it_survives_a_restart(tmp_path):
    path = tmp_path / "registry.sqlite"
    registry = Registry(path)
    token = registry.provision_tablet("tab-1", "loc-a")
    registry.close()
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT * FROM tablets").fetchall()
    assert stored == [("tab-1", "loc-a", hashlib.sha256(token.encode()).digest(), 0)]
    assert token.encode() not in path.read_bytes()
    reopened = Registry(path)
    assert reopened.authenticate_tablet(token) == Tablet("tab-1", "loc-a")
    reopened.close()
