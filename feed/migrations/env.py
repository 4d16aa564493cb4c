"""Alembic environment of the feed database: uses the connection `feed.db.migrate` hands over, else the
database named by the settings (CAREPULSE_FEED_DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from carepulse.settings import Settings
from feed import db

target_metadata = db.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = db.make_engine(db.database_url(Settings()))
    with engine.begin() as new_connection:
        _run(new_connection)
    engine.dispose()
