"""The demo's own parts: the rules file that switches the urinalysis pathway on for the demo's worker, and the
live view's summary of capacity and urinalysis, read from the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest

from carepulse import demo, events, topics
from carepulse.settings import Settings
from indicators import quality
from tests.kafka_helpers import produce


def test_the_demo_rules_switch_the_urinalysis_pathway_on_and_change_nothing_else(tmp_path):
    path = demo.demo_quality_rules(tmp_path)
    rules, packaged = quality.load_rules(path), quality.packaged_rules()
    assert (packaged.urinalysis_pathway.enabled, rules.urinalysis_pathway.enabled) == (False, True)
    assert rules.urinalysis_pathway.recommend_at_risks == packaged.urinalysis_pathway.recommend_at_risks
    assert rules.urinalysis_pathway.source.startswith("Switched on for the carepulse demo only, not signed off.")
    assert rules.version == f"{packaged.version}+demo-urinalysis"
    assert (rules.indicators, rules.default_target_ml) == (packaged.indicators, packaged.default_target_ml)
    assert path.parent == tmp_path


def stamped(model: type[events.Event], location_id: str, at_offset: timedelta = timedelta(0), **fields) -> events.Event:
    at = events.utc_now() + at_offset
    return model(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=events.Source(gateway_id="test"),
                 location_id=location_id, **fields)


def capacity(location_id: str, **fields) -> events.LocationCapacity:
    return stamped(events.LocationCapacity, location_id, profile_event_id=uuid.uuid4(), **fields)


@pytest.mark.parametrize("fields, expected", [
    (dict(setting="care_home", max_beds=40, occupied_beds=36, reserved_beds=2, vacant_beds=2, over_max_beds=0),
     "36 of 40 beds occupied, 2 held for residents in hospital, 2 vacant"),
    (dict(setting="care_home", max_beds=20, occupied_beds=20, reserved_beds=1, vacant_beds=0, over_max_beds=1),
     "20 of 20 beds occupied, 1 held for residents in hospital, 0 vacant, 1 over the maximum"),
    (dict(setting="homecare", people_receiving_care=36, planned_hours_7d=443.6, commissioned_hours_7d=460.0,
          commissioned_hours_not_planned=16.4),
     "36 people, 444 h planned in 7 days of 460 commissioned (16 h spare)"),
    (dict(setting="homecare", people_receiving_care=12, planned_hours_7d=130.0, commissioned_hours_7d=120.0,
          commissioned_hours_not_planned=-10.0),
     "12 people, 130 h planned in 7 days of 120 commissioned (10 h beyond them)"),
    (dict(setting="homecare", people_receiving_care=3, planned_hours_7d=20.0),
     "3 people, 20 h planned in 7 days (no commissioned hours known)"),
])
def test_capacity_in_words(fields, expected):
    assert demo.describe_capacity(capacity("loc-x", **fields)) == expected


def recommendation(location_id: str, episode_id: uuid.UUID, status: str, **fields) -> events.UrinalysisRecommendation:
    now = events.utc_now()
    return stamped(events.UrinalysisRecommendation, location_id, resident_id="res-test-001", episode_id=episode_id,
                   status=status, risk="medium", recommended_at=now, due_at=now + timedelta(hours=6),
                   rules_version="test", **fields)


def test_the_live_view_summarises_capacity_and_urinalysis_from_the_broker(broker, capsys):
    home, agency = f"loc-demo-test-{uuid.uuid4().hex[:6]}", f"loc-demo-test-{uuid.uuid4().hex[:6]}"
    older = capacity(home, at_offset=-timedelta(minutes=1), setting="care_home", max_beds=40, occupied_beds=40,
                     reserved_beds=0, vacant_beds=0, over_max_beds=0)
    newer = capacity(home, setting="care_home", max_beds=44, occupied_beds=40, reserved_beds=1, vacant_beds=3,
                     over_max_beds=0)
    load = capacity(agency, setting="homecare", people_receiving_care=16, planned_hours_7d=182.0,
                    commissioned_hours_7d=240.0, commissioned_hours_not_planned=58.0)
    tested, upgraded = uuid.uuid4(), uuid.uuid4()
    actions = [recommendation(home, tested, "recommended"), recommendation(home, upgraded, "recommended"),
               recommendation(home, tested, "done", result_event_id=uuid.uuid4(), tested_at=events.utc_now(),
                              on_time=True),
               recommendation(home, upgraded, "withdrawn")]
    produce(broker.bootstrap, topics.CAPACITY.name,
            [(e.location_id.encode(), events.to_json(e)) for e in (newer, older, load)])
    produce(broker.bootstrap, topics.URINALYSIS.name, [(b"res-test-001", events.to_json(e)) for e in actions])

    stopping = threading.Event()
    watcher = threading.Thread(target=demo._watch, args=(Settings(kafka_bootstrap=broker.bootstrap),
                                                         time.monotonic(), stopping, 0.5))
    watcher.start()
    printed = ""
    expected_home = ("             capacity: 40 of 44 beds occupied, 1 held for residents in hospital, 3 vacant; "
                     "urinalysis: 2 amber episodes: 1 tested (1 on time), 0 not tested by the target, 1 withdrawn "
                     "(upgraded to high), 0 awaiting a test\n")
    expected_agency = ("             capacity: 16 people, 182 h planned in 7 days of 240 commissioned (58 h spare)\n")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (expected_home in printed and expected_agency in printed):
            time.sleep(0.5)
            printed += capsys.readouterr().out
    finally:
        stopping.set()
        watcher.join(timeout=10)
    assert f"           {home}: insufficient data so far\n{expected_home}" in printed
    assert f"           {agency}: insufficient data so far\n{expected_agency}" in printed
    # Actions of the last minutes are also printed as they come.
    assert f"URINALYSIS withdrawn for res-test-001 at {home} (medium NEWS2 episode): upgraded to high risk" in printed
    assert not watcher.is_alive()
