"""The feed's database: SQLAlchemy Core tables, one code path for SQLite and PostgreSQL, alembic migrations.

The tables here describe the schema the migrations create (``feed/migrations/versions``); a test checks the
two agree. Every timestamp is stored in UTC (`UtcDateTime`), so SQLite, which keeps naive text, compares and
returns the same instants PostgreSQL does.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import DateTime, TypeDecorator

from carepulse.settings import Settings


class UtcDateTime(TypeDecorator):
    """An aware datetime stored in UTC and read back aware (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the feed database; pass an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


#: Autoincrementing 64-bit id; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")
ID_LENGTH = 64  # events.Identifier: at most 64 characters

metadata = MetaData()

#: Care locations and the provider each belongs to. Registered by the CLI; a location first seen on a topic
#: is added with no provider ("provider unknown"): only the regulator sees it until it is registered.
locations = Table(
    "feed_locations", metadata,
    Column("location_id", String(ID_LENGTH), primary_key=True),
    Column("provider_id", String(ID_LENGTH), nullable=True, index=True),
    Column("name", String(200), nullable=True),
    Column("registered", Boolean, nullable=False, default=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_event_at", UtcDateTime, nullable=True),
)


def _indicator_columns() -> tuple[Column, ...]:
    return (
        Column("event_id", String(36), nullable=False),
        Column("title", String(200), nullable=False),
        Column("unit", String(200), nullable=False),
        Column("window_start", UtcDateTime, nullable=False),
        Column("window_end", UtcDateTime, nullable=False),
        Column("numerator", Float, nullable=False),
        Column("denominator", Float, nullable=False),
        Column("value", Float, nullable=True),
        Column("status", String(20), nullable=False),
        Column("minimum_denominator", Float, nullable=False),
        Column("direction", String(20), nullable=False),
        Column("green", JSON, nullable=False),
        Column("red", JSON, nullable=False),
        Column("details", JSON, nullable=False),
        Column("rules_version", String(64), nullable=False),
        Column("stored_at", UtcDateTime, nullable=False),
    )

#: The current value of each location's indicators (the compacted ``indicators`` topic).
indicators_current = Table(
    "feed_indicators_current", metadata,
    Column("location_id", String(ID_LENGTH), primary_key=True),
    Column("indicator_id", String(ID_LENGTH), primary_key=True),
    *_indicator_columns(),
)

#: Daily snapshots (``indicators.history``): the value at each local midnight.
indicators_history = Table(
    "feed_indicators_history", metadata,
    Column("location_id", String(ID_LENGTH), primary_key=True),
    Column("indicator_id", String(ID_LENGTH), primary_key=True),
    Column("day", Date, primary_key=True),
    *_indicator_columns(),
)

#: One row per escalation episode, its latest known state (``escalations``).
escalation_episodes = Table(
    "feed_escalation_episodes", metadata,
    Column("episode_id", String(36), primary_key=True),
    Column("location_id", String(ID_LENGTH), nullable=False, index=True),
    Column("resident_id", String(ID_LENGTH), nullable=False),
    Column("risk", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("total", Integer, nullable=True),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("deadline_at", UtcDateTime, nullable=True),
    Column("acknowledged_at", UtcDateTime, nullable=True),
    Column("overdue", Boolean, nullable=False, default=False),
    Column("last_occurred_at", UtcDateTime, nullable=False),
    Column("rules_version", String(64), nullable=True),
)

#: Every escalation event once, by event id: re-delivery (at-least-once) is recognised and ignored.
escalation_events = Table(
    "feed_escalation_events", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("episode_id", String(36), nullable=False, index=True),
    Column("event_type", String(32), nullable=False),
    Column("location_id", String(ID_LENGTH), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("stored_at", UtcDateTime, nullable=False),
)

#: Each location's live capacity, the newest `LocationCapacity` of the compacted ``capacity`` topic (migration
#: 0003). Care homes fill the bed columns (the Capacity Tracker's maximum, occupied and reserved, cqc_domain.md
#: §1.5 [C24], plus vacant and over maximum), homecare agencies the people and hours columns.
capacity = Table(
    "feed_capacity", metadata,
    Column("location_id", String(ID_LENGTH), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("setting", String(20), nullable=False),
    Column("as_of", UtcDateTime, nullable=False),
    Column("max_beds", Integer, nullable=True),
    Column("occupied_beds", Integer, nullable=True),
    Column("reserved_beds", Integer, nullable=True),
    Column("vacant_beds", Integer, nullable=True),
    Column("over_max_beds", Integer, nullable=True),
    Column("people_receiving_care", Integer, nullable=True),
    Column("planned_hours_7d", Float, nullable=True),
    Column("commissioned_hours_7d", Float, nullable=True),
    Column("commissioned_hours_not_planned", Float, nullable=True),
    Column("profile_event_id", String(36), nullable=False),
    Column("stored_at", UtcDateTime, nullable=False),
)

#: API keys: only the SHA-256 of the secret is stored (see feed.auth for why a fast hash is enough).
api_keys = Table(
    "feed_api_keys", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(80), nullable=False),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),  # None: valid until revoked (migration 0002)
)

#: Append-only: the migration adds triggers refusing UPDATE and DELETE on both databases (cqc_domain.md §5).
audit_log = Table(
    "feed_audit_log", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("role", String(80), nullable=True),
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("query", Text, nullable=False),
    Column("status_code", Integer, nullable=False),
    Index("ix_feed_audit_log_at", "at"),
)


def database_url(settings: Settings) -> str:
    if settings.feed_database_url:
        return settings.feed_database_url
    return f"sqlite:///{Path(settings.data_dir) / 'feed.sqlite3'}"


def make_engine(url: str) -> Engine:
    """An engine for `url`. SQLite gets WAL and a busy timeout, so the consumer's writes and the API's
    reads (different threads) do not block each other."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; run at start-up and by the CLI)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def insert_for(engine_or_connection: Any):
    """The dialect's INSERT with ON CONFLICT (SQLite and PostgreSQL share the API)."""
    name = engine_or_connection.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"the feed supports SQLite and PostgreSQL, not {name}")
