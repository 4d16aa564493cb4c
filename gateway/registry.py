"""The gateway's device registry: residents, Bluetooth devices and carers' tablets, in one SQLite file.

The file holds BTHome pre-shared keys and tablet token hashes, so it is created with mode 0600 (and an
existing file is tightened to it); SQLite gives its ``-wal`` and ``-shm`` files the same mode.

Invariants kept here rather than by callers:

- ids follow the event contracts (`carepulse.events.Identifier`, and `ResidentId`, which refuses
  NHS-number-like values: cqc_domain.md §5), so nothing stored here can fail validation on the wire;
- a device assigned to a resident is at that resident's location: moving a resident moves their
  devices, and a resident who still has devices cannot be removed (their readings would lose an owner);
- BTHome frame counters only go up (ble_health.md §11.4), and survive restarts, so a recorded frame
  cannot be replayed to the gateway after a reboot;
- a tablet token is shown once, at provisioning; only its SHA-256 is stored. The token is 256 random
  bits, so an unsalted hash is enough to make a stolen registry file useless for logging in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from carepulse import events

DEVICE_KINDS = (
    "pulse_oximeter", "blood_pressure", "thermometer", "heart_rate", "weight_scale", "fall_pendant",
    "call_bell", "smart_cup",
)
#: AES-CCM pre-shared key length of BTHome v2 encryption (ble_health.md §11.4).
BTHOME_KEY_BYTES = 16
#: The BTHome counter is a uint32 (ble_health.md §11.4).
BTHOME_COUNTER_MAX = 2**32 - 1

_DEVICE_COLUMNS = "address, kind, location_id, resident_id, bthome_key"
_ADDRESS = re.compile(r"^[0-9A-F]{2}([:-]?)[0-9A-F]{2}(\1[0-9A-F]{2}){4}$")
_identifier = TypeAdapter(events.Identifier)
_resident_id = TypeAdapter(events.ResidentId)


class RegistryError(ValueError):
    """A request that would break a registry invariant; ``str(error)`` is the sentence for the installer."""


@dataclass(frozen=True)
class Device:
    address: str
    kind: str
    location_id: str
    resident_id: str | None
    bthome_key: bytes | None = field(repr=False)  # never in a log line through repr()


@dataclass(frozen=True)
class Tablet:
    tablet_id: str
    location_id: str


def _checked(adapter: TypeAdapter[str], value: str, what: str, *, echo: bool = True) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        reason = "; ".join(item["msg"] for item in error.errors(include_url=False))
        shown = f" {value!r}" if echo else ""
        raise RegistryError(f"{what}{shown} is not valid: {reason}") from None


def _resident(resident_id: str) -> str:
    # Not echoed: a refused value may be a real NHS number (cqc_domain.md §5).
    return _checked(_resident_id, resident_id, "resident id", echo=False)


def _normalised_address(address: str) -> str:
    upper = address.strip().upper()
    if not _ADDRESS.match(upper):
        raise RegistryError(f"device address {address!r} is not a Bluetooth address like AA:BB:CC:DD:EE:FF")
    hex_digits = re.sub(r"[:-]", "", upper)
    return ":".join(hex_digits[i:i + 2] for i in range(0, 12, 2))


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Registry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an accepted counter must survive a power cut
        with self._db:
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS residents ("
                " resident_id TEXT PRIMARY KEY, location_id TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS devices ("
                " address TEXT PRIMARY KEY, kind TEXT NOT NULL, location_id TEXT NOT NULL, resident_id TEXT,"
                " bthome_key BLOB, last_counter INTEGER);"
                "CREATE TABLE IF NOT EXISTS tablets ("
                " tablet_id TEXT PRIMARY KEY, location_id TEXT NOT NULL, token_sha256 BLOB NOT NULL,"
                " revoked INTEGER NOT NULL DEFAULT 0);"
            )

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- residents -------------------------------------------------------------------------------
    def add_resident(self, resident_id: str, location_id: str) -> None:
        """Register (or move) a resident; their assigned devices move with them."""
        resident_id = _resident(resident_id)
        location_id = _checked(_identifier, location_id, "location id")
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO residents (resident_id, location_id) VALUES (?, ?)"
                " ON CONFLICT (resident_id) DO UPDATE SET location_id = excluded.location_id",
                (resident_id, location_id),
            )
            self._db.execute(
                "UPDATE devices SET location_id = ? WHERE resident_id = ?", (location_id, resident_id)
            )

    def remove_resident(self, resident_id: str) -> None:
        """Forget a resident (no-op if unknown); refused while devices are still assigned to them."""
        resident_id = _resident(resident_id)
        with self._lock, self._db:
            assigned = [row[0] for row in self._db.execute(
                "SELECT address FROM devices WHERE resident_id = ? ORDER BY address", (resident_id,)
            )]
            if assigned:
                raise RegistryError(
                    f"resident {resident_id} still has devices {', '.join(assigned)}: provision them "
                    "without a resident or for another resident before removing this one"
                )
            self._db.execute("DELETE FROM residents WHERE resident_id = ?", (resident_id,))

    def location_of(self, resident_id: str) -> str | None:
        rows = self._query("SELECT location_id FROM residents WHERE resident_id = ?", (resident_id,))
        return rows[0][0] if rows else None

    def residents(self, location_id: str | None = None) -> list[str]:
        if location_id is None:
            rows = self._query("SELECT resident_id FROM residents ORDER BY resident_id")
        else:
            rows = self._query(
                "SELECT resident_id FROM residents WHERE location_id = ? ORDER BY resident_id", (location_id,)
            )
        return [row[0] for row in rows]

    # -- devices ---------------------------------------------------------------------------------
    def provision_device(
        self,
        address: str,
        *,
        kind: str,
        location_id: str,
        resident_id: str | None = None,
        bthome_key: bytes | None = None,
    ) -> Device:
        """Create or replace a device's record (all fields, key included).

        The replay counter is kept when the key is unchanged, so re-provisioning cannot reopen a replay
        window; a new key starts a new counter sequence (ble_health.md §11.4).
        """
        address = _normalised_address(address)
        if kind not in DEVICE_KINDS:
            raise RegistryError(f"device kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
        location_id = _checked(_identifier, location_id, "location id")
        if resident_id is not None:
            resident_id = _resident(resident_id)
        if bthome_key is not None and len(bthome_key) != BTHOME_KEY_BYTES:
            raise RegistryError(
                f"BTHome key of device {address} must be {BTHOME_KEY_BYTES} bytes, got {len(bthome_key)}"
            )
        key = None if bthome_key is None else bytes(bthome_key)
        device = Device(address, kind, location_id, resident_id, key)
        with self._lock, self._db:
            if resident_id is not None:
                row = self._db.execute(
                    "SELECT location_id FROM residents WHERE resident_id = ?", (resident_id,)
                ).fetchone()
                if row is None or row[0] != location_id:
                    where = "is not registered at this gateway" if row is None else f"is at {row[0]}"
                    raise RegistryError(
                        f"device {address} is assigned to resident {resident_id} at {location_id}, "
                        f"but {resident_id} {where}"
                    )
            self._db.execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (address)"
                " DO UPDATE SET kind = excluded.kind, location_id = excluded.location_id,"
                " resident_id = excluded.resident_id, bthome_key = excluded.bthome_key,"
                " last_counter = CASE WHEN bthome_key IS excluded.bthome_key THEN last_counter END",
                (device.address, device.kind, device.location_id, device.resident_id, device.bthome_key),
            )
        return device

    def device(self, address: str) -> Device | None:
        rows = self._query(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE address = ?",
            (_normalised_address(address),),
        )
        return Device(*rows[0]) if rows else None

    def devices(self) -> list[Device]:
        rows = self._query(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY address")
        return [Device(*row) for row in rows]

    def accept_bthome_counter(self, address: str, counter: int) -> bool:
        """True (and remembered) if `counter` is above the last accepted one for the device, else False.

        A receiver must check that the counter increases, or recorded frames can be replayed
        (ble_health.md §11.4); call this only after the frame decrypted, so forged frames cannot
        advance it.
        """
        address = _normalised_address(address)
        if not 0 <= counter <= BTHOME_COUNTER_MAX:
            raise RegistryError(
                f"BTHome counter {counter} of device {address} is not a 4-byte unsigned integer"
            )
        with self._lock, self._db:
            advanced = self._db.execute(
                "UPDATE devices SET last_counter = ?"
                " WHERE address = ? AND (last_counter IS NULL OR last_counter < ?)",
                (counter, address, counter),
            ).rowcount
            known = self._db.execute("SELECT 1 FROM devices WHERE address = ?", (address,)).fetchone()
            if known is None:
                raise RegistryError(f"device {address} is not provisioned at this gateway")
        return bool(advanced)

    # -- tablets ---------------------------------------------------------------------------------
    def provision_tablet(self, tablet_id: str, location_id: str) -> str:
        """Issue a new token for a tablet (replacing any earlier one and lifting a revocation); shown once."""
        tablet_id = _checked(_identifier, tablet_id, "tablet id")
        location_id = _checked(_identifier, location_id, "location id")
        token = secrets.token_urlsafe(32)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO tablets (tablet_id, location_id, token_sha256) VALUES (?, ?, ?)"
                " ON CONFLICT (tablet_id) DO UPDATE SET location_id = excluded.location_id,"
                " token_sha256 = excluded.token_sha256, revoked = 0",
                (tablet_id, location_id, _token_hash(token)),
            )
        return token

    def authenticate_tablet(self, token: str) -> Tablet | None:
        """The active tablet holding `token`, or None; every stored hash is compared in constant time."""
        presented = _token_hash(token)
        match = None
        for tablet_id, location_id, stored in self._query(
            "SELECT tablet_id, location_id, token_sha256 FROM tablets WHERE revoked = 0"
        ):
            if hmac.compare_digest(stored, presented):
                match = Tablet(tablet_id, location_id)
        return match

    def revoke_tablet(self, tablet_id: str) -> None:
        """Refuse the tablet's token from now on; an unknown id is an error (a typo must not look done)."""
        with self._lock, self._db:
            revoked = self._db.execute("UPDATE tablets SET revoked = 1 WHERE tablet_id = ?", (tablet_id,))
            if not revoked.rowcount:
                raise RegistryError(f"tablet {tablet_id} is not provisioned at this gateway")

    def close(self) -> None:
        with self._lock:
            self._db.close()
