"""The feed's first schema: locations, current and daily indicators, escalation episodes and events, API
keys and the append-only audit log.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feed.db import BigId, UtcDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_ID = 64


def _indicator_columns() -> list[sa.Column]:
    return [
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(200), nullable=False),
        sa.Column("window_start", UtcDateTime(), nullable=False),
        sa.Column("window_end", UtcDateTime(), nullable=False),
        sa.Column("numerator", sa.Float(), nullable=False),
        sa.Column("denominator", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("minimum_denominator", sa.Float(), nullable=False),
        sa.Column("direction", sa.String(20), nullable=False),
        sa.Column("green", sa.JSON(), nullable=False),
        sa.Column("red", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("stored_at", UtcDateTime(), nullable=False),
    ]


# The audit log is append-only in the database itself, not only by convention (cqc_domain.md §5: an
# append-only, tamper-evident log of every read).
_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER feed_audit_log_no_{verb} BEFORE {verb.upper()} ON feed_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'feed_audit_log is append-only'); END"
    for verb in ("update", "delete")
]
_POSTGRES_TRIGGER = [
    "CREATE FUNCTION feed_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'feed_audit_log is append-only'; END $$",
    "CREATE TRIGGER feed_audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON feed_audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION feed_audit_log_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "feed_locations",
        sa.Column("location_id", sa.String(_ID), primary_key=True),
        sa.Column("provider_id", sa.String(_ID), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.Column("last_event_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_feed_locations_provider_id", "feed_locations", ["provider_id"])
    op.create_table(
        "feed_indicators_current",
        sa.Column("location_id", sa.String(_ID), primary_key=True),
        sa.Column("indicator_id", sa.String(_ID), primary_key=True),
        *_indicator_columns(),
    )
    op.create_table(
        "feed_indicators_history",
        sa.Column("location_id", sa.String(_ID), primary_key=True),
        sa.Column("indicator_id", sa.String(_ID), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        *_indicator_columns(),
    )
    op.create_table(
        "feed_escalation_episodes",
        sa.Column("episode_id", sa.String(36), primary_key=True),
        sa.Column("location_id", sa.String(_ID), nullable=False),
        sa.Column("resident_id", sa.String(_ID), nullable=False),
        sa.Column("risk", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("raised_at", UtcDateTime(), nullable=False),
        sa.Column("deadline_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.Column("overdue", sa.Boolean(), nullable=False),
        sa.Column("last_occurred_at", UtcDateTime(), nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=True),
    )
    op.create_index("ix_feed_escalation_episodes_location_id", "feed_escalation_episodes", ["location_id"])
    op.create_table(
        "feed_escalation_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("episode_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("location_id", sa.String(_ID), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("stored_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_feed_escalation_events_episode_id", "feed_escalation_events", ["episode_id"])
    op.create_table(
        "feed_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(80), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "feed_audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("role", sa.String(80), nullable=True),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
    )
    op.create_index("ix_feed_audit_log_at", "feed_audit_log", ["at"])
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_TRIGGERS if dialect == "sqlite" else _POSTGRES_TRIGGER:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS feed_audit_log_append_only ON feed_audit_log")
        op.execute("DROP FUNCTION IF EXISTS feed_audit_log_append_only()")
    for table in ("feed_audit_log", "feed_api_keys", "feed_escalation_events", "feed_escalation_episodes",
                  "feed_indicators_history", "feed_indicators_current", "feed_locations"):
        op.drop_table(table)
