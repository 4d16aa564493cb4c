"""Topic records into the database (SQLite and PostgreSQL): upserts, re-delivery, ordering, live events."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from carepulse import events, topics
from feed import db
from feed.ingest import Record, store_escalation, store_indicator, store_records
from tests.feed.conftest import NOW, escalation, indicator_update, overdue, unique


def test_migrations_create_exactly_the_declared_schema(engine):
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
    db.migrate(engine)  # idempotent


def test_a_current_indicator_is_upserted_and_redelivery_changes_nothing(engine):
    location = unique("loc")
    first = indicator_update(location, status="amber", numerator=17, denominator=20)
    with engine.begin() as conn:
        live = store_indicator(conn, first, key=topics.indicator_key(location, first.indicator_id), now=NOW)
    assert [e.kind for e in live] == ["indicator"]
    with engine.begin() as conn:
        assert store_indicator(conn, first, key=None, now=NOW) == []  # re-delivered

    older = indicator_update(location, status="red", window_end=NOW - timedelta(hours=1))
    newer = indicator_update(location, status="red", numerator=10, window_end=NOW + timedelta(hours=1))
    with engine.begin() as conn:
        assert store_indicator(conn, older, key=None, now=NOW) == []  # out of order: ignored
        live = store_indicator(conn, newer, key=None, now=NOW)
    assert [e.kind for e in live] == ["indicator", "red_alert"]
    assert live[1].payload["alert"] == "indicator_red"
    with engine.begin() as conn:  # still red: a change, but no new alert
        again = store_indicator(conn, indicator_update(location, status="red", window_end=NOW + timedelta(hours=2)),
                                key=None, now=NOW)
    assert [e.kind for e in again] == ["indicator"]
    with engine.connect() as conn:
        row = conn.execute(select(db.indicators_current).where(db.indicators_current.c.location_id == location)).one()
        learned = conn.execute(select(db.locations).where(db.locations.c.location_id == location)).one()
    assert (row.status, row.window_end, row.numerator) == ("red", NOW + timedelta(hours=2), 19)
    assert (learned.provider_id, learned.registered, learned.last_event_at) == (None, False, NOW + timedelta(hours=2))


def test_daily_snapshots_are_keyed_by_their_day(engine):
    location = unique("loc")
    snapshot = indicator_update(location, kind="daily_snapshot", numerator=18)
    key = topics.indicator_history_key(location, snapshot.indicator_id, "2026-11-22")
    corrected = indicator_update(location, kind="daily_snapshot", numerator=19)
    with engine.begin() as conn:
        assert store_indicator(conn, snapshot, key=key, now=NOW) == []
        store_indicator(conn, corrected, key=key, now=NOW)
        store_indicator(conn, snapshot, key=None, now=NOW)  # no key: the local date of the window end
    with engine.connect() as conn:
        rows = conn.execute(select(db.indicators_history.c.day, db.indicators_history.c.numerator)
                            .where(db.indicators_history.c.location_id == location)
                            .order_by(db.indicators_history.c.day)).all()
    assert [tuple(r) for r in rows] == [(date(2026, 11, 22), 19.0), (date(2026, 11, 23), 18.0)]


def test_escalation_events_apply_once_to_their_episode(engine):
    location, resident = unique("loc"), unique("res")
    raised = escalation(location, resident, risk="medium")
    upgraded = escalation(location, resident, risk="high", status="upgraded", episode_id=raised.episode_id,
                          occurred_at=NOW + timedelta(minutes=5))
    late = overdue(upgraded, NOW + timedelta(minutes=40))
    acknowledged = escalation(location, resident, risk="high", status="acknowledged", episode_id=raised.episode_id,
                              occurred_at=NOW + timedelta(minutes=45))
    with engine.begin() as conn:
        assert store_escalation(conn, raised, now=NOW) == []  # medium: no red alert
        alerts = store_escalation(conn, upgraded, now=NOW)
        assert store_escalation(conn, upgraded, now=NOW) == []  # re-delivered
        alerts += store_escalation(conn, late, now=NOW)
        store_escalation(conn, acknowledged, now=NOW)
        store_escalation(conn, raised, now=NOW)  # re-delivered after newer events: ignored
    assert [(a.payload["alert"], a.payload["status"]) for a in alerts] == [
        ("escalation_high", "upgraded"), ("escalation_overdue", "overdue")]
    with engine.connect() as conn:
        episode = conn.execute(select(db.escalation_episodes)).one()
    assert (episode.status, episode.risk, episode.overdue, episode.resident_id) == ("acknowledged", "high", True, resident)
    assert episode.raised_at == NOW


def test_an_unreadable_record_is_reported_and_skipped(engine):
    location = unique("loc")
    good = indicator_update(location)
    invalid: list[str] = []
    with engine.begin() as conn:
        live = store_records(conn, [
            Record("indicators", "x", b"not json"),
            Record("escalations", "x", b'{"event_type": "escalation"}'),
            Record("indicators", None, events.to_json(good)),
        ], NOW, lambda record, reason: invalid.append(record.topic))
    assert invalid == ["indicators", "escalations"]
    assert [e.kind for e in live] == ["indicator"]


@pytest.mark.parametrize("statement", ["UPDATE feed_audit_log SET status_code = 200", "DELETE FROM feed_audit_log"])
def test_the_audit_log_is_append_only_in_the_database(engine, statement):
    with engine.begin() as conn:
        conn.execute(db.audit_log.insert().values(at=NOW, key_id=None, role=None, method="GET", path="/v1/x",
                                                  query="", status_code=401))
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM feed_audit_log")).scalar_one() == 1
