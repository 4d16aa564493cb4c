"""Three weeks of care at three locations, played through the real broker and a real worker with late,
duplicated and out-of-order delivery: every indicator the worker publishes, and each location's live
capacity, equals the batch recomputation (indicators/recompute.py) over the same log (issues: rolling core
quality indicators; issue 11's continuity of carers, travel between visits, urinalysis timeliness and
capacity).

The log holds what staff, devices and providers record (location profiles, admissions, drinks, falls, call
bells, visits, NEWS2 observation sets, acknowledgements, urinalysis results); the worker derives NEWS2
results and escalations from it, and those are read back and given to the oracle too, as an auditor would
read them from the topics. The worker runs with the urinalysis pathway switched on (generated from the
packaged rules), so it streams urinalysis timeliness as well.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from carepulse import care_history, events, topics
from carepulse.care_history import CareActivity, delivery_with_faults, topic_and_key
from indicators import quality
from indicators.quality import ALL_INDICATOR_IDS, IndicatorValue
from indicators.recompute import capacity, recompute
from streams.location import last_midnight
from tests.kafka_helpers import WorkerProcess, parse_all, read_topic

pytestmark = pytest.mark.e2e

DAYS = 21


class TopicReader:
    """Everything on some topics since the beginning, read a little more at each call."""

    def __init__(self, bootstrap: str, *names: str) -> None:
        self.consumer = KafkaConsumer(*names, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False)
        self.records: list = []

    def read(self) -> list:
        while batch := self.consumer.poll(timeout_ms=500):
            for records in batch.values():
                self.records.extend(records)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def published_form(value: IndicatorValue) -> dict:
    return {"window_start": value.window_start, "window_end": value.window_end, "numerator": value.numerator,
            "denominator": value.denominator, "value": value.value, "status": value.status.value,
            "details": json.loads(json.dumps(value.details)), "rules_version": value.rules_version}


def as_published(update: events.IndicatorUpdate) -> dict:
    return {"window_start": update.window_start, "window_end": update.window_end, "numerator": update.numerator,
            "denominator": update.denominator, "value": update.value, "status": update.status,
            "details": update.details, "rules_version": update.rules_version}


def pathway_on(path: Path) -> Path:
    """The packaged quality rules with the urinalysis pathway switched on, written to `path`."""
    text = resources.files("indicators").joinpath("config/quality.toml").read_text()
    text, switched = text.replace("enabled = { value = false,", "enabled = { value = true,"), \
        text.count("enabled = { value = false,")
    assert switched == 1, "the packaged quality.toml changed layout; update this test"
    path.write_text(text)
    assert quality.load_rules(path).urinalysis_pathway.enabled
    return path


@pytest.fixture
def care_log():
    suffix = uuid.uuid4().hex[:6]
    # The care homes follow the urinalysis pathway and the agency states its commissioned hours, so that
    # urinalysis timeliness and the agency's capacity have something to show.
    profiles = [dataclasses.replace(p, location_id=f"{p.location_id}-{suffix}",
                                    **({"urinalysis_share": 0.8} if p.kind == "care_home" else
                                       {"commissioned_hours_per_week": 150.0}))
                for p in care_history.replay_profiles()]
    now = events.utc_now().replace(second=0, microsecond=0)
    log = CareActivity(profiles, start=now - timedelta(days=DAYS), seed=11).advance(now - timedelta(minutes=2))
    return [p.location_id for p in profiles], log


def test_every_published_indicator_equals_the_batch_recomputation(broker, tmp_path, care_log):
    locations, log = care_log
    delivered = delivery_with_faults(log, seed=3)
    assert len(delivered) > len(log)  # some events arrive twice
    # A fault of our own: a drink dated a day ahead (a tablet with a wrong clock) must be dead-lettered,
    # not move the location's windows into the future.
    drink = next(e for e in log if isinstance(e, events.FluidIntake))
    from_the_future = drink.model_copy(update={"event_id": uuid.uuid4(),
                                               "occurred_at": events.utc_now() + timedelta(days=1)})
    delivered.insert(len(delivered) // 2, from_the_future)
    assert {type(e) for e in log} >= {events.LocationProfile, events.UrinalysisResult}
    rules = pathway_on(tmp_path / "quality.toml")
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log",
                           worker_id=f"e2e-indicators-{uuid.uuid4().hex[:8]}",
                           extra_env={"CAREPULSE_QUALITY_RULES_PATH": str(rules)}).start()
    readers = {name: TopicReader(broker.bootstrap, name) for name in
               (topics.INDICATORS.name, topics.INDICATORS_HISTORY.name, topics.NEWS2_SCORES.name,
                topics.ESCALATIONS.name, topics.CAPACITY.name)}
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        for event in delivered:
            spec, key = topic_and_key(event)
            producer.send(spec.name, key=key.encode(), value=events.to_json(event))
        producer.flush(timeout=60)
        producer.close()

        ours = set(locations)
        deadline = time.monotonic() + 300
        mismatches: list = ["nothing published yet"]
        while mismatches and time.monotonic() < deadline:
            time.sleep(3)
            derived = [e for e in parse_all([r.value for name in (topics.NEWS2_SCORES.name, topics.ESCALATIONS.name)
                                             for r in readers[name].read()])
                       if e.location_id in ours]
            current = latest_by_key(readers[topics.INDICATORS.name].read(), ours)
            capacities = latest_by_key(readers[topics.CAPACITY.name].read(), ours)
            mismatches = compare(current, log + derived, ours) or compare_capacity(capacities, current,
                                                                                    log + derived, ours)
        assert not mismatches, f"{mismatches[:3]}\n{worker.log()[-3000:]}"

        # The snapshot at the last local midnight, corrected by events that arrived after it was first taken.
        history = latest_by_key(readers[topics.INDICATORS_HISTORY.name].read(), ours)
        midnight = last_midnight(max(u.window_end for u in current.values()))
        snapshots = {key: u for key, u in history.items() if u.window_end == midnight}
        assert len(snapshots) == len(ours) * len(ALL_INDICATOR_IDS)
        expected = {(v.location_id, v.indicator_id): published_form(v)
                    for v in recompute(log + derived, as_of=midnight, indicator_ids=ALL_INDICATOR_IDS)
                    if v.location_id in ours}
        assert {(u.location_id, u.indicator_id): as_published(u) for u in snapshots.values()} == expected

        # Issue 11's indicators have data to show: the agency's continuity and travel, the homes' urinalyses.
        denominators = {(u.location_id, u.indicator_id): u.denominator for u in current.values()}
        homeway, *homes = (next(loc for loc in locations if name in loc) for name in ("homeway", "birches", "hollies"))
        assert min(denominators[(homeway, "carer_continuity")], denominators[(homeway, "travel_time")]) >= 5
        assert sum(denominators[(home, "urinalysis_timeliness")] for home in homes) >= 3

        # The audit path: export the topics with the CLI, recompute with the CLI under the worker's rules file,
        # get the same numbers for every indicator the worker published.
        exported = tmp_path / "exported.jsonl"
        with exported.open("w") as out:
            for spec in (topics.LOCATION_PROFILES, topics.RESIDENTS, topics.CARE_EVENTS, topics.CLINICAL_ACTIONS,
                         topics.NEWS2_SCORES, topics.ESCALATIONS):
                subprocess.run([sys.executable, "-m", "carepulse", "tail", spec.name, "--from-beginning", "--to-end"],
                               stdout=out, check=True, timeout=120,
                               env={**os.environ, "CAREPULSE_KAFKA_BOOTSTRAP": broker.bootstrap})
        # Locations are evaluated at their own instants (each at most every CAREPULSE_INDICATORS_REFRESH_S).
        for as_of in sorted({u.window_end for u in current.values()}):
            audit = subprocess.run([sys.executable, "-m", "carepulse", "indicators", "recompute", str(exported),
                                    "--json", "--as-of", as_of.strftime("%Y-%m-%dT%H:%M:%S%z"), "--rules", str(rules)],
                                   capture_output=True, text=True, check=True, timeout=120)
            published = {(u.location_id, u.indicator_id): (u.numerator, u.denominator, u.status)
                         for u in current.values() if u.window_end == as_of}
            audited = {(v["location_id"], v["indicator_id"]): (v["numerator"], v["denominator"], v["status"])
                       for v in map(json.loads, audit.stdout.splitlines())
                       if (v["location_id"], v["indicator_id"]) in published}
            assert audited == published

        letters = parse_all(read_topic(broker.bootstrap, topics.DEAD_LETTERS.name, timeout_s=30,
                                       until=lambda vs: str(from_the_future.event_id).encode() in b"".join(vs)),
                            skip_invalid=True)
        reasons = [d.reason for d in letters if str(from_the_future.event_id) in d.original_payload]
        assert reasons and "in the future" in reasons[0]
        assert max(u.window_end for u in current.values()) <= events.utc_now()

        statuses = {u.status for u in current.values()}
        assert {"green", "red", "insufficient_data"} <= statuses, statuses
    finally:
        for reader in readers.values():
            reader.close()
        worker.stop()


def latest_by_key(records: list, locations: set[str]) -> dict[str, events.Event]:
    latest: dict[str, events.Event] = {}
    for record in records:
        event = events.any_event_adapter.validate_json(record.value)
        if event.location_id in locations:
            latest[record.key.decode()] = event
    return latest


def compare(current: dict[str, events.IndicatorUpdate], log: list, locations: set[str]) -> list:
    """What differs between each location's published indicators and the oracle at their instant."""
    by_location = defaultdict(dict)
    for update in current.values():
        by_location[update.location_id][update.indicator_id] = update
    mismatches = []
    oracle_cache: dict = {}
    for location_id in sorted(locations):
        published = by_location.get(location_id, {})
        if set(published) != set(ALL_INDICATOR_IDS):
            mismatches.append((location_id, "indicators missing", sorted(set(ALL_INDICATOR_IDS) - set(published))))
            continue
        for indicator_id, update in published.items():
            as_of = update.window_end
            if as_of not in oracle_cache:
                oracle_cache[as_of] = {(v.location_id, v.indicator_id): v
                                       for v in recompute(log, as_of=as_of, indicator_ids=ALL_INDICATOR_IDS)}
            expected = oracle_cache[as_of].get((location_id, indicator_id))
            if expected is None or published_form(expected) != as_published(update):
                mismatches.append((location_id, indicator_id, as_published(update),
                                   expected and published_form(expected)))
    return mismatches


def compare_capacity(capacities: dict[str, events.LocationCapacity], current: dict[str, events.IndicatorUpdate],
                     log: list, locations: set[str]) -> list:
    """What differs between each location's latest published capacity and the oracle's at the location's
    last evaluation (the newest window end of its indicators: every evaluation slides their windows, and
    capacity is published when it changed at an evaluation), with the profile it came from."""
    evaluated_at: dict[str, datetime] = {}
    for update in current.values():
        evaluated_at[update.location_id] = max(evaluated_at.get(update.location_id, update.window_end),
                                               update.window_end)
    profiles = [e for e in log if isinstance(e, events.LocationProfile)]
    mismatches = []
    for location_id in sorted(locations):
        published = capacities.get(location_id)
        if published is None or location_id not in evaluated_at:
            mismatches.append((location_id, "no capacity yet"))
            continue
        as_of = evaluated_at[location_id]
        [expected] = [c for c in capacity(log, as_of=as_of) if c.location_id == location_id]
        figures = {name: value for name, value in dataclasses.asdict(expected).items()
                   if name not in ("location_id", "at")}
        newest_profile = max((p for p in profiles if p.location_id == location_id
                              and p.occurred_at < as_of), key=lambda p: (p.occurred_at, str(p.event_id)))
        if (published.model_dump(include=set(figures)) != figures or published.occurred_at > as_of
                or published.profile_event_id != newest_profile.event_id):
            mismatches.append((location_id, "capacity", published, expected))
    return mismatches
