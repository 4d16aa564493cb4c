"""Live capacity (issue 11): ``feed_capacity``, one row per location, the newest ``LocationCapacity`` from the
compacted ``capacity`` topic.

Revision ID: 0003_capacity
Revises: 0002_key_expiry
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feed.db import UtcDateTime

revision = "0003_capacity"
down_revision = "0002_key_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_capacity",
        sa.Column("location_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("setting", sa.String(20), nullable=False),
        sa.Column("as_of", UtcDateTime(), nullable=False),
        sa.Column("max_beds", sa.Integer(), nullable=True),
        sa.Column("occupied_beds", sa.Integer(), nullable=True),
        sa.Column("reserved_beds", sa.Integer(), nullable=True),
        sa.Column("vacant_beds", sa.Integer(), nullable=True),
        sa.Column("over_max_beds", sa.Integer(), nullable=True),
        sa.Column("people_receiving_care", sa.Integer(), nullable=True),
        sa.Column("planned_hours_7d", sa.Float(), nullable=True),
        sa.Column("commissioned_hours_7d", sa.Float(), nullable=True),
        sa.Column("commissioned_hours_not_planned", sa.Float(), nullable=True),
        sa.Column("profile_event_id", sa.String(36), nullable=False),
        sa.Column("stored_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_capacity")
