"""API keys may expire: ``feed_api_keys.expires_at`` (NULL: valid until revoked, as every existing key).

Revision ID: 0002_key_expiry
Revises: 0001_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feed.db import UtcDateTime

revision = "0002_key_expiry"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE ... ADD COLUMN on both databases, existing keys unchanged.
    op.add_column("feed_api_keys", sa.Column("expires_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    # batch mode: an older SQLite cannot drop a column and copies the table instead.
    with op.batch_alter_table("feed_api_keys") as batch:
        batch.drop_column("expires_at")
