"""The metric catalog (carepulse/metrics.py): names, bounded labels, and what each helper records."""

from __future__ import annotations

import math
import re
import urllib.request
import uuid
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from carepulse import events, metrics, topics
from indicators.quality import ALL_INDICATOR_IDS, EXTENSION_INDICATOR_IDS
from tests.factories import T0

NAME = re.compile(r"^carepulse_[a-z0-9_]+$")
UNIT_SUFFIXES = ("_total", "_seconds", "_bytes", "_messages", "_created", "_bucket", "_count", "_sum")


def _source() -> events.Source:
    return events.Source(gateway_id="gw-test")


def _escalation(status: str = "raised", risk: str = "high") -> events.Escalation:
    return events.Escalation(
        event_id=uuid.uuid4(), occurred_at=T0, received_at=T0, source=_source(), location_id="loc-a",
        resident_id="res-1", episode_id=uuid.uuid4(), status=status, risk=risk, total=7, any_single_3=False,
        response="urgent", rules_version="test",
    )


def _overdue(risk: str = "high") -> events.EscalationOverdue:
    return events.EscalationOverdue(
        event_id=uuid.uuid4(), occurred_at=T0, received_at=T0, source=_source(), location_id="loc-a",
        resident_id="res-1", episode_id=uuid.uuid4(), risk=risk, raised_at=T0, deadline_at=T0,
    )


def _indicator(location_id: str = "loc-a", indicator_id: str = "falls_rate", *, value: float | None = 12.5,
               status: str = "red", kind: str = "current", window_end=T0) -> events.IndicatorUpdate:
    threshold = events.ThresholdInfo(op="<=", value=5, source="test", proposal=False)
    return events.IndicatorUpdate(
        event_id=uuid.uuid4(), occurred_at=window_end, received_at=window_end, source=_source(),
        location_id=location_id, indicator_id=indicator_id, title="t", unit="u", kind=kind,
        window_start=window_end - timedelta(days=28), window_end=window_end, numerator=1, denominator=80,
        value=value, status=status, minimum_denominator=10, direction="lower_is_better", green=threshold,
        red=threshold, rules_version="test",
    )


# --- the catalog -----------------------------------------------------------------------------------------

def test_every_metric_follows_the_naming_conventions():
    for cls in metrics.ROLES.values():
        role = cls(CollectorRegistry())
        for family in role.registry.collect():
            assert NAME.match(family.name), family.name
            assert family.documentation.strip(), f"{family.name} has no help text"
            if family.type == "counter":
                # prometheus_client strips _total from the family name and adds it to the sample.
                assert not family.name.endswith("_total")
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), f"histograms are of durations: {family.name}"
            if family.name.endswith("_seconds") or family.name.endswith("_bytes"):
                assert family.type in ("gauge", "histogram")


def test_metric_names_lists_sample_names_of_all_roles():
    names = metrics.metric_names()
    assert "carepulse_worker_events_in_total" in names
    assert "carepulse_worker_event_latency_seconds_bucket" in names
    assert "carepulse_indicator_status" in names
    assert "carepulse_worker_events_in" not in names  # the family name is not a queryable sample
    assert all(NAME.match(name) for name in names)
    assert metrics.metric_names(metrics.GatewayMetrics(CollectorRegistry())) < names


def test_roles_use_their_own_registries_not_the_default():
    from prometheus_client import REGISTRY

    assert metrics.WORKER.registry is not REGISTRY
    assert len({id(metrics.WORKER.registry), id(metrics.GATEWAY.registry), id(metrics.FEED.registry)}) == 3
    assert REGISTRY.get_sample_value("carepulse_worker_events_in_total", {"topic": "readings"}) is None
    # Each role's registry also has the standard process collectors.
    assert metrics.WORKER.registry.get_sample_value("python_info", {
        "implementation": __import__("platform").python_implementation(),
        "major": str(__import__("sys").version_info.major), "minor": str(__import__("sys").version_info.minor),
        "patchlevel": str(__import__("sys").version_info.micro), "version": __import__("platform").python_version(),
    }) == 1.0


def test_label_values_are_bounded_by_the_code_catalogs():
    assert metrics.TOPIC_NAMES == tuple(spec.name for spec in topics.CATALOG)
    assert metrics.RISKS == events.EscalationRisk.__args__
    assert metrics.indicator_label("falls_rate") == "falls_rate"
    assert [metrics.indicator_label(i) for i in EXTENSION_INDICATOR_IDS] == list(EXTENSION_INDICATOR_IDS)
    assert metrics.indicator_label("made_up") == "other"
    assert metrics.topic_label("nope") == "other"
    assert metrics.stage_label("worker.resident") == "worker.resident"
    assert metrics.stage_label("free text") == "other"
    assert set(metrics.RAG_CODES) == set(events.RagStatus.__args__)


# --- worker ----------------------------------------------------------------------------------------------

def test_event_in_counts_and_observes_event_time_latency():
    worker = metrics.WorkerMetrics()
    worker.observe_event_in("readings", T0, T0 + timedelta(seconds=3))
    worker.observe_event_in("readings", T0, T0 + timedelta(minutes=20))
    worker.observe_event_in("readings", T0 + timedelta(seconds=9), T0)  # device clock ahead: 0, not negative
    assert worker.value("carepulse_worker_events_in_total", topic="readings") == 3
    assert worker.value("carepulse_worker_event_latency_seconds_count", topic="readings") == 3
    assert worker.value("carepulse_worker_event_latency_seconds_sum", topic="readings") == 3 + 1200
    assert worker.value("carepulse_worker_event_latency_seconds_bucket", topic="readings", le="0.05") == 1
    assert worker.value("carepulse_worker_event_latency_seconds_bucket", topic="readings", le="5.0") == 2
    assert worker.value("carepulse_worker_last_event_timestamp_seconds") == T0.timestamp()


def test_every_topic_series_exists_at_zero_before_any_event():
    worker = metrics.WorkerMetrics()
    for name in metrics.TOPIC_NAMES:
        assert worker.value("carepulse_worker_events_in_total", topic=name) == 0
        assert worker.value("carepulse_worker_events_out_total", topic=name) == 0


def test_unknown_topic_is_counted_as_other():
    worker = metrics.WorkerMetrics()
    worker.observe_event_in("not-a-topic", T0, T0)
    worker.event_out("escalations", 2)
    assert worker.value("carepulse_worker_events_in_total", topic="other") == 1
    assert worker.value("carepulse_worker_events_out_total", topic="escalations") == 2


@pytest.mark.parametrize(("reason", "category"), [
    ("invalid event: payload: Invalid JSON: expected value at line 1 column 1", "invalid_event"),
    ("a fall event does not belong on topic readings", "wrong_topic"),
    ("the message key is not the event's resident_id; readings is keyed by resident_id", "key_mismatch"),
    ("impossible value: spo2 140 is not a possible reading", "impossible_value"),
    ("occurred_at 2030-01-01T00:00:00+00:00 is in the future; the device or system clock that stamped it is wrong",
     "future_timestamp"),
    ("it occurred 2025-01-01T00:00:00+00:00, more than 35 days before the newest event", "too_late"),
    ("something nobody anticipated", "other"),
])
def test_dead_letter_reasons_map_to_categories(reason, category):
    assert metrics.reason_category(reason) == category
    assert category in metrics.DEAD_LETTER_REASONS


def test_dead_letter_exceptions_map_by_class():
    class DecodeError(ValueError):
        pass

    class TooLate(ValueError):
        pass

    assert metrics.reason_category(DecodeError("no decoder for UUID 0x1234")) == "decode_error"
    assert metrics.reason_category(TooLate("whatever")) == "too_late"
    assert metrics.reason_category(ValueError("impossible value: x")) == "impossible_value"
    try:
        events.parse(events.Fall, b"{}")
    except ValueError as exc:
        assert metrics.reason_category(exc) == "invalid_event"


def test_dead_letter_counts_by_stage_and_category():
    worker = metrics.WorkerMetrics()
    assert worker.dead_letter("worker.resident", "impossible value: pulse 900") == "impossible_value"
    worker.dead_letter("worker.resident", "impossible value: pulse 0")
    worker.dead_letter("someone's free text stage", "zzz")
    assert worker.value("carepulse_dead_letters_total", stage="worker.resident", reason="impossible_value") == 2
    assert worker.value("carepulse_dead_letters_total", stage="other", reason="other") == 1


def test_escalation_events_count_by_risk_and_transition():
    worker = metrics.WorkerMetrics()
    worker.escalation_event(_escalation("raised", "high"))
    worker.escalation_event(_escalation("acknowledged", "high"))
    worker.escalation_event(_overdue("medium"))
    assert worker.value("carepulse_worker_escalations_total", risk="high", event="raised") == 1
    assert worker.value("carepulse_worker_escalations_total", risk="high", event="acknowledged") == 1
    assert worker.value("carepulse_worker_escalations_total", risk="medium", event="overdue") == 1
    assert worker.value("carepulse_worker_escalations_total", risk="low-medium", event="resolved") == 0


def test_consumer_lag_sums_partitions_and_zeroes_topics_no_longer_owned():
    worker = metrics.WorkerMetrics()
    worker.set_consumer_lag({("readings", 0): 5, ("readings", 3): 7, ("care-events", 1): 2})
    assert worker.value("carepulse_worker_consumer_lag_messages", topic="readings") == 12
    worker.set_consumer_lag({("readings", 0): 1}, topics_consumed=["readings", "care-events"])
    assert worker.value("carepulse_worker_consumer_lag_messages", topic="readings") == 1
    assert worker.value("carepulse_worker_consumer_lag_messages", topic="care-events") == 0


# --- gateway ---------------------------------------------------------------------------------------------

def test_gateway_buffer_ble_and_forwarding():
    gateway = metrics.GatewayMetrics()
    gateway.set_gateway_id("gw-7")
    gateway.event_in("readings", T0)
    gateway.events_forwarded("readings", 1)
    gateway.set_buffer(depth=3, size_bytes=4096, oldest_age_s=42.5, limit_bytes=1 << 20)
    gateway.set_ble_devices(seen=4, connected=2)
    gateway.ble_reject("replay")
    gateway.ble_reject("whatever")
    gateway.dead_letter("gateway.ble", ValueError("no resident for device AA:BB"))
    assert (gateway.value("carepulse_gateway_buffer_level"),
            gateway.value("carepulse_gateway_device_readings_lost_total")) == (0, 0)  # exported before any event
    gateway.set_buffer_level(2)
    gateway.device_reading_lost()
    assert gateway.value("carepulse_gateway_info", gateway_id="gw-7") == 1
    assert gateway.value("carepulse_gateway_events_in_total", topic="readings") == 1
    assert gateway.value("carepulse_gateway_events_out_total", topic="readings") == 1
    assert gateway.value("carepulse_gateway_last_event_timestamp_seconds") == T0.timestamp()
    assert gateway.value("carepulse_gateway_buffer_messages") == 3
    assert gateway.value("carepulse_gateway_buffer_bytes") == 4096
    assert gateway.value("carepulse_gateway_buffer_limit_bytes") == 1 << 20
    assert gateway.value("carepulse_gateway_buffer_oldest_age_seconds") == 42.5
    assert gateway.value("carepulse_gateway_ble_devices_seen") == 4
    assert gateway.value("carepulse_gateway_ble_devices_connected") == 2
    assert gateway.value("carepulse_gateway_ble_rejected_total", reason="replay") == 1
    assert gateway.value("carepulse_gateway_ble_rejected_total", reason="other") == 1
    assert gateway.value("carepulse_dead_letters_total", stage="gateway.ble", reason="unregistered") == 1
    assert gateway.value("carepulse_gateway_buffer_level") == 2
    assert gateway.value("carepulse_gateway_device_readings_lost_total") == 1
    gateway.set_buffer(depth=0, size_bytes=0, oldest_age_s=99)
    assert gateway.value("carepulse_gateway_buffer_oldest_age_seconds") == 0


def test_gateway_id_change_leaves_one_info_series():
    gateway = metrics.GatewayMetrics()
    gateway.set_gateway_id("a")
    gateway.set_gateway_id("b")
    assert gateway.value("carepulse_gateway_info", gateway_id="a") is None
    assert gateway.value("carepulse_gateway_info", gateway_id="b") == 1


# --- feed: care-quality state ----------------------------------------------------------------------------

def test_set_indicator_exports_value_and_rag_code():
    feed = metrics.FeedMetrics()
    feed.set_indicator(_indicator(value=12.5, status="red"))
    feed.set_indicator(_indicator(indicator_id="call_bell_response", value=None, status="insufficient_data",
                                  window_end=T0 - timedelta(hours=1)))
    assert feed.value("carepulse_indicator_value", location_id="loc-a", indicator_id="falls_rate") == 12.5
    assert feed.value("carepulse_indicator_status", location_id="loc-a", indicator_id="falls_rate") == 2
    assert math.isnan(feed.value("carepulse_indicator_value", location_id="loc-a",
                                 indicator_id="call_bell_response"))
    assert feed.value("carepulse_indicator_status", location_id="loc-a", indicator_id="call_bell_response") == -1
    # The newest window end across the location's indicators.
    assert feed.value("carepulse_indicator_window_end_timestamp_seconds", location_id="loc-a") == T0.timestamp()
    feed.set_indicator(_indicator(value=3, status="green"))
    assert feed.value("carepulse_indicator_status", location_id="loc-a", indicator_id="falls_rate") == 0


def test_daily_snapshots_do_not_move_the_current_gauges():
    feed = metrics.FeedMetrics()
    feed.set_indicator(_indicator(value=1, status="green"))
    feed.set_indicator(_indicator(value=99, status="red", kind="daily_snapshot"))
    assert feed.value("carepulse_indicator_value", location_id="loc-a", indicator_id="falls_rate") == 1


def test_indicator_rag_codes_cover_every_indicator():
    feed = metrics.FeedMetrics()
    for indicator_id in ALL_INDICATOR_IDS:
        feed.set_indicator(_indicator(indicator_id=indicator_id, status="amber"))
    for indicator_id in ALL_INDICATOR_IDS:
        assert feed.value("carepulse_indicator_status", location_id="loc-a", indicator_id=indicator_id) == 1


def test_open_escalations_by_location_risk_and_state_with_zero_fill():
    feed = metrics.FeedMetrics()
    now = T0 + timedelta(minutes=40)
    episodes = [
        metrics.Episode("loc-a", "high", acknowledged=False, deadline_at=T0 + timedelta(minutes=30), raised_at=T0),
        metrics.Episode("loc-a", "high", acknowledged=False, deadline_at=T0 + timedelta(hours=1),
                        raised_at=T0 + timedelta(minutes=30)),
        metrics.Episode("loc-a", "medium", acknowledged=True, deadline_at=T0, raised_at=T0),
        metrics.Episode("loc-b", "low-medium", acknowledged=False, deadline_at=None, raised_at=T0),
    ]
    feed.set_open_escalations(episodes, now, location_ids=["loc-c"])
    value = feed.value
    assert value("carepulse_escalations_open", location_id="loc-a", risk="high", state="overdue") == 1
    assert value("carepulse_escalations_open", location_id="loc-a", risk="high", state="pending") == 1
    assert value("carepulse_escalations_open", location_id="loc-a", risk="medium", state="acknowledged") == 1
    assert value("carepulse_escalations_open", location_id="loc-b", risk="low-medium", state="pending") == 1
    assert value("carepulse_escalations_open", location_id="loc-c", risk="high", state="overdue") == 0
    assert value("carepulse_escalations_oldest_unacknowledged_seconds", location_id="loc-a", risk="high") == 2400
    assert value("carepulse_escalations_oldest_unacknowledged_seconds", location_id="loc-a", risk="medium") == 0
    # The overdue episode is acknowledged: its location drops to zero instead of keeping a stale count.
    feed.set_open_escalations(episodes[1:2], now)
    assert value("carepulse_escalations_open", location_id="loc-a", risk="high", state="overdue") == 0
    assert value("carepulse_escalations_open", location_id="loc-b", risk="low-medium", state="pending") == 0


def _capacity(location_id: str = "loc-a", setting: str = "care_home", **figures) -> events.LocationCapacity:
    return events.LocationCapacity(
        event_id=uuid.uuid4(), occurred_at=T0, received_at=T0, source=_source(), location_id=location_id,
        setting=setting, profile_event_id=uuid.uuid4(), **figures)


class _Row:
    """A ``feed_capacity`` row as the feed reads it (``as_of`` for the event's occurred_at)."""

    def __init__(self, event: events.LocationCapacity) -> None:
        self.__dict__.update(event.model_dump(), as_of=event.occurred_at)


def test_set_capacity_exports_a_care_homes_beds_and_a_homecare_agencys_hours():
    feed = metrics.FeedMetrics()
    feed.set_capacity(_Row(_capacity(max_beds=30, occupied_beds=27, reserved_beds=2, vacant_beds=1, over_max_beds=0)))
    feed.set_capacity(_Row(_capacity("loc-h", "homecare", people_receiving_care=12, planned_hours_7d=80.5,
                                     commissioned_hours_7d=100.0, commissioned_hours_not_planned=19.5)))
    beds = {state: feed.value("carepulse_capacity_beds", location_id="loc-a", state=state) for state in metrics.BED_STATES}
    assert beds == {"occupied": 27, "reserved": 2, "vacant": 1}
    assert feed.value("carepulse_capacity_max_beds", location_id="loc-a") == 30
    assert feed.value("carepulse_capacity_people_receiving_care", location_id="loc-a") is None
    assert feed.value("carepulse_capacity_people_receiving_care", location_id="loc-h") == 12
    assert feed.value("carepulse_capacity_planned_care_seconds", location_id="loc-h") == 80.5 * 3600
    assert feed.value("carepulse_capacity_commissioned_care_seconds", location_id="loc-h") == 100 * 3600
    assert feed.value("carepulse_capacity_beds", location_id="loc-h", state="vacant") is None
    assert feed.value("carepulse_capacity_as_of_timestamp_seconds", location_id="loc-h") == T0.timestamp()


def test_a_location_never_exports_figures_its_newest_capacity_no_longer_has():
    feed = metrics.FeedMetrics()
    feed.set_capacity(_Row(_capacity("loc-h", "homecare", people_receiving_care=12, planned_hours_7d=80.5,
                                     commissioned_hours_7d=100.0, commissioned_hours_not_planned=19.5)))
    feed.set_capacity(_Row(_capacity("loc-h", "homecare", people_receiving_care=11, planned_hours_7d=70.0)))
    assert feed.value("carepulse_capacity_commissioned_care_seconds", location_id="loc-h") is None
    assert feed.value("carepulse_capacity_people_receiving_care", location_id="loc-h") == 11
    # Re-registered as a care home: the homecare series go.
    feed.set_capacity(_Row(_capacity("loc-h", max_beds=4, occupied_beds=4, reserved_beds=0, vacant_beds=0,
                                     over_max_beds=0)))
    assert feed.value("carepulse_capacity_people_receiving_care", location_id="loc-h") is None
    assert feed.value("carepulse_capacity_planned_care_seconds", location_id="loc-h") is None
    assert feed.value("carepulse_capacity_max_beds", location_id="loc-h") == 4


def test_location_cardinality_is_at_most_44_series_per_location():
    feed = metrics.FeedMetrics()
    for location in ("loc-1", "loc-2"):
        for indicator_id in ALL_INDICATOR_IDS:
            feed.set_indicator(_indicator(location_id=location, indicator_id=indicator_id))
    feed.set_capacity(_Row(_capacity("loc-1", max_beds=30, occupied_beds=27, reserved_beds=2, vacant_beds=1,
                                     over_max_beds=0)))
    feed.set_capacity(_Row(_capacity("loc-2", "homecare", people_receiving_care=12, planned_hours_7d=80.5,
                                     commissioned_hours_7d=100.0, commissioned_hours_not_planned=19.5)))
    feed.set_open_escalations([], T0)
    per_location: dict[str, int] = {}
    for family in feed.registry.collect():
        for sample in family.samples:
            if "location_id" in sample.labels:
                per_location[sample.labels["location_id"]] = per_location.get(sample.labels["location_id"], 0) + 1
    # 13 values + 13 statuses + 1 window end + 9 open + 3 oldest, and the capacity: a care home's 3 bed states,
    # maximum and as-of time; a homecare agency's people, planned and commissioned care and as-of time.
    assert per_location == {"loc-1": 44, "loc-2": 43}


def test_feed_http_and_invalid_messages():
    feed = metrics.FeedMetrics()
    feed.http_request("/locations/{location_id}", "get", 200, 0.012)
    feed.http_request("/locations/{location_id}", "BREW", 418, 0.001)
    assert feed.invalid_message("indicators", "invalid event: x: Field required") == "invalid_event"
    assert feed.value("carepulse_feed_http_requests_total", route="/locations/{location_id}", method="GET",
                      status_class="2xx") == 1
    assert feed.value("carepulse_feed_http_requests_total", route="/locations/{location_id}", method="other",
                      status_class="4xx") == 1
    assert feed.value("carepulse_feed_invalid_messages_total", topic="indicators", reason="invalid_event") == 1


# --- serving ---------------------------------------------------------------------------------------------

def test_serve_metrics_exposes_one_role_on_its_port():
    worker = metrics.WorkerMetrics()
    worker.observe_event_in("readings", T0, T0)
    server, _thread = metrics.serve_metrics(0, worker.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "carepulse_worker_events_in" in families
    assert "carepulse_indicator_status" not in families  # the feed's, not the worker's
    assert "process_cpu_seconds" in families or "python_gc_objects_collected" in families
