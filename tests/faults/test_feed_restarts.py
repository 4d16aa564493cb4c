"""The regulator feed SIGKILLed and its PostgreSQL server stopped under it, while indicators keep flowing
(issue 10, fault tests).

A real broker of the test's own, the feed as a real process (`carepulse feed serve`) on a throwaway PostgreSQL
cluster (``tests/feed/conftest.py``), and a publisher that, every tick, publishes what the worker would: for
each (location, indicator) the next current value on ``indicators`` and the next day's snapshot on
``indicators.history``, and each location's capacity on ``capacity``. Meanwhile:

1. the feed is SIGKILLed mid-stream (mid-batch, offsets of stored rows perhaps not yet committed) and started
   again in the same consumer group;
2. the PostgreSQL server is stopped (``pg_ctl stop -m fast``: every client connection dropped) for a few
   seconds and started again, with the same feed process running: while it is down every API read answers
   503 with a JSON sentence (and the log has a line for it, not a traceback), /health says the database is
   unavailable and the consumer reconnecting (it keeps its batch and commits nothing); once it is back the
   API answers again by itself and the consumer stores the batch it kept.

Afterwards the API serves, exactly once and with the published values, every snapshot key published, the
latest value of every current-indicator key and the latest capacity of every location. Losses must be zero.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest
from kafka import KafkaProducer

from carepulse import events, topics
from feed import auth, db
from tests.feed.conftest import PostgresCluster, indicator_update, location_capacity
from tests.kafka_helpers import CarepulseProcess, free_port, own_broker

pytestmark = pytest.mark.e2e

PROVIDER = "prov-feed-faults"
#: Two core indicators and one of issue 11's, at two locations.
INDICATORS = ("falls_rate", "escalation_timeliness", "carer_continuity")
TICK_S = 0.1
#: The first snapshot's day; tick n publishes day FIRST_DAY + n.
FIRST_DAY = date(2025, 1, 1)
DATABASE_DOWN_S = 4.0


class Publisher(threading.Thread):
    """Publishes a tick of updates every `TICK_S` until stopped, and keeps what the broker acknowledged: every
    snapshot by its key, and the newest current value and capacity by theirs."""

    def __init__(self, bootstrap: str, locations: list[str], started_at: datetime) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.locations = locations
        self.started_at = started_at
        self.snapshots: dict[tuple[str, str, str], events.IndicatorUpdate] = {}
        self.current: dict[tuple[str, str], events.IndicatorUpdate] = {}
        self.capacity: dict[str, events.LocationCapacity] = {}
        self.published: Counter[str] = Counter()
        self.ticks = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._tick(self.ticks)
                self.ticks += 1
                self._stopping.wait(TICK_S)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            self.producer.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)
        assert self.error is None, f"the publisher failed: {self.error!r}"

    def _tick(self, n: int) -> None:
        at = self.started_at + timedelta(seconds=n)  # event time moves one second per tick
        day = FIRST_DAY + timedelta(days=n)
        sent = []
        for location in self.locations:
            for indicator_id in INDICATORS:
                current = indicator_update(location, indicator_id, numerator=100 + n, denominator=1000 + n,
                                           window_end=at)
                snapshot = indicator_update(location, indicator_id, kind="daily_snapshot", numerator=200 + n,
                                            denominator=2000 + n,
                                            window_end=datetime.combine(day, datetime.min.time(), timezone.utc))
                sent.append((topics.INDICATORS.name, topics.indicator_key(location, indicator_id), current))
                sent.append((topics.INDICATORS_HISTORY.name,
                             topics.indicator_history_key(location, indicator_id, day.isoformat()), snapshot))
            vacant = n % 7
            sent.append((topics.CAPACITY.name, location, location_capacity(
                location, occurred_at=at, max_beds=40, occupied_beds=39 - vacant, reserved_beds=1,
                vacant_beds=vacant, over_max_beds=0)))
        futures = [(topic, key, event, self.producer.send(topic, key=key.encode(), value=events.to_json(event)))
                   for topic, key, event in sent]
        for topic, key, event, future in futures:
            future.get(timeout=30)  # acknowledged by the broker: now it counts as published
            self.published[topic] += 1
            if topic == topics.INDICATORS_HISTORY.name:
                self.snapshots[(event.location_id, event.indicator_id, key.rsplit("|", 1)[1])] = event
            elif topic == topics.INDICATORS.name:
                self.current[(event.location_id, event.indicator_id)] = event
            else:
                self.capacity[event.location_id] = event


class Feed:
    """`carepulse feed serve` on the test's database and broker; the same consumer group in every life."""

    def __init__(self, bootstrap: str, database_url: str, tmp_path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = CarepulseProcess(["feed", "serve"], bootstrap, tmp_path / "feed.log", {
            "CAREPULSE_FEED_DATABASE_URL": database_url, "CAREPULSE_FEED_PORT": str(self.port),
            "CAREPULSE_FEED_CONSUMER_GROUP": f"feed-faults-{uuid.uuid4().hex[:8]}",
            "CAREPULSE_DATA_DIR": str(tmp_path), "CAREPULSE_SESSION_TIMEOUT_S": "6",
            "CAREPULSE_HEARTBEAT_INTERVAL_S": "1",
        })

    def start(self) -> None:
        self.process.start()
        _until(lambda: self.health().get("consumer", {}).get("state") == "consuming", 60,
               "the feed to consume", self.process)

    def health(self) -> dict:
        try:
            response = httpx.get(f"{self.url}/health", timeout=5)
        except httpx.HTTPError:
            return {}
        return response.json() if response.status_code == 200 else {}

    def get(self, path: str, headers: dict, **params) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=headers, params=params, timeout=10)


def _until(condition, timeout_s: float, what: str, process: CarepulseProcess | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.process is not None and process.process.poll() is not None:
            raise AssertionError(f"the feed exited while waiting for {what}:\n{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _served_current(feed: Feed, headers: dict, location: str) -> dict[str, dict]:
    response = feed.get(f"/v1/locations/{location}/indicators", headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    ids = [item["indicator_id"] for item in items]
    assert len(ids) == len(set(ids)), f"an indicator served twice at {location}: {ids}"
    return {item["indicator_id"]: item for item in items}


def _served_history(feed: Feed, headers: dict, location: str, indicator_id: str) -> dict[str, dict]:
    items, offset = [], 0
    while offset is not None:
        response = feed.get(f"/v1/locations/{location}/indicators/{indicator_id}/history", headers,
                            **{"from": FIRST_DAY.isoformat(), "to": "2099-12-31", "limit": 500, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        offset = page["next_offset"]
    days = [item["day"] for item in items]
    assert len(days) == len(set(days)), f"a day of {location} {indicator_id} served twice"
    return {item["day"]: item for item in items}


def _losses(feed: Feed, headers: dict, publisher: Publisher) -> list[str]:
    """Every published key the API does not serve with its published (newest) values."""
    losses = []
    for location in publisher.locations:
        current = _served_current(feed, headers, location)
        for indicator_id in INDICATORS:
            want, got = publisher.current[(location, indicator_id)], current.get(indicator_id)
            if got is None or (got["numerator"], got["denominator"], got["window_end"]) != (
                    want.numerator, want.denominator, want.window_end.isoformat()):
                losses.append(f"current {location} {indicator_id}: {got and got['numerator']} != {want.numerator}")
            history = _served_history(feed, headers, location, indicator_id)
            for (loc, ind, day), snapshot in publisher.snapshots.items():
                if (loc, ind) != (location, indicator_id):
                    continue
                got = history.get(day)
                if got is None or (got["numerator"], got["denominator"]) != (snapshot.numerator, snapshot.denominator):
                    losses.append(f"snapshot {location} {indicator_id} {day}")
            extra = set(history) - {day for (loc, ind, day) in publisher.snapshots if (loc, ind) == (location, indicator_id)}
            losses += [f"snapshot never published {location} {indicator_id} {day}" for day in sorted(extra)]
        capacity = feed.get(f"/v1/locations/{location}/capacity", headers)
        want_capacity = publisher.capacity[location]
        if capacity.status_code != 200 or (capacity.json()["as_of"], capacity.json()["vacant_beds"]) != (
                want_capacity.occurred_at.isoformat(), want_capacity.vacant_beds):
            losses.append(f"capacity {location}")
    return losses


@pytest.mark.timeout(240)
def test_feed_killed_and_database_restarted_lose_no_indicator_history(tmp_path):
    started = time.monotonic()
    cluster = PostgresCluster()
    broker = None
    feed = publisher = None
    try:
        cluster.start()
        database_url = cluster.create_database()
        engine = db.make_engine(database_url)
        db.migrate(engine)
        locations = [f"loc-feed-faults-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
        now = events.utc_now().replace(microsecond=0)
        for location in locations:
            auth.register_location(engine, location, provider_id=PROVIDER, name=None, now=now)
        _, token = auth.create_key(engine, role=f"provider:{PROVIDER}", name="fault test", now=now)
        headers = {"Authorization": f"Bearer {token}"}
        engine.dispose()

        broker = own_broker(tmp_path / "broker.log")
        feed = Feed(broker.bootstrap, database_url, tmp_path)
        feed.start()
        publisher = Publisher(broker.bootstrap, locations, started_at=now - timedelta(hours=1))
        publisher.start()

        def newest_served() -> int:
            """The tick of the newest current value the API serves (-1: none yet, or no answer)."""
            response = feed.get(f"/v1/locations/{locations[0]}/indicators", headers)
            if response.status_code != 200:
                return -1
            return max((int(item["numerator"]) - 100 for item in response.json()["items"]), default=-1)

        # 1. SIGKILL the feed mid-stream, publish on while it is down, start it again.
        _until(lambda: newest_served() >= 20, 60, "the feed to store the first ticks", feed.process)
        feed.process.kill()
        killed_at_tick = publisher.ticks
        time.sleep(2)
        feed.start()
        _until(lambda: newest_served() > killed_at_tick + 10, 60, "the restarted feed to catch up", feed.process)

        # 2. Stop PostgreSQL under the running feed, publish on, start it again.
        cluster.stop("fast")
        down_at = time.monotonic()
        outage: Counter[str] = Counter()
        health_while_down: list[dict] = []
        while time.monotonic() - down_at < DATABASE_DOWN_S:
            response = feed.get(f"/v1/locations/{locations[0]}/indicators", headers)
            body = response.json()  # never a traceback: always JSON
            assert response.status_code == 503 and set(body) == {"error"} and "unavailable" in body["error"], (
                response.status_code, response.text[:300])
            outage[f"{response.status_code}"] += 1
            health_while_down.append(feed.health())
            time.sleep(0.2)
        cluster.start()
        back_at = time.monotonic()
        _until(lambda: feed.get(f"/v1/locations/{locations[0]}/indicators", headers).status_code == 200, 60,
               "the API to answer again", feed.process)
        recovered_s = time.monotonic() - back_at
        down_ticks_at = publisher.ticks
        _until(lambda: newest_served() > down_ticks_at, 60, "the consumer to store again", feed.process)
        time.sleep(1)
        publisher.stop()

        assert feed.process.process is not None and feed.process.process.poll() is None, "the feed died"
        assert all(h.get("database") == "unavailable" and h.get("status") == "degraded" for h in health_while_down)
        assert any(h["consumer"]["state"] == "reconnecting" for h in health_while_down), health_while_down[-1]
        deadline = time.monotonic() + 60
        while (losses := _losses(feed, headers, publisher)) and time.monotonic() < deadline:
            time.sleep(0.5)  # the consumer may still be catching up
        assert not losses, f"{len(losses)} losses, e.g. {losses[:5]}"
        health = feed.health()
        assert (health["status"], health["database"], health["consumer"]["state"]) == ("ok", "ok", "consuming")
        log = feed.process.log()
        # The outage is logged as sentences (one per refused read, one per retry), not a traceback each time.
        assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
        print(f"\nfeed restarts: published {sum(publisher.published.values())} events in {publisher.ticks} ticks "
              f"({dict(publisher.published)}); {len(publisher.snapshots)} snapshot keys, {len(publisher.current)} "
              f"current keys, {len(publisher.capacity)} capacity keys; restarts: feed SIGKILLed 1 (at tick "
              f"{killed_at_tick}), PostgreSQL stopped 1 ({DATABASE_DOWN_S:.0f} s): {sum(outage.values())} reads "
              f"answered {dict(outage)}, API back {recovered_s:.1f} s after the database; "
              f"consumer retries logged {log.count('feed database unavailable')}; losses 0, duplicates 0; "
              f"{time.monotonic() - started:.1f} s")
    finally:
        if publisher is not None and publisher.is_alive():
            publisher.stop()
        if feed is not None and feed.process.process is not None:
            feed.process.stop()
        if broker is not None:
            broker.stop()
        cluster.remove()
