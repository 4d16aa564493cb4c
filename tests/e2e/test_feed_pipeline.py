"""The whole way to the regulator feed: events in, a real worker process, the feed consuming what the worker
publishes (real broker, SQLite): a red NEWS2 score reaches the provider's live stream as a red alert, and
the care events of a location become its indicators in the API and on the live stream (issue: feed)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import create_engine

from carepulse import events, topics
from feed import auth, db
from indicators.quality import INDICATOR_IDS
from tests.factories import RED_VITALS, observation_set, unique_resident
from tests.feed.conftest import FeedServer, feed_settings, key, unique, wait_for
from tests.feed.test_live import SseClient
from tests.kafka_helpers import WorkerProcess, produce

pytestmark = pytest.mark.e2e


def test_the_workers_red_alert_and_indicators_reach_the_feed(broker, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'feed.sqlite3'}")
    db.migrate(engine)
    location = unique("loc-feed-e2e")
    auth.register_location(engine, location, provider_id="prov-e2e", name="E2E House", now=events.utc_now())
    provider = key(engine, "provider:prov-e2e")
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", worker_id=f"e2e-feed-{uuid.uuid4().hex[:8]}")
    with FeedServer(feed_settings(broker.bootstrap), engine) as feed:
        stream = SseClient(f"{feed.url}/v1/stream", provider)
        stream.wait(lambda name, data: name == "ready")
        worker.start()
        try:
            now = events.utc_now()
            resident = unique_resident()
            red = observation_set(resident, location_id=location, occurred_at=now, **RED_VITALS)
            produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(red))])
            drink = events.FluidIntake(
                event_id=uuid.uuid4(), occurred_at=now - timedelta(minutes=5), received_at=now,
                source=events.Source(gateway_id="gw-test"), location_id=location, resident_id=resident,
                offered_ml=200, consumed_ml=150, method="carer", recorded_by="carer-1")
            produce(broker.bootstrap, topics.CARE_EVENTS.name, [(location.encode(), events.to_json(drink))])

            name, alert = stream.wait(lambda name, data: name == "red_alert" and data.get("resident_id") == resident,
                                      timeout_s=90)
            assert (alert["alert"], alert["risk"], alert["status"], alert["location_id"]) == (
                "escalation_high", "high", "raised", location), alert

            stream.wait(lambda name, data: name == "indicator" and data["location_id"] == location, timeout_s=60)
            current = wait_for(lambda: _indicators(feed.url, location, provider), timeout_s=60)
            assert sorted(i["indicator_id"] for i in current) == sorted(INDICATOR_IDS)
            # One drink offered: hydration consumed vs offered is 150 of 200 mL, below its minimum denominator.
            hydration = next(i for i in current if i["indicator_id"] == "hydration_consumed_vs_offered")
            assert hydration["status"] == "insufficient_data" and hydration["denominator"] in (0, 200)
        finally:
            stream.close()
            worker.stop()


def _indicators(url: str, location: str, headers: dict) -> list | None:
    response = httpx.get(f"{url}/v1/locations/{location}/indicators", headers=headers)
    items = response.json().get("items", []) if response.status_code == 200 else []
    return items if len(items) == len(INDICATOR_IDS) else None
