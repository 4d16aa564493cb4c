"""Topics into the database: pure upsert functions (one transaction per batch) and the aiokafka loop.

At-least-once: offsets are committed only after the batch's rows are committed, so a crash re-delivers and
the upserts make re-delivery harmless — a current indicator is replaced only by one at least as recent
(`window_end`), a snapshot by its key, a location's capacity only by one at least as recent (`occurred_at`),
and an escalation event is applied once by its ``event_id``. While the database is unreachable the consumer
keeps its batch and its partitions and retries with backoff, committing nothing (`FeedConsumer`); a record
the database itself refuses (e.g. a value longer than its column on PostgreSQL) is reported like an
unreadable one instead of blocking its partition.

The store functions return `LiveEvent`s, what changed, for the live stream: an indicator change, a
location's live capacity changing, and red alerts (an indicator turning red; a high-risk escalation raised
or upgraded; a missed escalation deadline).

Metrics (`carepulse.metrics.FeedMetrics`, the process-wide `FEED` unless one is passed), recorded only after
a batch's transaction committed: each stored record (``carepulse_feed_events_in_total`` and its event-time
latency), each unreadable one (``carepulse_feed_invalid_messages_total``), the consumer's lag after every
fetch, and the care-quality *state* gauges. Those are read back from the database (`StateGauges`), never
from the messages alone, so an older update that the store refused cannot overwrite a newer value, and
what Prometheus sees is what the API serves: the indicators a batch changed, and every open escalation
after a batch with escalations; all of it at start and on a timer (`StateGauges.refresh`), so an episode
turns from pending to overdue as its deadline passes with no message at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from carepulse import events, metrics, topics
from carepulse.metrics import FEED, FeedMetrics
from carepulse.settings import Settings
from feed import db
from feed.live import LiveEvent, LiveHub
from indicators.quality import CARE_TZ

log = logging.getLogger(__name__)

TOPICS = (topics.INDICATORS.name, topics.INDICATORS_HISTORY.name, topics.ESCALATIONS.name, topics.CAPACITY.name)

_escalation_adapter: TypeAdapter[events.Escalation | events.EscalationOverdue] = TypeAdapter(
    events.Escalation | events.EscalationOverdue
)


@dataclass(frozen=True)
class Record:
    """One consumed message, broker-independent (what the pure functions need)."""

    topic: str
    key: str | None
    value: bytes


def touch_location(conn: Connection, location_id: str, at: datetime, now: datetime) -> None:
    """A location seen on a topic: learned with provider unknown if not registered; `last_event_at` advances."""
    insert = db.insert_for(conn)
    statement = insert(db.locations).values(
        location_id=location_id, provider_id=None, name=None, registered=False, first_seen_at=now, last_event_at=at
    )
    conn.execute(statement.on_conflict_do_nothing(index_elements=["location_id"]))
    conn.execute(
        update(db.locations)
        .where(db.locations.c.location_id == location_id)
        .where((db.locations.c.last_event_at.is_(None)) | (db.locations.c.last_event_at < at))
        .values(last_event_at=at)
    )


def _indicator_values(update_: events.IndicatorUpdate, now: datetime) -> dict[str, Any]:
    return {
        "location_id": update_.location_id,
        "indicator_id": update_.indicator_id,
        "event_id": str(update_.event_id),
        "title": update_.title,
        "unit": update_.unit,
        "window_start": update_.window_start,
        "window_end": update_.window_end,
        "numerator": update_.numerator,
        "denominator": update_.denominator,
        "value": update_.value,
        "status": update_.status,
        "minimum_denominator": update_.minimum_denominator,
        "direction": update_.direction,
        "green": update_.green.model_dump(),
        "red": update_.red.model_dump(),
        "details": update_.details,
        "rules_version": update_.rules_version,
        "stored_at": now,
    }


def snapshot_day(key: str | None, update_: events.IndicatorUpdate) -> date:
    """The local date a daily snapshot belongs to: the one in its topic key
    (``<location>|<indicator>|<YYYY-MM-DD>``, `topics.indicator_history_key`), else the local date of its
    window end."""
    if key:
        parts = key.split("|")
        if len(parts) == 3:
            try:
                return date.fromisoformat(parts[2])
            except ValueError:
                pass
    return update_.window_end.astimezone(CARE_TZ).date()


def store_indicator(conn: Connection, update_: events.IndicatorUpdate, *, key: str | None,
                    now: datetime) -> list[LiveEvent]:
    """Upsert one IndicatorUpdate; a "current" one that changes the stored value yields live events."""
    touch_location(conn, update_.location_id, update_.occurred_at, now)
    values = _indicator_values(update_, now)
    insert = db.insert_for(conn)
    if update_.kind == "daily_snapshot":
        table = db.indicators_history
        statement = insert(table).values(**values, day=snapshot_day(key, update_))
        conn.execute(statement.on_conflict_do_update(
            index_elements=["location_id", "indicator_id", "day"],
            set_={name: statement.excluded[name] for name in values if name not in ("location_id", "indicator_id")},
            where=table.c.window_end <= statement.excluded.window_end,
        ))
        return []

    table = db.indicators_current
    previous = conn.execute(
        select(table.c.event_id, table.c.status, table.c.window_end)
        .where(table.c.location_id == update_.location_id, table.c.indicator_id == update_.indicator_id)
    ).first()
    if previous is not None and (previous.event_id == str(update_.event_id) or previous.window_end > update_.window_end):
        return []  # a re-delivery, or older than what is stored
    statement = insert(table).values(**values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=["location_id", "indicator_id"],
        set_={name: statement.excluded[name] for name in values if name not in ("location_id", "indicator_id")},
        where=table.c.window_end <= statement.excluded.window_end,
    ))
    live = [LiveEvent("indicator", update_.location_id, values)]
    if update_.status == "red" and (previous is None or previous.status != "red"):
        live.append(LiveEvent("red_alert", update_.location_id, {"alert": "indicator_red", **values}))
    return live


def _episode_alert(kind: str, event: events.Escalation | events.EscalationOverdue) -> LiveEvent:
    payload = {
        "alert": kind,
        "event_id": str(event.event_id),
        "episode_id": str(event.episode_id),
        "location_id": event.location_id,
        "resident_id": event.resident_id,
        "risk": event.risk,
        "occurred_at": event.occurred_at,
    }
    if isinstance(event, events.Escalation):
        payload.update(status=event.status, total=event.total, deadline_at=event.deadline_at)
    else:
        payload.update(status="overdue", deadline_at=event.deadline_at)
    return LiveEvent("red_alert", event.location_id, payload)


def store_escalation(conn: Connection, event: events.Escalation | events.EscalationOverdue, *,
                     now: datetime) -> list[LiveEvent]:
    """Apply one escalation event to its episode, once (deduplicated by event id)."""
    insert = db.insert_for(conn)
    inserted = conn.execute(
        insert(db.escalation_events)
        .values(event_id=str(event.event_id), episode_id=str(event.episode_id), event_type=event.event_type,
                location_id=event.location_id, occurred_at=event.occurred_at, stored_at=now)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(db.escalation_events.c.event_id)
    ).first()
    if inserted is None:
        return []  # already applied
    touch_location(conn, event.location_id, event.occurred_at, now)
    episodes = db.escalation_episodes
    episode_id = str(event.episode_id)
    current = conn.execute(select(episodes).where(episodes.c.episode_id == episode_id)).first()
    if isinstance(event, events.EscalationOverdue):
        if current is None:
            conn.execute(episodes.insert().values(
                episode_id=episode_id, location_id=event.location_id, resident_id=event.resident_id,
                risk=event.risk, status="raised", total=None, raised_at=event.raised_at,
                deadline_at=event.deadline_at, acknowledged_at=None, overdue=True,
                last_occurred_at=event.occurred_at, rules_version=None,
            ))
        else:
            conn.execute(update(episodes).where(episodes.c.episode_id == episode_id).values(overdue=True))
        return [_episode_alert("escalation_overdue", event)]

    state = {
        "risk": event.risk, "status": event.status, "total": event.total,
        "deadline_at": event.deadline_at, "acknowledged_at": event.acknowledged_at,
        "last_occurred_at": event.occurred_at, "rules_version": event.rules_version,
    }
    if current is None:
        conn.execute(episodes.insert().values(
            episode_id=episode_id, location_id=event.location_id, resident_id=event.resident_id,
            raised_at=event.raised_at or event.occurred_at, overdue=False, **state,
        ))
    elif event.occurred_at >= current.last_occurred_at:
        if state["acknowledged_at"] is None:
            state["acknowledged_at"] = current.acknowledged_at
        conn.execute(update(episodes).where(episodes.c.episode_id == episode_id).values(**state))
    # else: an older event arriving late; its id is recorded, the episode keeps its newer state
    if event.risk == "high" and event.status in ("raised", "upgraded"):
        return [_episode_alert("escalation_high", event)]
    return []


_CAPACITY_COLUMNS = ("setting", "max_beds", "occupied_beds", "reserved_beds", "vacant_beds", "over_max_beds",
                     "people_receiving_care", "planned_hours_7d", "commissioned_hours_7d",
                     "commissioned_hours_not_planned")


def store_capacity(conn: Connection, event: events.LocationCapacity, *, now: datetime) -> list[LiveEvent]:
    """Upsert a location's live capacity; returns the ``capacity`` live event when the stored row changed (with
    the location's name and provider, as the API's capacity view shows it). A re-delivery, or one older
    (`occurred_at`) than the stored one, changes nothing: the compacted topic keeps only the newest anyway."""
    touch_location(conn, event.location_id, event.occurred_at, now)
    table = db.capacity
    previous = conn.execute(
        select(table.c.event_id, table.c.as_of).where(table.c.location_id == event.location_id)
    ).first()
    if previous is not None and (previous.event_id == str(event.event_id) or previous.as_of > event.occurred_at):
        return []
    figures = {name: getattr(event, name) for name in _CAPACITY_COLUMNS}
    values = {
        "location_id": event.location_id, "event_id": str(event.event_id), "as_of": event.occurred_at, **figures,
        "profile_event_id": str(event.profile_event_id), "stored_at": now,
    }
    statement = db.insert_for(conn)(table).values(**values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=["location_id"],
        set_={name: statement.excluded[name] for name in values if name != "location_id"},
        where=table.c.as_of <= statement.excluded.as_of,
    ))
    location = conn.execute(select(db.locations.c.name, db.locations.c.provider_id)
                            .where(db.locations.c.location_id == event.location_id)).one()
    return [LiveEvent("capacity", event.location_id, {
        "location_id": event.location_id, "name": location.name, "provider_id": location.provider_id,
        "as_of": event.occurred_at, **figures})]


def store_records(conn: Connection, records: Iterable[Record], now: datetime,
                  on_invalid: Callable[[Record, str], None],
                  on_stored: Callable[[Record, events.Event], None] | None = None) -> list[LiveEvent]:
    """Store a batch of consumed records in one transaction (the caller's); unreadable ones are reported
    to `on_invalid` with the reason and skipped, so one bad message never blocks a partition. Each readable
    record is reported to `on_stored` with its event once applied (inside the transaction: a caller that
    counts must wait for the commit)."""
    live: list[LiveEvent] = []
    for record in records:
        event: events.Event
        try:
            if record.topic == topics.ESCALATIONS.name:
                escalation = _escalation_adapter.validate_json(record.value)
                live.extend(store_escalation(conn, escalation, now=now))
                event = escalation
            elif record.topic == topics.CAPACITY.name:
                capacity = events.parse(events.LocationCapacity, record.value)
                live.extend(store_capacity(conn, capacity, now=now))
                event = capacity
            else:
                update_ = events.parse(events.IndicatorUpdate, record.value)
                live.extend(store_indicator(conn, update_, key=record.key, now=now))
                event = update_
        except ValidationError as exc:
            on_invalid(record, events.describe_validation_error(exc))
            continue
        if on_stored is not None:
            on_stored(record, event)
    return live


# --- the state gauges ----------------------------------------------------------------------------------

#: How often `StateGauges.refresh` re-reads the database: an open episode turns overdue within this long of
#: its deadline, with no message.
STATE_REFRESH_S = 15.0


@dataclass(frozen=True)
class CurrentIndicator:
    """What `FeedMetrics.set_indicator` reads of an update, here from a ``feed_indicators_current`` row."""

    location_id: str
    indicator_id: str
    value: float | None
    status: str
    window_end: datetime
    kind: Literal["current"] = "current"


class StateGauges:
    """The indicator and open-escalation gauges, read from the feed database (see the module docstring)."""

    def __init__(self, engine: Engine, metrics_: FeedMetrics, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.metrics = metrics_
        self.now = now

    def refresh(self) -> None:
        """Everything: every current indicator, every location's capacity, and every open episode's state as
        of now."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*self._indicator_columns())).all()
            self._set_indicators(rows)
            self._set_capacity(conn.execute(select(db.capacity)).all())
            self._set_open_escalations(conn)

    def indicators_changed(self, pairs: Collection[tuple[str, str]]) -> None:
        """The current values of these (location_id, indicator_id) pairs, as stored."""
        if not pairs:
            return
        table = db.indicators_current
        locations_ = sorted({location_id for location_id, _ in pairs})
        with self.engine.connect() as conn:
            rows = conn.execute(select(*self._indicator_columns()).where(table.c.location_id.in_(locations_))).all()
        self._set_indicators([row for row in rows if (row.location_id, row.indicator_id) in pairs])

    def escalations_changed(self) -> None:
        with self.engine.connect() as conn:
            self._set_open_escalations(conn)

    def capacity_changed(self, location_ids: Collection[str]) -> None:
        """The stored capacity of these locations."""
        if not location_ids:
            return
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.capacity).where(db.capacity.c.location_id.in_(sorted(location_ids)))).all()
        self._set_capacity(rows)

    def _set_capacity(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.metrics.set_capacity(row)

    @staticmethod
    def _indicator_columns() -> tuple:
        table = db.indicators_current
        return (table.c.location_id, table.c.indicator_id, table.c.value, table.c.status, table.c.window_end)

    def _set_indicators(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.metrics.set_indicator(CurrentIndicator(  # type: ignore[arg-type] - reads these fields only
                location_id=row.location_id, indicator_id=row.indicator_id, value=row.value, status=row.status,
                window_end=row.window_end,
            ))

    def _set_open_escalations(self, conn: Connection) -> None:
        episodes = db.escalation_episodes
        rows = conn.execute(
            select(episodes.c.location_id, episodes.c.risk, episodes.c.status, episodes.c.acknowledged_at,
                   episodes.c.deadline_at, episodes.c.raised_at)
            .where(episodes.c.status != "resolved")
        ).all()
        location_ids = conn.execute(select(db.locations.c.location_id)).scalars().all()
        open_episodes = [
            metrics.Episode(location_id=row.location_id, risk=row.risk,
                            acknowledged=row.status == "acknowledged" or row.acknowledged_at is not None,
                            deadline_at=row.deadline_at, raised_at=row.raised_at)
            for row in rows
        ]
        self.metrics.set_open_escalations(open_episodes, self.now(), location_ids)


# --- the consumer loop ---------------------------------------------------------------------------------

#: The longest wait between two tries of a batch while the database is unreachable.
MAX_DATABASE_BACKOFF_S = 5.0


def database_unreachable(exc: DBAPIError) -> bool:
    """True when the database could not be reached or dropped the connection (worth retrying the same
    batch), False when it refused the statement itself (retrying would fail forever)."""
    return bool(exc.connection_invalidated) or isinstance(exc, (OperationalError, InterfaceError))


ConsumerStateName = Literal["disabled", "starting", "consuming", "reconnecting", "stopped"]


@dataclass
class ConsumerStatus:
    """What the health endpoint reports about the consumer."""

    state: ConsumerStateName = "starting"
    detail: str | None = None
    last_message_at: datetime | None = None
    messages_stored: int = 0
    invalid_messages: int = 0
    assigned_partitions: list[str] = field(default_factory=list)


class FeedConsumer:
    """Consumes the feed topics into the database in its own consumer group, from the earliest offset;
    retries with backoff while the broker is unreachable. The HTTP API never waits on it."""

    def __init__(self, settings: Settings, engine: Engine, hub: LiveHub, status: ConsumerStatus,
                 now: Callable[[], datetime] = events.utc_now, *, metrics_: FeedMetrics = FEED,
                 gauges: StateGauges | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.hub = hub
        self.status = status
        self.now = now
        self.metrics = metrics_
        self.gauges = gauges or StateGauges(engine, metrics_, now)

    def _on_invalid(self, record: Record, reason: str) -> None:
        self.status.invalid_messages += 1
        # The reason names fields, never values, so no resident id reaches the log.
        log.warning("skipped an unreadable message on %s: %s", record.topic, reason[:300])

    def _store(self, records: list[Record]) -> list[LiveEvent]:
        """Store a batch in one transaction. If the database refuses it for something other than being
        unreachable, store its records one per transaction: those it still refuses are reported as unreadable
        (with the error's type, never its text, which may quote values) and skipped, so one record never
        blocks its partition. An unreachable database raises, for `_store_until_stored` to retry."""
        try:
            return self._store_batch(records)
        except DBAPIError as exc:
            if database_unreachable(exc):
                raise
        live: list[LiveEvent] = []
        for record in records:
            try:
                live.extend(self._store_batch([record]))
            except DBAPIError as exc:
                if database_unreachable(exc):
                    raise
                self._refused(record, exc)
        return live

    def _refused(self, record: Record, exc: DBAPIError) -> None:
        reason = f"invalid event: the feed database refused it ({type(exc.orig or exc).__name__})"
        self._on_invalid(record, reason)
        try:
            self.metrics.invalid_message(record.topic, reason)
        except Exception:  # a metric never fails the consumer
            log.debug("could not count a refused record", exc_info=True)

    async def _store_until_stored(self, records: list[Record]) -> list[LiveEvent]:
        """`_store`, retried with backoff for as long as the database is unreachable (a restart, a failover).
        The consumer keeps the batch and its partitions meanwhile and commits nothing, so no record is lost
        or skipped; /health reports ``reconnecting`` until the batch is stored."""
        backoff_s = 0.5
        while True:
            try:
                live = await asyncio.to_thread(self._store, records)
            except DBAPIError as exc:
                if not database_unreachable(exc):
                    raise
                self.status.state = "reconnecting"
                self.status.detail = f"database unavailable ({type(exc.orig or exc).__name__}); batch kept, retrying"
                log.warning("feed database unavailable (%s); retrying the batch of %d in %.1f s",
                            type(exc.orig or exc).__name__, len(records), backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_DATABASE_BACKOFF_S)
                continue
            if self.status.state == "reconnecting":
                self.status.state, self.status.detail = "consuming", None
            return live

    def _store_batch(self, records: list[Record]) -> list[LiveEvent]:
        stored: list[tuple[Record, events.Event]] = []
        invalid: list[tuple[Record, str]] = []

        def on_invalid(record: Record, reason: str) -> None:
            invalid.append((record, reason))

        now = self.now()
        with self.engine.begin() as conn:
            live = store_records(conn, records, now, on_invalid, lambda record, event: stored.append((record, event)))
        for record, reason in invalid:  # reported once the batch is committed (a failed batch is tried again)
            self._on_invalid(record, reason)
        try:  # committed: now the metrics (which must never fail the batch)
            self._record(stored, invalid, now)
        except Exception:
            log.exception("could not record the feed metrics of a batch")
        return live

    def _record(self, stored: list[tuple[Record, events.Event]], invalid: list[tuple[Record, str]],
                now: datetime) -> None:
        changed_indicators: set[tuple[str, str]] = set()
        changed_capacity: set[str] = set()
        escalations = False
        for record, event in stored:
            self.metrics.observe_event_in(record.topic, event.occurred_at, now)
            if isinstance(event, events.IndicatorUpdate):
                if event.kind == "current":
                    changed_indicators.add((event.location_id, event.indicator_id))
            elif isinstance(event, events.LocationCapacity):
                changed_capacity.add(event.location_id)
            else:
                escalations = True
        for record, reason in invalid:
            self.metrics.invalid_message(record.topic, reason)
        self.gauges.indicators_changed(changed_indicators)
        self.gauges.capacity_changed(changed_capacity)
        if escalations:
            self.gauges.escalations_changed()

    async def _record_lag(self, consumer: Any) -> None:
        """Highwater minus position of each assigned partition (never raises: lag is only a metric)."""
        try:
            lags: dict[tuple[str, int], int] = {}
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue  # no fetch answered for it yet
                lags[(tp.topic, tp.partition)] = highwater - await consumer.position(tp)
            self.metrics.set_consumer_lag(lags, TOPICS)
        except Exception:  # lag is only a metric
            log.debug("could not record the feed consumer lag", exc_info=True)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        backoff_s = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *TOPICS,
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.settings.feed_consumer_group,
                client_id="carepulse-feed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
                # The embedded broker answers a waiting fetch only after fetch_max_wait/2 (streaming.md §3.5.4).
                fetch_max_wait_ms=100,
                request_timeout_ms=max(40000, int(self.settings.session_timeout_s * 1000) + 5000),
            )
            try:
                await consumer.start()
                self.status.state, self.status.detail = "consuming", None
                backoff_s = 0.5
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    self.status.assigned_partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in consumer.assignment())
                    await self._record_lag(consumer)
                    records = [
                        Record(tp.topic, message.key.decode("utf-8", "replace") if message.key else None, message.value)
                        for tp, messages in batch.items() for message in messages if message.value is not None
                    ]
                    if not records:
                        continue
                    live = await self._store_until_stored(records)
                    await consumer.commit()
                    self.status.messages_stored += len(records)
                    self.status.last_message_at = self.now()
                    self.hub.publish(live)
            except asyncio.CancelledError:
                self.status.state = "stopped"
                raise
            except (KafkaError, OSError) as exc:
                self.status.state = "reconnecting"
                self.status.detail = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("feed consumer: %s; retrying in %.1f s", self.status.detail, backoff_s)
            except Exception as exc:  # the database, most likely: keep serving, retry the batch
                self.status.state = "reconnecting"
                self.status.detail = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.exception("feed consumer failed; retrying in %.1f s", backoff_s)
            finally:
                try:
                    await asyncio.shield(consumer.stop())
                except Exception:  # noqa: BLE001 - stopping a consumer that never started
                    pass
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 10.0)
