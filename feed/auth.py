"""API keys and who may see what.

A key is ``cpf_`` + 32 random bytes (URL-safe base64): 256 bits of entropy. Only its SHA-256 is stored.
A fast hash is enough here, unlike for passwords: slow hashes (bcrypt, argon2) defend low-entropy secrets
against guessing, and nobody can enumerate 2^256 candidates, so a leaked table still reveals no usable
key; and the hash is the lookup index, so checking a request costs one indexed read.

Roles: ``regulator`` sees every location, aggregates only; ``provider:<id>`` sees only the registered
locations of that provider, with pseudonymous resident-level escalation detail (cqc_domain.md §5, role-based
access control and NDG standard 4: need-to-know, attributable to a named key, removed promptly by revoking).

A key may also expire (``expires_at``, e.g. ``feed keys create --expires-in-days 90``): from that instant it is
refused exactly like a revoked key, so access granted for an inspection or a contract ends without anyone
having to remember to revoke it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from feed import db

TOKEN_PREFIX = "cpf_"
_PROVIDER_ROLE = re.compile(r"^provider:([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$")


class KeyManagementError(ValueError):
    """A key-management request that cannot be done; the message says why."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str

    @property
    def is_regulator(self) -> bool:
        return self.role == "regulator"

    @property
    def provider_id(self) -> str | None:
        match = _PROVIDER_ROLE.match(self.role)
        return match.group(1) if match else None


def check_role(role: str) -> str:
    if role == "regulator" or _PROVIDER_ROLE.match(role):
        return role
    raise KeyManagementError(f"role must be 'regulator' or 'provider:<provider id>', not {role!r}")


def secret_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: The longest expiry `create_key` accepts for `expires_in_days` (ten years; no expiry at all is None).
MAX_EXPIRY_DAYS = 3660


def create_key(engine: Engine, *, role: str, name: str, now: datetime,
               expires_in_days: int | None = None) -> tuple[str, str]:
    """A new key; returns (key id, secret token). The token is not stored and cannot be shown again.

    With `expires_in_days` the key stops working that many days after `now`; without, it works until revoked."""
    check_role(role)
    if not name.strip():
        raise KeyManagementError("a key needs a name saying who holds it (access must be attributable)")
    expires_at = None
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise KeyManagementError(f"a key expires 1 to {MAX_EXPIRY_DAYS} days after it is created, "
                                     f"not {expires_in_days!r}")
        expires_at = now + timedelta(days=expires_in_days)
    key_id = secrets.token_hex(8)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(db.api_keys.insert().values(
            key_id=key_id, name=name.strip(), role=role, secret_sha256=secret_hash(token), created_at=now,
            revoked_at=None, expires_at=expires_at,
        ))
    return key_id, token


def list_keys(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.api_keys.c.key_id, db.api_keys.c.name, db.api_keys.c.role, db.api_keys.c.created_at,
                   db.api_keys.c.revoked_at, db.api_keys.c.expires_at).order_by(db.api_keys.c.created_at)
        ).mappings().all()
    return [dict(row) for row in rows]


def revoke_key(engine: Engine, key_id: str, *, now: datetime) -> None:
    with engine.begin() as conn:
        result = conn.execute(
            update(db.api_keys).where(db.api_keys.c.key_id == key_id, db.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    if result.rowcount == 0:
        raise KeyManagementError(f"no active key with id {key_id!r} (see `feed keys list`)")


def authenticate(engine: Engine, token: str, *, now: datetime) -> Principal | None:
    """The key presenting `token` if it is neither revoked nor expired at `now`, or None (the caller cannot
    tell which: unknown, revoked and expired keys are refused alike)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    keys = db.api_keys.c
    with engine.connect() as conn:
        row = conn.execute(
            select(keys.key_id, keys.name, keys.role)
            .where(keys.secret_sha256 == secret_hash(token), keys.revoked_at.is_(None),
                   keys.expires_at.is_(None) | (keys.expires_at > now))
        ).first()
    return Principal(row.key_id, row.name, row.role) if row else None


# --- locations and who owns them ---------------------------------------------------------------------------

def register_location(engine: Engine, location_id: str, *, provider_id: str, name: str | None,
                      now: datetime) -> None:
    """Register (or re-assign) a location to its provider; a location learned from a topic keeps its history."""
    insert = db.insert_for(engine)
    statement = insert(db.locations).values(
        location_id=location_id, provider_id=provider_id, name=name, registered=True, first_seen_at=now,
        last_event_at=None,
    )
    with engine.begin() as conn:
        conn.execute(statement.on_conflict_do_update(
            index_elements=["location_id"],
            set_={"provider_id": provider_id, "registered": True,
                  "name": name if name is not None else db.locations.c.name},
        ))


def visible_locations_clause(principal: Principal):
    """The SQL condition selecting the locations `principal` may see (the one tenancy rule)."""
    if principal.is_regulator:
        return db.locations.c.location_id.is_not(None)
    return (db.locations.c.provider_id == principal.provider_id) & db.locations.c.registered.is_(True)


def can_see(engine: Engine, principal: Principal, location_id: str) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            select(db.locations.c.location_id)
            .where(db.locations.c.location_id == location_id, visible_locations_clause(principal))
        ).first()
    return row is not None
