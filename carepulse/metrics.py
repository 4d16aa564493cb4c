"""The one catalog of carepulse's Prometheus metrics, and the small helpers the components record them with.

Every metric carepulse exposes is created here and nowhere else; dashboards (``dashboards/``) and alert rules
(``deploy/prometheus/alerts.yml``) may use only these names (a test parses their PromQL to check).

Naming follows Prometheus conventions: prefix ``carepulse_``, then the component (``worker``, ``gateway``,
``feed``), base units in the name (``_seconds``, ``_bytes``, ``_messages``), ``_total`` on counters and
``_timestamp_seconds`` on Unix times. ``carepulse_dead_letters_total`` and the care-quality gauges
(``carepulse_indicator_*``, ``carepulse_escalations_*``, ``carepulse_capacity_*``) have no component part:
the ``stage`` label, or the data itself, says where they come from.

Registries: one `CollectorRegistry` per process role (`WORKER`, `GATEWAY`, `FEED` below), never the
default registry. Each role serves only its own metrics on its own port (`serve_metrics`), even where the
demo or a test runs several roles in one Python process; and a test builds a fresh role object
(``WorkerMetrics()``) on a fresh registry, so nothing leaks between tests and values are read with
``registry.get_sample_value``. Each registry also carries the standard ``process_*``/``python_*``
collectors.

Label cardinality is bounded by construction: every label value is checked against a fixed set and
anything else becomes ``"other"`` (a metric call never raises into the pipeline):

- ``topic``: the names in `carepulse.topics.CATALOG` (16 today);
- ``stage``: `DEAD_LETTER_STAGES`; ``reason``: `DEAD_LETTER_REASONS`, categories derived from the
  free-text reason (`reason_category`), never the text itself;
- ``risk``: the escalation risks low-medium, medium, high; ``event``: `ESCALATION_EVENTS`;
- ``indicator_id``: `indicators.quality.ALL_INDICATOR_IDS` (13: the ten core indicators and issue 11's
  continuity of carers, travel between visits and urinalysis timeliness);
- ``state`` of ``carepulse_capacity_beds``: `BED_STATES` (occupied, reserved, vacant);
- ``location_id``: one value per care location. This is the only label that grows with the deployment:
  per location there are at most 13 ``carepulse_indicator_value`` + 13 ``carepulse_indicator_status`` +
  1 window end + 9 ``carepulse_escalations_open`` (3 risks x 3 states) +
  3 ``carepulse_escalations_oldest_unacknowledged_seconds`` + at most 5 capacity gauges (a care home: 3 bed
  states, maximum beds, as-of time; a homecare agency: people, planned and commissioned care, as-of time)
  = 44 series, so 1,000 locations are ~44,000 series, which one Prometheus holds easily. Residents,
  devices, episodes and free text are never labels.

Which process records what: the worker counts what it consumes and produces (and escalation transitions
as it emits them); the gateway its buffer, BLE and forwarding; the feed, which consumes the compacted
``indicators`` topic, the compacted ``capacity`` topic and every escalation into one database, publishes the
*state* gauges (indicator value and RAG per location, live capacity, open escalations), because it sees every
location at once and is not affected by worker rebalances (a worker that lost a partition would otherwise
keep exporting stale gauges).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from carepulse import events, topics
from indicators.quality import ALL_INDICATOR_IDS

log = logging.getLogger(__name__)

OTHER = "other"

# --- bounded label values -----------------------------------------------------------------------------

TOPIC_NAMES: tuple[str, ...] = tuple(spec.name for spec in topics.CATALOG)
RISKS: tuple[str, ...] = ("low-medium", "medium", "high")
#: Transitions of an escalation episode, as counted on ``carepulse_worker_escalations_total``.
ESCALATION_EVENTS: tuple[str, ...] = ("raised", "upgraded", "acknowledged", "resolved", "overdue")
#: States of an open episode on ``carepulse_escalations_open``: ``pending`` = not acknowledged, deadline not
#: passed; ``overdue`` = not acknowledged and past its deadline; ``acknowledged`` = acknowledged, awaiting the
#: clinical review that resolves it. The three add up to the open episodes.
OPEN_STATES: tuple[str, ...] = ("pending", "overdue", "acknowledged")
DEAD_LETTER_STAGES: tuple[str, ...] = (
    "worker.resident", "worker.location", "gateway.ble", "gateway.intake", "feed.ingest", OTHER,
)
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "invalid_event",     # not a valid event (schema validation failed, unparseable JSON)
    "wrong_topic",       # a valid event on a topic that does not carry its type
    "key_mismatch",      # message key is not the field the topic is keyed by
    "impossible_value",  # a vital sign outside what is physiologically possible
    "future_timestamp",  # dated ahead of the worker's clock beyond the tolerance
    "too_late",          # older than anything the location still keeps
    "decode_error",      # BLE bytes the gateway's codecs could not decode
    "unregistered",      # a reading from a device with no resident assigned
    OTHER,
)
#: Where a care home's beds are on ``carepulse_capacity_beds``: residents in them, held for residents in hospital,
#: empty (the Capacity Tracker's occupied and reserved, cqc_domain.md §1.5 [C24], and the vacancies they leave).
BED_STATES: tuple[str, ...] = ("occupied", "reserved", "vacant")
#: RAG status encoded as one gauge value per (location, indicator), so "worst first" is a sort and "red" a
#: comparison: insufficient_data -1, green 0, amber 1, red 2.
RAG_CODES: dict[str, int] = {"insufficient_data": -1, "green": 0, "amber": 1, "red": 2}

#: Event time -> processed: a live reading takes well under a second, a gateway replaying its buffer after
#: an outage minutes to hours; above an hour is "late" whatever the exact value.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"),
)
HTTP_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))


def topic_label(topic: str) -> str:
    return topic if topic in TOPIC_NAMES else OTHER


def risk_label(risk: str) -> str:
    return risk if risk in RISKS else OTHER


def stage_label(stage: str) -> str:
    return stage if stage in DEAD_LETTER_STAGES else OTHER


def indicator_label(indicator_id: str) -> str:
    return indicator_id if indicator_id in ALL_INDICATOR_IDS else OTHER


_REASON_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("impossible_value", re.compile(r"impossible value", re.IGNORECASE)),
    ("future_timestamp", re.compile(r"in the future", re.IGNORECASE)),
    ("wrong_topic", re.compile(r"does not belong on topic", re.IGNORECASE)),
    ("key_mismatch", re.compile(r"message key\b.*\bis not the event", re.IGNORECASE)),
    ("too_late", re.compile(r"more than .* days|too late", re.IGNORECASE)),
    ("unregistered", re.compile(r"no resident|not registered|unregistered", re.IGNORECASE)),
    ("decode_error", re.compile(r"decode|undecodable|truncated|frame", re.IGNORECASE)),
    ("invalid_event", re.compile(r"invalid event|validation error|json|field required|input should", re.IGNORECASE)),
)
_REASON_BY_EXCEPTION: dict[str, str] = {
    "ImpossibleValue": "impossible_value",
    "TooLate": "too_late",
    "DecodeError": "decode_error",
    "ValidationError": "invalid_event",
    "JSONDecodeError": "invalid_event",
}


def reason_category(reason: str | BaseException) -> str:
    """The bounded category (one of `DEAD_LETTER_REASONS`) of a dead letter's reason.

    An exception is categorised by its class (or a base class) name; a reason text by the phrases the
    pipeline's dead letters use (streams/app.py, gateway/ble/central.py). Unknown: ``"other"``.
    """
    if isinstance(reason, BaseException):
        for cls in type(reason).__mro__:
            if cls.__name__ in _REASON_BY_EXCEPTION:
                return _REASON_BY_EXCEPTION[cls.__name__]
        reason = str(reason)
    for category, pattern in _REASON_PATTERNS:
        if pattern.search(reason):
            return category
    return OTHER


def latency_s(occurred_at: datetime, now: datetime) -> float:
    """Seconds from event time to `now`; 0 for an event dated in the future (a device clock ahead)."""
    return max(0.0, (now - occurred_at).total_seconds())


def _registry_with_process_collectors() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _dead_letters(registry: CollectorRegistry) -> Counter:
    return Counter(
        "carepulse_dead_letters", "Inputs rejected to the dead-letters topic, by the stage that rejected them "
        "and a reason category (the full reason is in the dead letter itself).",
        ["stage", "reason"], registry=registry,
    )


class _Role:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry if registry is not None else _registry_with_process_collectors()

    def value(self, name: str, **labels: str) -> float | None:
        """A sample's current value (tests and debugging): ``role.value("carepulse_x_total", topic="y")``."""
        return self.registry.get_sample_value(name, labels)


class _DeadLetters:
    dead_letters: Counter

    def dead_letter(self, stage: str, reason: str | BaseException) -> str:
        """A dead letter produced by `stage` (e.g. ``"worker.resident"``) for `reason` (its text or the
        exception); counts it under the reason's category, which it returns."""
        category = reason_category(reason)
        self.dead_letters.labels(stage=stage_label(stage), reason=category).inc()
        return category


# --- worker --------------------------------------------------------------------------------------------


class WorkerMetrics(_DeadLetters, _Role):
    """The stream worker (streams/app.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.events_in = Counter(
            "carepulse_worker_events_in", "Events the worker consumed, by input topic (dead-lettered ones included).",
            ["topic"], registry=r,
        )
        self.events_out = Counter(
            "carepulse_worker_events_out", "Events the worker produced, by output topic.", ["topic"], registry=r,
        )
        self.latency = Histogram(
            "carepulse_worker_event_latency_seconds",
            "Event time (occurred_at) to processed by the worker, by input topic; includes time spent in a "
            "gateway's buffer during an outage.",
            ["topic"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.consumer_lag = Gauge(
            "carepulse_worker_consumer_lag_messages",
            "Messages not yet consumed (end offset minus position), summed over the partitions of the topic "
            "this worker owns; sum over workers for the group's lag.",
            ["topic"], registry=r,
        )
        self.escalations = Counter(
            "carepulse_worker_escalations",
            "Escalation episode transitions the worker emitted: raised, upgraded, acknowledged, resolved, "
            "overdue (deadline missed), by NEWS2 risk band.",
            ["risk", "event"], registry=r,
        )
        self.dead_letters = _dead_letters(r)
        self.last_event = Gauge(
            "carepulse_worker_last_event_timestamp_seconds",
            "Wall-clock Unix time at which the worker last consumed an event.", registry=r,
        )
        for topic in TOPIC_NAMES:  # every topic's series exists from the start (rate() needs a zero)
            self.events_in.labels(topic=topic)
            self.events_out.labels(topic=topic)
        for risk in RISKS:
            for event in ESCALATION_EVENTS:
                self.escalations.labels(risk=risk, event=event)

    def observe_event_in(self, topic: str, occurred_at: datetime, now: datetime) -> None:
        """An event consumed from `topic`: counts it and observes its event-time latency."""
        label = topic_label(topic)
        self.events_in.labels(topic=label).inc()
        self.latency.labels(topic=label).observe(latency_s(occurred_at, now))
        self.last_event.set(now.timestamp())

    def event_out(self, topic: str, count: int = 1) -> None:
        self.events_out.labels(topic=topic_label(topic)).inc(count)

    def escalation_event(self, event: events.Escalation | events.EscalationOverdue) -> None:
        """An escalation event the worker emitted on ``escalations``."""
        kind = "overdue" if isinstance(event, events.EscalationOverdue) else event.status
        self.escalations.labels(risk=risk_label(event.risk), event=kind).inc()

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int], topics_consumed: Iterable[str] = ()) -> None:
        """The lag of each owned (topic, partition); topics in `topics_consumed` that are absent (no owned
        partition any more) are set to 0, so a partition moved to another worker leaves no stale lag."""
        _set_lag(self.consumer_lag, lags, topics_consumed)


def _set_lag(gauge: Gauge, lags: Mapping[tuple[str, int], int], topics_consumed: Iterable[str]) -> None:
    totals: dict[str, int] = {topic_label(t): 0 for t in topics_consumed}
    for (topic, _partition), lag in lags.items():
        label = topic_label(topic)
        totals[label] = totals.get(label, 0) + max(0, int(lag))
    for label, total in totals.items():
        gauge.labels(topic=label).set(total)


# --- gateway -------------------------------------------------------------------------------------------


class GatewayMetrics(_DeadLetters, _Role):
    """The edge gateway (gateway/): store-and-forward buffer, BLE central, tablet intake."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.info = Gauge(
            "carepulse_gateway_info", "Always 1; labels identify the gateway.", ["gateway_id"], registry=r,
        )
        self.events_in = Counter(
            "carepulse_gateway_events_in",
            "Events the gateway accepted into its durable buffer, by destination topic.", ["topic"], registry=r,
        )
        self.events_out = Counter(
            "carepulse_gateway_events_out",
            "Events the broker acknowledged (and the gateway removed from its buffer), by topic.",
            ["topic"], registry=r,
        )
        self.buffer_rejected = Counter(
            "carepulse_gateway_buffer_rejected",
            "Events the buffer refused (its size limit, CAREPULSE_GATEWAY_BUFFER_MAX_BYTES, or its disk): tablet "
            "entries, which the tablets send again, and device readings alike.",
            registry=r,
        )
        self.device_readings_lost = Counter(
            "carepulse_gateway_device_readings_lost",
            "Device readings (BLE values, BTHome frames, their dead letters) the gateway could not store: nobody "
            "sends them again, so each is lost (its bytes are in the gateway's CRITICAL log line).",
            registry=r,
        )
        self.buffer_level = Gauge(
            "carepulse_gateway_buffer_level",
            "What the store-and-forward buffer admits (gateway.buffer.BufferLevel): 0 everything, 1 filling "
            "(tablet entries refused soon), 2 tablet entries refused, 3 device readings refused too (lost).",
            registry=r,
        )
        self.buffer_depth = Gauge(
            "carepulse_gateway_buffer_messages", "Messages in the store-and-forward buffer, not yet acknowledged.",
            registry=r,
        )
        self.buffer_bytes = Gauge(
            "carepulse_gateway_buffer_bytes", "Disk used by the store-and-forward buffer.", registry=r,
        )
        self.buffer_limit_bytes = Gauge(
            "carepulse_gateway_buffer_limit_bytes", "Disk the store-and-forward buffer may use.", registry=r,
        )
        self.buffer_oldest_age = Gauge(
            "carepulse_gateway_buffer_oldest_age_seconds",
            "Age of the oldest message still in the buffer (0 when empty).", registry=r,
        )
        self.last_event = Gauge(
            "carepulse_gateway_last_event_timestamp_seconds",
            "Unix time at which the gateway last accepted an event from a device or a tablet.", registry=r,
        )
        self.ble_devices_seen = Gauge(
            "carepulse_gateway_ble_devices_seen", "Registered BLE devices heard since the gateway started.",
            registry=r,
        )
        self.ble_devices_connected = Gauge(
            "carepulse_gateway_ble_devices_connected", "BLE devices with a GATT session open now.", registry=r,
        )
        self.ble_rejected = Counter(
            "carepulse_gateway_ble_rejected",
            "BLE inputs ignored: replayed or downgraded BTHome frames, advertisements of unregistered devices.",
            ["reason"], registry=r,
        )
        self.dead_letters = _dead_letters(r)
        for topic in TOPIC_NAMES:
            self.events_in.labels(topic=topic)
            self.events_out.labels(topic=topic)
        for reason in BLE_REJECT_REASONS:
            self.ble_rejected.labels(reason=reason)

    def set_gateway_id(self, gateway_id: str) -> None:
        self.info.clear()
        self.info.labels(gateway_id=gateway_id).set(1)

    def event_in(self, topic: str, now: datetime) -> None:
        """An event accepted into the buffer (from BLE or the tablet intake)."""
        self.events_in.labels(topic=topic_label(topic)).inc()
        self.last_event.set(now.timestamp())

    def events_forwarded(self, topic: str, count: int = 1) -> None:
        self.events_out.labels(topic=topic_label(topic)).inc(count)

    def set_buffer(self, depth: int, size_bytes: int, oldest_age_s: float, limit_bytes: int | None = None) -> None:
        """The buffer's state, e.g. from `gateway.buffer.DurableBuffer` after each forward loop."""
        self.buffer_depth.set(depth)
        self.buffer_bytes.set(size_bytes)
        self.buffer_oldest_age.set(max(0.0, oldest_age_s) if depth else 0.0)
        if limit_bytes is not None:
            self.buffer_limit_bytes.set(limit_bytes)

    def set_buffer_level(self, level: int) -> None:
        """The buffer's admission level, a `gateway.buffer.BufferLevel` (an int: 0 to 3)."""
        self.buffer_level.set(int(level))

    def device_reading_lost(self) -> None:
        """A device reading the gateway could not store (`gateway.ble.central.BleCentral`)."""
        self.device_readings_lost.inc()

    def set_ble_devices(self, seen: int, connected: int) -> None:
        self.ble_devices_seen.set(seen)
        self.ble_devices_connected.set(connected)

    def ble_reject(self, reason: str) -> None:
        """A BLE input ignored: ``replay``, ``downgrade`` or ``unregistered`` (`BLE_REJECT_REASONS`)."""
        self.ble_rejected.labels(reason=reason if reason in BLE_REJECT_REASONS else OTHER).inc()


BLE_REJECT_REASONS: tuple[str, ...] = ("replay", "downgrade", "unregistered")


# --- feed ----------------------------------------------------------------------------------------------


class OpenEpisode(Protocol):
    """What `FeedMetrics.set_open_escalations` needs of an open episode (e.g. a row of the feed's table)."""

    location_id: str
    risk: str
    acknowledged: bool
    deadline_at: datetime | None


@dataclass(frozen=True)
class Episode:
    """A plain `OpenEpisode` (for callers that build them from rows or events)."""

    location_id: str
    risk: str
    acknowledged: bool
    deadline_at: datetime | None
    raised_at: datetime | None = None


def open_state(episode: OpenEpisode, now: datetime) -> str:
    """``acknowledged``, ``overdue`` (unacknowledged past its deadline) or ``pending``."""
    if episode.acknowledged:
        return "acknowledged"
    if episode.deadline_at is not None and now >= episode.deadline_at:
        return "overdue"
    return "pending"


class CapacityFigures(Protocol):
    """What `FeedMetrics.set_capacity` reads of a location's capacity (a ``feed_capacity`` row or a
    `carepulse.events.LocationCapacity` with ``as_of`` for its ``occurred_at``)."""

    location_id: str
    setting: str
    as_of: datetime
    max_beds: int | None
    occupied_beds: int | None
    reserved_beds: int | None
    vacant_beds: int | None
    people_receiving_care: int | None
    planned_hours_7d: float | None
    commissioned_hours_7d: float | None


class FeedMetrics(_Role):
    """The regulator feed (feed/): ingest, HTTP API, and the care-quality state gauges (see module doc)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.events_in = Counter(
            "carepulse_feed_events_in", "Events the feed stored in its database, by topic.", ["topic"], registry=r,
        )
        self.latency = Histogram(
            "carepulse_feed_event_latency_seconds",
            "Event time (occurred_at) to stored by the feed, by topic.",
            ["topic"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.consumer_lag = Gauge(
            "carepulse_feed_consumer_lag_messages",
            "Messages the feed has not yet consumed, summed over the partitions of the topic.", ["topic"],
            registry=r,
        )
        self.http_requests = Counter(
            "carepulse_feed_http_requests",
            "Requests to the feed API, by route template, method and status class (2xx, 3xx, 4xx, 5xx).",
            ["route", "method", "status_class"], registry=r,
        )
        self.http_duration = Histogram(
            "carepulse_feed_http_request_duration_seconds", "Feed API request duration, by route template.",
            ["route"], buckets=HTTP_BUCKETS_S, registry=r,
        )
        self.indicator_value = Gauge(
            "carepulse_indicator_value",
            "Current value of a location's care-quality indicator, in the indicator's own published unit "
            "(mostly percent; falls per 1,000 occupied bed days). NaN when the denominator is zero.",
            ["location_id", "indicator_id"], registry=r,
        )
        self.indicator_status = Gauge(
            "carepulse_indicator_status",
            "Current RAG status of a location's indicator: -1 insufficient data, 0 green, 1 amber, 2 red.",
            ["location_id", "indicator_id"], registry=r,
        )
        self.indicator_updated = Gauge(
            "carepulse_indicator_window_end_timestamp_seconds",
            "Unix time of the end of the window of the latest value of each location's indicators "
            "(the newest across its indicators).",
            ["location_id"], registry=r,
        )
        self.escalations_open = Gauge(
            "carepulse_escalations_open",
            "Open escalation episodes by location, NEWS2 risk band and state: pending (not acknowledged, "
            "within its deadline), overdue (not acknowledged, past its deadline), acknowledged.",
            ["location_id", "risk", "state"], registry=r,
        )
        self.escalations_oldest = Gauge(
            "carepulse_escalations_oldest_unacknowledged_seconds",
            "Age of the oldest unacknowledged open episode, by location and risk band (0 when none).",
            ["location_id", "risk"], registry=r,
        )
        self.capacity_beds = Gauge(
            "carepulse_capacity_beds",
            "A care home's beds now, by state: occupied (residents in them), reserved (held for residents in "
            "hospital), vacant; the DHSC Capacity Tracker's bed fields. Occupied + reserved + vacant is the "
            "maximum, unless more are in use than the maximum.",
            ["location_id", "state"], registry=r,
        )
        self.capacity_max_beds = Gauge(
            "carepulse_capacity_max_beds", "A care home's maximum beds (Capacity Tracker 'maximum': registered beds).",
            ["location_id"], registry=r,
        )
        self.capacity_people = Gauge(
            "carepulse_capacity_people_receiving_care",
            "People a homecare agency had a planned visit for in the last 7 days.", ["location_id"], registry=r,
        )
        self.capacity_planned = Gauge(
            "carepulse_capacity_planned_care_seconds",
            "Care a homecare agency planned in the last 7 days (visits not cancelled by the client in advance).",
            ["location_id"], registry=r,
        )
        self.capacity_commissioned = Gauge(
            "carepulse_capacity_commissioned_care_seconds",
            "Care commissioned from a homecare agency per week, where its profile gives it.", ["location_id"],
            registry=r,
        )
        self.capacity_as_of = Gauge(
            "carepulse_capacity_as_of_timestamp_seconds",
            "Unix time the location's live capacity was computed for (its age is time() minus this).",
            ["location_id"], registry=r,
        )
        self.invalid_messages = Counter(
            "carepulse_feed_invalid_messages",
            "Messages the feed skipped as unreadable, by topic and reason category.", ["topic", "reason"],
            registry=r,
        )
        self._locations: set[str] = set()
        self._window_end: dict[str, float] = {}
        for topic in TOPIC_NAMES:
            self.events_in.labels(topic=topic)

    def observe_event_in(self, topic: str, occurred_at: datetime, now: datetime) -> None:
        label = topic_label(topic)
        self.events_in.labels(topic=label).inc()
        self.latency.labels(topic=label).observe(latency_s(occurred_at, now))

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int], topics_consumed: Iterable[str] = ()) -> None:
        """As `WorkerMetrics.set_consumer_lag`."""
        _set_lag(self.consumer_lag, lags, topics_consumed)

    def invalid_message(self, topic: str, reason: str | BaseException) -> str:
        category = reason_category(reason)
        self.invalid_messages.labels(topic=topic_label(topic), reason=category).inc()
        return category

    def http_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        """One API request. `route` must be the route *template* (``/locations/{location_id}``), never the
        concrete path, and ``"other"`` for a 404 on no route, so the label stays bounded."""
        method = method.upper() if method.upper() in _HTTP_METHODS else OTHER
        self.http_requests.labels(route=route, method=method, status_class=f"{status // 100}xx").inc()
        self.http_duration.labels(route=route).observe(max(0.0, duration_s))

    def set_indicator(self, update: events.IndicatorUpdate) -> None:
        """A current indicator (``indicators`` topic, kind ``current``); daily snapshots are ignored."""
        if update.kind != "current":
            return
        labels = {"location_id": update.location_id, "indicator_id": indicator_label(update.indicator_id)}
        self.indicator_value.labels(**labels).set(math.nan if update.value is None else update.value)
        self.indicator_status.labels(**labels).set(RAG_CODES[update.status])
        newest = max(self._window_end.get(update.location_id, 0.0), update.window_end.timestamp())
        self._window_end[update.location_id] = newest
        self.indicator_updated.labels(location_id=update.location_id).set(newest)
        self._add_location(update.location_id)

    def set_capacity(self, capacity: CapacityFigures) -> None:
        """A location's live capacity (the newest). Series of the other setting, and commissioned care no longer
        given, are removed, so a location never exports a stale figure beside a fresh one."""
        location_id = capacity.location_id
        care_home = capacity.setting == "care_home"
        beds = {"occupied": capacity.occupied_beds, "reserved": capacity.reserved_beds,
                "vacant": capacity.vacant_beds}
        for state, count in beds.items():
            _set_or_remove(self.capacity_beds, (location_id, state), count if care_home else None)
        _set_or_remove(self.capacity_max_beds, (location_id,), capacity.max_beds if care_home else None)
        homecare = not care_home
        _set_or_remove(self.capacity_people, (location_id,), capacity.people_receiving_care if homecare else None)
        _set_or_remove(self.capacity_planned, (location_id,),
                       _hours_to_s(capacity.planned_hours_7d) if homecare else None)
        _set_or_remove(self.capacity_commissioned, (location_id,),
                       _hours_to_s(capacity.commissioned_hours_7d) if homecare else None)
        self.capacity_as_of.labels(location_id=location_id).set(capacity.as_of.timestamp())

    def set_open_escalations(self, episodes: Iterable[OpenEpisode], now: datetime,
                             location_ids: Iterable[str] = ()) -> None:
        """All open episodes (the whole set, every time): counts by location, risk and state.

        Every (risk, state) of every location known (seen before, given in `location_ids` or having an
        episode) is set, zero where there is none, so a location whose last episode closed drops to 0
        instead of keeping a stale count, and ``sum by (location_id)`` always has every location.
        """
        counts: dict[tuple[str, str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        for episode in episodes:
            risk = risk_label(episode.risk)
            state = open_state(episode, now)
            key = (episode.location_id, risk, state)
            counts[key] = counts.get(key, 0) + 1
            self._add_location(episode.location_id)
            raised_at = getattr(episode, "raised_at", None)
            if state != "acknowledged" and raised_at is not None:
                age = max(0.0, (now - raised_at).total_seconds())
                oldest[(episode.location_id, risk)] = max(oldest.get((episode.location_id, risk), 0.0), age)
        for location_id in location_ids:
            self._add_location(location_id)
        for location_id in self._locations:
            for risk in RISKS:
                for state in OPEN_STATES:
                    self.escalations_open.labels(location_id=location_id, risk=risk, state=state).set(
                        counts.get((location_id, risk, state), 0))
                self.escalations_oldest.labels(location_id=location_id, risk=risk).set(
                    oldest.get((location_id, risk), 0.0))

    def _add_location(self, location_id: str) -> None:
        self._locations.add(location_id)


def _hours_to_s(hours: float | None) -> float | None:
    return None if hours is None else hours * 3600


def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    if value is None:
        gauge.remove(*labels)  # a no-op for a series never set
    else:
        gauge.labels(*labels).set(value)


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- the catalog and serving ---------------------------------------------------------------------------

#: The process-wide role objects: the worker process records on WORKER, the gateway on GATEWAY, the feed
#: on FEED; each is served on its own port by `serve_metrics`.
WORKER = WorkerMetrics()
GATEWAY = GatewayMetrics()
FEED = FeedMetrics()

ROLES: dict[str, type[_Role]] = {"worker": WorkerMetrics, "gateway": GatewayMetrics, "feed": FeedMetrics}


def metric_names(role: _Role | None = None) -> set[str]:
    """Every sample name carepulse defines (``_total``, ``_bucket``, ``_count``, ``_sum``, ``_created``
    included), for all roles or one; the standard process/python collectors are excluded."""
    roles = [role] if role is not None else [cls(CollectorRegistry()) for cls in ROLES.values()]
    names: set[str] = set()
    for each in roles:
        for family in each.registry.collect():
            if not family.name.startswith("carepulse_"):
                continue
            suffixes = {
                "counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            }.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


def serve_metrics(port: int, registry: CollectorRegistry, addr: str = "127.0.0.1"):
    """Serve `registry` at ``http://addr:port/metrics`` from a daemon thread (prometheus_client's
    `start_http_server`); port 0 picks a free one. Returns ``(server, thread)``: ``server.server_port`` is the
    port bound, ``server.shutdown()`` stops it."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=addr, registry=registry)


def serve_metrics_or_log(port: int, registry: CollectorRegistry, host: str, *, role: str):
    """`serve_metrics` for a process role, or None when `port` is 0 (turned off) or it cannot listen — logged
    as an error, because metrics must never stop the clinical pipeline. The setting is
    ``CAREPULSE_<ROLE>_METRICS_PORT``."""
    variable = f"CAREPULSE_{role.upper()}_METRICS_PORT"
    if port == 0:
        log.info("%s metrics endpoint off (%s=0)", role, variable)
        return None
    try:
        server, _thread = serve_metrics(port, registry, host)
    except Exception as error:  # noqa: BLE001 - whatever the reason, the role runs on without /metrics
        log.error("the %s metrics endpoint cannot listen on %s:%d (%s); running without /metrics. Set %s to a "
                  "free port, or 0 to turn it off", role, host, port, getattr(error, "strerror", None) or error,
                  variable)
        return None
    log.info("%s metrics on http://%s:%d/metrics", role, host, server.server_port)
    return server
