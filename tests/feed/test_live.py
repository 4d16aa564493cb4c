"""End to end through the real broker: an event published on a topic (an indicator, an escalation, a
location's live capacity) reaches the API and the live stream (SQLite and PostgreSQL); the API keeps
answering when the broker is unreachable."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import httpx
import pytest

from carepulse import events, topics
from feed import auth
from tests.feed.conftest import (NOW, FeedServer, escalation, feed_settings, indicator_update, key, location_capacity,
                                 overdue, unique, wait_for)
from tests.kafka_helpers import free_port, produce


class SseClient:
    """Reads a server-sent event stream in a thread, collecting (event, data) pairs."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            self._read(url, headers)
        except httpx.HTTPError:
            pass  # the server shut down under the open stream at the end of the test

    def _read(self, url: str, headers: dict[str, str]) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=None)) as client:
            with client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                name = None
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and name:
                        self.events.append((name, json.loads(line.split(":", 1)[1])))

    def wait(self, predicate, timeout_s: float = 20.0) -> tuple[str, dict]:
        return wait_for(lambda: next((e for e in list(self.events) if predicate(*e)), None), timeout_s)

    def close(self) -> None:
        self._stop.set()


def subscribed(feed: FeedServer, keys: dict[str, dict[str, str]]) -> dict[str, SseClient]:
    """A live-stream client per key, each past its `ready` event, once the feed's consumer has partitions."""
    streams = {who: SseClient(f"{feed.url}/v1/stream", headers) for who, headers in keys.items()}
    for stream in streams.values():
        stream.wait(lambda name, data: name == "ready")
    wait_for(lambda: feed.consumer.state == "consuming" and feed.consumer.assigned_partitions)
    return streams


def test_published_events_reach_the_api_and_the_live_stream(broker, engine):
    location_a, location_b = unique("loc-a"), unique("loc-b")
    auth.register_location(engine, location_a, provider_id="prov-a", name="Alder", now=NOW)
    auth.register_location(engine, location_b, provider_id="prov-b", name="Birch", now=NOW)
    regulator, provider_a, provider_b = key(engine, "regulator"), key(engine, "provider:prov-a"), key(engine, "provider:prov-b")
    with FeedServer(feed_settings(broker.bootstrap), engine) as feed:
        streams = subscribed(feed, {"regulator": regulator, "a": provider_a, "b": provider_b})

        started = time.monotonic()
        change = indicator_update(location_a, status="amber", numerator=17, denominator=20)
        produce(broker.bootstrap, topics.INDICATORS.name,
                [(topics.indicator_key(location_a, change.indicator_id).encode(), events.to_json(change))])
        seen = streams["a"].wait(lambda name, data: name == "indicator" and data["location_id"] == location_a)
        latency_s = time.monotonic() - started
        assert seen[1]["value"] == 85.0 and seen[1]["status"] == "amber"
        current = httpx.get(f"{feed.url}/v1/locations/{location_a}/indicators", headers=provider_a).json()
        assert [(i["indicator_id"], i["value"]) for i in current["items"]] == [("escalation_timeliness", 85.0)]

        # A red alert: the indicator turns red, and a high-risk escalation is raised then missed.
        red = indicator_update(location_a, status="red", numerator=15, denominator=20, window_end=NOW.replace(hour=10))
        raised = escalation(location_a, "res-e2e-1", risk="high")
        produce(broker.bootstrap, topics.INDICATORS.name,
                [(topics.indicator_key(location_a, red.indicator_id).encode(), events.to_json(red))])
        produce(broker.bootstrap, topics.ESCALATIONS.name,
                [(b"res-e2e-1", events.to_json(raised)), (b"res-e2e-1", events.to_json(overdue(raised, NOW.replace(hour=10))))])
        alert = streams["a"].wait(lambda name, data: name == "red_alert" and data["alert"] == "indicator_red")
        assert alert[1]["location_id"] == location_a and alert[1]["value"] == 75.0
        high = streams["a"].wait(lambda name, data: name == "red_alert" and data["alert"] == "escalation_high")
        assert high[1]["resident_id"] == "res-e2e-1" and high[1]["risk"] == "high"
        streams["a"].wait(lambda name, data: name == "red_alert" and data["alert"] == "escalation_overdue")
        # The regulator gets the indicator alert, without resident-level alerts; provider B gets nothing of A.
        streams["regulator"].wait(lambda name, data: name == "red_alert" and data["location_id"] == location_a)
        time.sleep(0.5)
        assert not any("resident_id" in data for _, data in streams["regulator"].events)
        assert not any(data.get("location_id") == location_a for _, data in streams["b"].events)
        summary = httpx.get(f"{feed.url}/v1/escalations/summary?location_id={location_a}", headers=regulator).json()
        assert [(r["risk"], r["status"], r["episodes"]) for r in summary["items"]] == [
            ("high", "raised", "suppressed"), ("high", "overdue", "suppressed")]
        health = httpx.get(f"{feed.url}/health").json()
        assert health["consumer"]["state"] == "consuming" and health["live_subscribers"] == 3
        for stream in streams.values():
            stream.close()
    print(f"\nindicator published -> SSE client: {latency_s * 1000:.0f} ms")


def test_live_capacity_changes_reach_the_stream_with_the_api_view(broker, engine):
    """Issue 11's capacity on the live stream: each change once, in the view /v1/locations/{id}/capacity
    gives the same key (a small agency's people suppressed for the regulator, bed counts exact), only to
    keys that may see the location; a re-delivery or an older figure is not a change."""
    home, agency = unique("loc-home"), unique("loc-agency")
    auth.register_location(engine, home, provider_id="prov-a", name="Alder", now=NOW)
    auth.register_location(engine, agency, provider_id="prov-a", name="Alder at home", now=NOW)
    regulator, provider_a, provider_b = key(engine, "regulator"), key(engine, "provider:prov-a"), key(engine, "provider:prov-b")
    with FeedServer(feed_settings(broker.bootstrap), engine) as feed:
        streams = subscribed(feed, {"regulator": regulator, "a": provider_a, "b": provider_b})

        beds = location_capacity(home, max_beds=20, occupied_beds=18, reserved_beds=1, vacant_beds=1, over_max_beds=0)
        older = location_capacity(home, occurred_at=NOW - timedelta(hours=1), max_beds=20, occupied_beds=20,
                                  reserved_beds=0, vacant_beds=0, over_max_beds=0)
        people = location_capacity(agency, "homecare", people_receiving_care=3, planned_hours_7d=40.0,
                                   commissioned_hours_7d=50.0, commissioned_hours_not_planned=10.0)
        produce(broker.bootstrap, topics.CAPACITY.name,
                [(c.location_id.encode(), events.to_json(c)) for c in (beds, beds, older, people)])
        for who, headers in (("regulator", regulator), ("a", provider_a)):
            for location_id in (home, agency):
                _, seen = streams[who].wait(lambda name, data, loc=location_id: name == "capacity"
                                            and data["location_id"] == loc)
                served = httpx.get(f"{feed.url}/v1/locations/{location_id}/capacity", headers=headers).json()
                assert seen == served
        regulator_view = next(d for n, d in streams["regulator"].events if n == "capacity" and d["location_id"] == agency)
        provider_view = next(d for n, d in streams["a"].events if n == "capacity" and d["location_id"] == agency)
        assert (regulator_view["people_receiving_care"], regulator_view["suppressed"]) == ("suppressed", True)
        assert (provider_view["people_receiving_care"], provider_view["suppressed"]) == (3, False)
        home_view = next(d for n, d in streams["regulator"].events if n == "capacity" and d["location_id"] == home)
        assert (home_view["vacant_beds"], home_view["name"], home_view["provider_id"]) == (1, "Alder", "prov-a")
        time.sleep(0.5)
        # One event per change: the re-delivery and the older figure (an hour before) were not changes.
        assert [d["location_id"] for n, d in streams["a"].events if n == "capacity"].count(home) == 1
        assert not [d for n, d in streams["b"].events if n == "capacity"]
        for stream in streams.values():
            stream.close()


def test_the_api_answers_from_the_database_while_the_broker_is_unreachable(engine):
    auth.register_location(engine, "loc-offline", provider_id="prov-a", name=None, now=NOW)
    headers = key(engine, "provider:prov-a")
    with FeedServer(feed_settings(f"127.0.0.1:{free_port()}"), engine) as feed:
        assert httpx.get(f"{feed.url}/v1/locations", headers=headers).json()["total"] == 1
        health = wait_for(lambda: (h := httpx.get(f"{feed.url}/health").json())["consumer"]["state"] == "reconnecting" and h)
        assert health["status"] == "degraded" and health["database"] == "ok"
        assert httpx.get(f"{feed.url}/v1/locations/loc-offline", headers=headers).status_code == 200
