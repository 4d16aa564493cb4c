"""The feed's metrics, read from a fresh `FeedMetrics` per test: the state gauges (current indicators, live
capacity, open escalations by state) from what was consumed through the real broker and from the database at start, the
pending -> overdue transition on the timer, HTTP requests by route template, and the /metrics endpoint of
`carepulse feed serve` as a real process."""

from __future__ import annotations

import math
import signal
import socket
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from carepulse import events, topics
from carepulse.metrics import FeedMetrics
from carepulse.settings import Settings
from feed import db
from feed.api import create_feed_app
from feed.ingest import ConsumerStatus, FeedConsumer, Record, store_escalation, store_indicator
from feed.live import LiveHub
from tests.feed.conftest import (
    NOW,
    FeedServer,
    escalation,
    feed_settings,
    indicator_update,
    key,
    location_capacity,
    unique,
    wait_for,
)
from tests.feed.test_api import LOC_A, LOC_B, seed
from tests.kafka_helpers import CarepulseProcess, free_port, produce


def _open(metrics: FeedMetrics, location_id: str, risk: str = "high") -> dict[str, float | None]:
    return {state: metrics.value("carepulse_escalations_open", location_id=location_id, risk=risk, state=state)
            for state in ("pending", "overdue", "acknowledged")}


def _indicator(metrics: FeedMetrics, location_id: str, indicator_id: str = "escalation_timeliness") -> tuple:
    labels = {"location_id": location_id, "indicator_id": indicator_id}
    return (metrics.value("carepulse_indicator_value", **labels), metrics.value("carepulse_indicator_status", **labels))


def _sum(metrics: FeedMetrics, name: str) -> float:
    return sum(sample.value for family in metrics.registry.collect() for sample in family.samples
               if sample.name == name)


def _produce_indicator(bootstrap: str, update: events.IndicatorUpdate) -> None:
    produce(bootstrap, topics.INDICATORS.name,
            [(topics.indicator_key(update.location_id, update.indicator_id).encode(), events.to_json(update))])


def _produce_escalation(bootstrap: str, event: events.Escalation) -> None:
    produce(bootstrap, topics.ESCALATIONS.name, [(event.resident_id.encode(), events.to_json(event))])


# -- through the real broker --------------------------------------------------------------------------------
def test_consumed_indicators_and_escalations_set_the_state_gauges(broker, engine):
    location = unique("loc-metrics")
    metrics = FeedMetrics()
    with FeedServer(feed_settings(broker.bootstrap), engine, metrics=metrics, state_refresh_s=0.3) as feed:
        wait_for(lambda: feed.consumer.state == "consuming" and feed.consumer.assigned_partitions)

        amber = indicator_update(location, status="amber", numerator=17, denominator=20,
                                 window_end=NOW + timedelta(hours=1))
        _produce_indicator(broker.bootstrap, amber)
        wait_for(lambda: _indicator(metrics, location) == (85.0, 1))
        # Zero denominator: the value is NaN, the status insufficient data (-1).
        _produce_indicator(broker.bootstrap, indicator_update(location, "falls_rate", numerator=0, denominator=0,
                                                              status="insufficient_data"))
        wait_for(lambda: _indicator(metrics, location, "falls_rate")[1] == -1)
        assert math.isnan(_indicator(metrics, location, "falls_rate")[0])

        # A high escalation due in a few seconds: pending now, overdue once the deadline passes with no
        # message at all (the refresh timer).
        due_in_s = 4
        raised = escalation(location, "res-metrics-1", risk="high",
                            occurred_at=events.utc_now() - timedelta(minutes=30) + timedelta(seconds=due_in_s))
        _produce_escalation(broker.bootstrap, raised)
        wait_for(lambda: _open(metrics, location) == {"pending": 1, "overdue": 0, "acknowledged": 0})
        assert _open(metrics, location, "medium") == {"pending": 0, "overdue": 0, "acknowledged": 0}
        assert metrics.value("carepulse_escalations_oldest_unacknowledged_seconds",
                             location_id=location, risk="high") >= 30 * 60 - due_in_s
        wait_for(lambda: _open(metrics, location) == {"pending": 0, "overdue": 1, "acknowledged": 0},
                 timeout_s=due_in_s + 10)

        acknowledged = raised.model_copy(update={
            "event_id": events.derived_event_id("test.ack", str(raised.event_id)), "status": "acknowledged",
            "occurred_at": raised.occurred_at + timedelta(seconds=1), "acknowledged_by": "nurse-1",
            "acknowledged_at": raised.occurred_at + timedelta(seconds=1),
        })
        _produce_escalation(broker.bootstrap, acknowledged)
        wait_for(lambda: _open(metrics, location) == {"pending": 0, "overdue": 0, "acknowledged": 1})
        assert metrics.value("carepulse_escalations_oldest_unacknowledged_seconds",
                             location_id=location, risk="high") == 0

        # Live capacity (issue 11): the newest figures of the location, in hours as seconds.
        capacity = location_capacity(location, "homecare", occurred_at=NOW + timedelta(hours=1),
                                     people_receiving_care=9, planned_hours_7d=61.5)
        produce(broker.bootstrap, topics.CAPACITY.name, [(location.encode(), events.to_json(capacity))])
        wait_for(lambda: metrics.value("carepulse_capacity_people_receiving_care", location_id=location) == 9)
        assert metrics.value("carepulse_capacity_planned_care_seconds", location_id=location) == 61.5 * 3600
        assert metrics.value("carepulse_capacity_as_of_timestamp_seconds", location_id=location) == \
            (NOW + timedelta(hours=1)).timestamp()

        produce(broker.bootstrap, topics.INDICATORS.name, [(b"x", b"not json")])
        wait_for(lambda: (metrics.value("carepulse_feed_invalid_messages_total", topic="indicators",
                                        reason="invalid_event") or 0) >= 1)
        # Every consumed record is either stored (counted with its latency) or invalid.
        wait_for(lambda: _sum(metrics, "carepulse_feed_events_in_total")
                 + _sum(metrics, "carepulse_feed_invalid_messages_total") == feed.consumer.messages_stored)
        assert _sum(metrics, "carepulse_feed_event_latency_seconds_count") == \
            _sum(metrics, "carepulse_feed_events_in_total")
        assert metrics.value("carepulse_feed_events_in_total", topic="escalations") >= 2
        assert metrics.value("carepulse_feed_events_in_total", topic="capacity") >= 1
        # Caught up: nothing left to consume on any of the four topics.
        wait_for(lambda: all(metrics.value("carepulse_feed_consumer_lag_messages", topic=topic) == 0
                             for topic in ("indicators", "indicators.history", "escalations", "capacity")))


# -- one batch, as the consumer stores it -------------------------------------------------------------------
def test_a_batch_is_counted_after_it_is_stored_and_the_gauges_show_what_the_database_kept(engine):
    location = unique("loc-batch")
    metrics = FeedMetrics()
    consumer = FeedConsumer(Settings(), engine, LiveHub(), ConsumerStatus(), now=lambda: NOW + timedelta(hours=2),
                            metrics_=metrics)
    newer = indicator_update(location, status="amber", numerator=17, denominator=20, window_end=NOW + timedelta(hours=1))
    older = indicator_update(location, status="green", window_end=NOW)
    snapshot = indicator_update(location, status="red", numerator=1, denominator=20, kind="daily_snapshot")
    raised = escalation(location, "res-batch-1", risk="medium", occurred_at=NOW)
    consumer._store([
        Record(topics.INDICATORS.name, None, events.to_json(newer)),
        Record(topics.INDICATORS.name, None, events.to_json(older)),  # late: the store keeps the newer value
        Record(topics.INDICATORS_HISTORY.name, None, events.to_json(snapshot)),  # not a current value
        Record(topics.ESCALATIONS.name, "res-batch-1", events.to_json(raised)),
        Record(topics.ESCALATIONS.name, None, b'{"event_type": "escalation"}'),
    ])
    assert _indicator(metrics, location) == (85.0, 1)
    assert metrics.value("carepulse_feed_events_in_total", topic="indicators") == 2
    assert metrics.value("carepulse_feed_events_in_total", topic="indicators.history") == 1
    assert metrics.value("carepulse_feed_events_in_total", topic="escalations") == 1
    assert metrics.value("carepulse_feed_invalid_messages_total", topic="escalations", reason="invalid_event") == 1
    # Event time -> stored: the escalation (occurred at NOW) and the current values took 1-2 hours.
    assert metrics.value("carepulse_feed_event_latency_seconds_bucket", topic="escalations", le="3600.0") == 0
    assert metrics.value("carepulse_feed_event_latency_seconds_sum", topic="escalations") == 7200
    # The medium escalation's deadline (NOW + 30 min) is long past by the consumer's clock.
    assert _open(metrics, location, "medium") == {"pending": 0, "overdue": 1, "acknowledged": 0}


# -- from the database ---------------------------------------------------------------------------------------
def test_a_started_feed_exports_the_state_in_its_database_at_once(engine):
    seed(engine)  # per location: 1 high escalation raised at NOW (due NOW+30 min), 6 medium acknowledged
    metrics = FeedMetrics()
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: NOW, metrics=metrics)
    with TestClient(app):
        assert _indicator(metrics, LOC_A) == (95.0, 0)
        assert _indicator(metrics, LOC_B, "falls_rate") == (5.0, 1)
        assert _open(metrics, LOC_A) == {"pending": 1, "overdue": 0, "acknowledged": 0}
        assert _open(metrics, LOC_A, "medium") == {"pending": 0, "overdue": 0, "acknowledged": 6}
        assert metrics.value("carepulse_indicator_window_end_timestamp_seconds", location_id=LOC_A) == \
            NOW.timestamp()
        assert metrics.value("carepulse_capacity_beds", location_id=LOC_A, state="vacant") == 1
        assert metrics.value("carepulse_capacity_max_beds", location_id=LOC_A) == 30
        # The gauges are for operations, like the indicator gauges: no small-number suppression.
        assert metrics.value("carepulse_capacity_people_receiving_care", location_id=LOC_B) == 3


def test_open_escalations_turn_overdue_on_the_timer_as_the_clock_passes_the_deadline(engine):
    seed(engine)
    clock = [NOW]
    metrics = FeedMetrics()
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: clock[0], metrics=metrics,
                          state_refresh_s=0.1)
    with TestClient(app):
        assert _open(metrics, LOC_B) == {"pending": 1, "overdue": 0, "acknowledged": 0}
        clock[0] = NOW + timedelta(minutes=30)  # the deadline itself counts as missed
        wait_for(lambda: _open(metrics, LOC_B) == {"pending": 0, "overdue": 1, "acknowledged": 0}, timeout_s=5)
        assert _open(metrics, LOC_B, "medium") == {"pending": 0, "overdue": 0, "acknowledged": 6}
        # The episode is resolved: the location keeps its series, at zero.
        with engine.begin() as conn:
            first = conn.execute(db.escalation_episodes.select().where(
                db.escalation_episodes.c.location_id == LOC_B, db.escalation_episodes.c.risk == "high")).first()
            resolved = escalation(LOC_B, first.resident_id, risk="high", status="resolved",
                                  episode_id=uuid.UUID(first.episode_id),
                                  occurred_at=NOW + timedelta(minutes=40))
            store_escalation(conn, resolved, now=NOW)
        wait_for(lambda: _open(metrics, LOC_B) == {"pending": 0, "overdue": 0, "acknowledged": 0}, timeout_s=5)


# -- HTTP --------------------------------------------------------------------------------------------------
@pytest.fixture
def sqlite_engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'feed.sqlite3'}")
    db.migrate(engine)
    yield engine
    engine.dispose()


def test_requests_are_counted_by_route_template_never_by_concrete_path(sqlite_engine):
    seed(sqlite_engine)
    metrics = FeedMetrics()
    app = create_feed_app(Settings(feed_consume=False), engine=sqlite_engine, now=lambda: NOW, metrics=metrics)
    provider_a = key(sqlite_engine, "provider:prov-a")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get(f"/v1/locations/{LOC_A}", headers=provider_a).status_code == 200
        assert client.get(f"/v1/locations/{LOC_B}", headers=provider_a).status_code == 404  # another tenant's
        assert client.get(f"/v1/locations/{LOC_A}").status_code == 401
        assert client.get(f"/v1/locations/{LOC_A}/indicators", headers=provider_a).status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/v1/no/such/path/res-a0").status_code == 404
        assert client.post("/health").status_code == 405

    def requests(route: str, method: str, status_class: str) -> float | None:
        return metrics.value("carepulse_feed_http_requests_total", route=route, method=method,
                             status_class=status_class)

    assert requests("/v1/locations/{location_id}", "GET", "2xx") == 1
    assert requests("/v1/locations/{location_id}", "GET", "4xx") == 2
    assert requests("/v1/locations/{location_id}/indicators", "GET", "2xx") == 1
    assert requests("/health", "GET", "2xx") == 1
    assert requests("/health", "POST", "4xx") == 1
    assert requests("other", "GET", "4xx") == 1
    assert metrics.value("carepulse_feed_http_request_duration_seconds_count", route="/v1/locations/{location_id}") == 3
    routes = {sample.labels["route"] for family in metrics.registry.collect() for sample in family.samples
              if sample.name == "carepulse_feed_http_requests_total"}
    assert routes == {"/v1/locations/{location_id}", "/v1/locations/{location_id}/indicators", "/health", "other"}


# -- `carepulse feed serve` and its /metrics --------------------------------------------------------------
def _feed_process(tmp_path, database_url: str, metrics_port: int) -> tuple[CarepulseProcess, str]:
    feed_port = free_port()
    process = CarepulseProcess(
        ["feed", "serve"], f"127.0.0.1:{free_port()}", tmp_path / "feed.log",
        {"CAREPULSE_DATA_DIR": str(tmp_path), "CAREPULSE_FEED_DATABASE_URL": database_url,
         "CAREPULSE_FEED_CONSUME": "false", "CAREPULSE_FEED_PORT": str(feed_port),
         "CAREPULSE_FEED_METRICS_PORT": str(metrics_port)},
    )
    return process.start(), f"http://127.0.0.1:{feed_port}"


def _stop(process: CarepulseProcess) -> None:
    """SIGTERM; uvicorn shuts the app down, then re-raises the signal (so the exit status is -SIGTERM)."""
    assert process.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in process.log()


def _wait_healthy(process: CarepulseProcess, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.process is not None and process.process.poll() is None, process.log()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the feed did not start:\n{process.log()}"
        time.sleep(0.1)


def test_feed_serve_exports_its_state_on_its_metrics_port(tmp_path, sqlite_engine):
    location = unique("loc-served")
    now = events.utc_now()
    with sqlite_engine.begin() as conn:
        store_indicator(conn, indicator_update(location, status="red", numerator=15, denominator=20), key=None, now=now)
        store_escalation(conn, escalation(location, "res-served-1", risk="high", occurred_at=now), now=now)
    metrics_port = free_port()
    process, url = _feed_process(tmp_path, str(sqlite_engine.url), metrics_port)
    try:
        _wait_healthy(process, url)
        response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    finally:
        _stop(process)
    assert response.status_code == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.text) for sample in family.samples}
    indicator = (("indicator_id", "escalation_timeliness"), ("location_id", location))
    assert samples[("carepulse_indicator_value", indicator)] == 75.0
    assert samples[("carepulse_indicator_status", indicator)] == 2
    high = {state: samples[("carepulse_escalations_open", (("location_id", location), ("risk", "high"),
                                                           ("state", state)))]
            for state in ("pending", "overdue", "acknowledged")}
    assert high == {"pending": 1, "overdue": 0, "acknowledged": 0}
    assert samples[("carepulse_feed_http_requests_total",
                    (("method", "GET"), ("route", "/health"), ("status_class", "2xx")))] >= 1
    assert ("carepulse_feed_events_in_total", (("topic", "escalations"),)) in samples
    assert not any(name.startswith(("carepulse_worker_", "carepulse_gateway_")) for name, _ in samples)


def test_a_feed_metrics_port_in_use_is_logged_and_the_feed_serves_without_it(tmp_path, sqlite_engine):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        metrics_port = occupant.getsockname()[1]
        process, url = _feed_process(tmp_path, str(sqlite_engine.url), metrics_port)
        try:
            _wait_healthy(process, url)
        finally:
            _stop(process)
    assert f"the feed metrics endpoint cannot listen on 127.0.0.1:{metrics_port}" in process.log()
