"""Topic records into the database (SQLite and PostgreSQL): upserts, re-delivery, ordering, live events; a record
the database refuses, and a database that is away."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from carepulse import events, topics
from carepulse.metrics import FeedMetrics
from carepulse.settings import Settings
from feed import db
from feed.ingest import (
    ConsumerStatus,
    FeedConsumer,
    Record,
    store_capacity,
    store_escalation,
    store_indicator,
    store_records,
)
from feed.live import LiveHub
from tests.feed.conftest import NOW, escalation, indicator_update, location_capacity, overdue, unique


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


def test_capacity_keeps_the_newest_figures_of_each_location(engine):
    location = unique("loc")
    first = location_capacity(location, max_beds=20, occupied_beds=18, reserved_beds=1, vacant_beds=1, over_max_beds=0)
    older = location_capacity(location, occurred_at=NOW - timedelta(minutes=1), max_beds=20, occupied_beds=10,
                              reserved_beds=0, vacant_beds=10, over_max_beds=0)
    newer = location_capacity(location, occurred_at=NOW + timedelta(minutes=1), max_beds=20, occupied_beds=19,
                              reserved_beds=1, vacant_beds=0, over_max_beds=0)
    with engine.begin() as conn:
        [changed] = store_capacity(conn, first, now=NOW)
        assert (changed.kind, changed.location_id, changed.payload["vacant_beds"]) == ("capacity", location, 1)
        assert store_capacity(conn, first, now=NOW) == []  # re-delivered
        assert store_capacity(conn, older, now=NOW) == []  # out of order: ignored
        [changed] = store_capacity(conn, newer, now=NOW)
        assert (changed.payload["as_of"], changed.payload["occupied_beds"]) == (NOW + timedelta(minutes=1), 19)
    with engine.connect() as conn:
        row = conn.execute(select(db.capacity).where(db.capacity.c.location_id == location)).one()
        learned = conn.execute(select(db.locations).where(db.locations.c.location_id == location)).one()
    assert (row.event_id, row.as_of, row.occupied_beds, row.vacant_beds, row.people_receiving_care) == (
        str(newer.event_id), NOW + timedelta(minutes=1), 19, 0, None)
    assert row.profile_event_id == str(newer.profile_event_id)
    assert (learned.registered, learned.last_event_at) == (False, NOW + timedelta(minutes=1))


def test_a_capacity_record_is_read_from_its_topic(engine):
    location = unique("loc")
    homecare = location_capacity(location, "homecare", people_receiving_care=12, planned_hours_7d=80.25,
                                 commissioned_hours_7d=None, commissioned_hours_not_planned=None)
    invalid: list[str] = []
    with engine.begin() as conn:
        store_records(conn, [Record(topics.CAPACITY.name, location, events.to_json(homecare)),
                             Record(topics.CAPACITY.name, location, b'{"event_type": "location_capacity"}')],
                      NOW, lambda record, reason: invalid.append(reason))
    with engine.connect() as conn:
        row = conn.execute(select(db.capacity).where(db.capacity.c.location_id == location)).one()
    assert (row.setting, row.people_receiving_care, row.planned_hours_7d, row.max_beds) == ("homecare", 12, 80.25, None)
    assert len(invalid) == 1 and "setting" in invalid[0]


def _consumer(engine, metrics: FeedMetrics | None = None) -> FeedConsumer:
    return FeedConsumer(Settings(), engine, LiveHub(), ConsumerStatus(state="consuming"), now=lambda: NOW,
                        metrics_=metrics or FeedMetrics())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_record_the_database_refuses_is_reported_and_the_rest_of_its_batch_is_stored(engine):
    """PostgreSQL enforces column lengths (SQLite does not): a title longer than its column fails the batch's
    transaction. The consumer stores the batch record by record and reports only the refused one, so it
    cannot block its partition forever."""
    location = unique("loc")
    good = [indicator_update(location, indicator_id) for indicator_id in ("falls_rate", "call_bell_response")]
    refused = indicator_update(location, "late_visits", title="x" * 300)
    metrics = FeedMetrics()
    consumer = _consumer(engine, metrics)
    consumer._store([Record(topics.INDICATORS.name, None, events.to_json(event)) for event in (good[0], refused, good[1])])
    with engine.connect() as conn:
        stored = conn.execute(select(db.indicators_current.c.indicator_id)
                              .where(db.indicators_current.c.location_id == location)).scalars().all()
    assert sorted(stored) == ["call_bell_response", "falls_rate"]
    assert consumer.status.invalid_messages == 1
    assert metrics.value("carepulse_feed_invalid_messages_total", topic="indicators", reason="invalid_event") == 1
    assert metrics.value("carepulse_feed_events_in_total", topic="indicators") == 2


def test_a_batch_is_kept_and_retried_while_the_database_is_unreachable(tmp_path):
    """An unreachable database (here: a SQLite file whose directory does not exist yet) is retried with the
    same batch, never skipped; the consumer reports `reconnecting` meanwhile and `consuming` once stored."""
    directory = tmp_path / "not-yet"
    engine = create_engine(f"sqlite:///{directory / 'feed.sqlite3'}")
    consumer = _consumer(engine)
    location = unique("loc")
    update = indicator_update(location)

    async def scenario() -> list:
        stored = asyncio.create_task(consumer._store_until_stored([Record(topics.INDICATORS.name, None,
                                                                          events.to_json(update))]))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if consumer.status.state == "reconnecting":
                break
        assert consumer.status.state == "reconnecting" and "database unavailable" in consumer.status.detail
        assert not stored.done()
        directory.mkdir()
        await asyncio.to_thread(db.migrate, engine)  # the database is back
        return await asyncio.wait_for(stored, timeout=10)

    live = asyncio.run(scenario())
    assert [event.kind for event in live] == ["indicator"]
    assert (consumer.status.state, consumer.status.detail) == ("consuming", None)
    with engine.connect() as conn:
        assert conn.execute(select(db.indicators_current.c.event_id)).scalars().all() == [str(update.event_id)]
    engine.dispose()
