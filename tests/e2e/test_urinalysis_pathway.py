"""The urinalysis pathway (issue 11) through a real broker, a real worker process and the tablet intake.

The worker runs with the packaged quality rules, the pathway switched on and a 60 s target (generated from
the packaged file at test time, so it follows it; the packaged pathway is off pending clinical-safety
sign-off: dipstick diagnosis of UTI is not recommended over 65, cqc_domain.md §2.2 row 13, [U3]). Each
scenario's amber episode is dated 15 minutes ago, so its due time has passed on the wall clock and the
worker judges it as soon as its inputs are quiet. Results are posted to the gateway's tablet intake.

One location, five residents: a result in time (done, on time); none (not done); an upgrade to high first
(withdrawn); none until after ``not_done`` was published (done, late); and a result with no episode (no
action). The location's ``urinalysis_timeliness`` counts 1 on time of 3 judged (the withdrawn episode is not
judged). With the pathway off (packaged rules), nothing is published on ``urinalysis``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from carepulse import events, topics
from gateway.buffer import DurableBuffer
from gateway.intake import create_intake_app
from gateway.publisher import Publisher
from gateway.registry import Registry
from indicators import quality
from tests.factories import RED_VITALS, observation_set, unique_resident
from tests.kafka_helpers import WorkerProcess, own_broker, parse_all, produce, read_topic

pytestmark = pytest.mark.e2e

TARGET_S = 60
AMBER = dict(respiration_rate=22, pulse=115, temperature=38.5)  # 2 + 2 + 1 = 5: medium


def pathway_rules(path: Path) -> Path:
    """The packaged quality rules with the urinalysis pathway on and a `TARGET_S` target, written to `path`."""
    text = resources.files("indicators").joinpath("config/quality.toml").read_text()
    text, switched = re.subn(r"(\[urinalysis_pathway\]\nenabled = \{ value = )false", r"\1true", text)
    text, targeted = re.subn(r"(\[indicators\.urinalysis_timeliness\.parameters\]\ntarget_s = \{ value = )\d+",
                             rf"\g<1>{TARGET_S}", text)
    assert (switched, targeted) == (1, 1), "the packaged quality.toml changed layout; update this test"
    path.write_text(text)
    rules = quality.load_rules(path)
    assert (rules.urinalysis_pathway.enabled, rules["urinalysis_timeliness"].parameters["target_s"]) == (True,
                                                                                                         TARGET_S)
    return path


@dataclass(frozen=True)
class Scenario:
    bootstrap: str
    location: str
    recommended_at: datetime
    residents: dict[str, str]  # case -> resident id
    result_ids: dict[str, uuid.UUID]  # case -> the result posted for it
    worker: WorkerProcess


def _actions(values: list[bytes], resident: str) -> list[events.UrinalysisRecommendation]:
    """The resident's actions, once each (at-least-once delivery may repeat an id), in topic order."""
    distinct: dict[uuid.UUID, events.UrinalysisRecommendation] = {}
    for event in parse_all(values):
        if isinstance(event, events.UrinalysisRecommendation) and event.resident_id == resident:
            distinct.setdefault(event.event_id, event)
    return list(distinct.values())


def _read_actions(bootstrap: str, resident: str, until: Callable[[list], bool], timeout_s: float = 45,
                  settle_s: float = 2) -> list[events.UrinalysisRecommendation]:
    values = read_topic(bootstrap, topics.URINALYSIS.name, timeout_s=timeout_s, settle_s=settle_s,
                        until=lambda vs: until(_actions(vs, resident)))
    return _actions(values, resident)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("urinalysis")
    broker = own_broker(root / "broker.log")
    worker = WorkerProcess(broker.bootstrap, root / "worker.log", "e2e-urinalysis", {
        "CAREPULSE_QUALITY_RULES_PATH": str(pathway_rules(root / "quality-urinalysis.toml")),
        "CAREPULSE_INDICATORS_REFRESH_S": "1", "CAREPULSE_INDICATORS_WALL_CLOCK_LAG_S": "0",
    }).start()
    registry = Registry(root / "registry.sqlite")
    publisher = Publisher(broker.bootstrap, DurableBuffer(root / "buffer.sqlite")).start()
    try:
        location = f"loc-uri-{uuid.uuid4().hex[:8]}"
        residents = {case: unique_resident(case) for case in ("on-time", "missing", "upgraded", "late", "no-episode")}
        for resident in residents.values():
            registry.add_resident(resident, location)
        token = registry.provision_tablet("tab-uri", location)
        intake = TestClient(create_intake_app(registry, publisher, gateway_id="gw-uri"),
                            headers={"Authorization": f"Bearer {token}"})
        recommended_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=15)

        def post_result(case: str, at: datetime) -> uuid.UUID:
            response = intake.post(f"/v1/residents/{residents[case]}/urinalysis", json={
                "occurred_at": at.isoformat(), "recorded_by": "nurse-1", "reader": "smartphone_reader",
                "leukocytes": "+", "nitrites": "negative", "blood": "negative", "protein": "trace"})
            assert response.status_code == 202, response.text
            return uuid.UUID(response.json()["event_id"])

        sets = [observation_set(residents[case], location_id=location, occurred_at=recommended_at, **AMBER)
                for case in ("on-time", "missing", "upgraded", "late")]
        sets.append(observation_set(residents["upgraded"], location_id=location,
                                    occurred_at=recommended_at + timedelta(seconds=30), **RED_VITALS))
        produce(broker.bootstrap, topics.OBSERVATION_SETS.name,
                [(s.resident_id.encode(), events.to_json(s)) for s in sets])
        result_ids = {"on-time": post_result("on-time", recommended_at + timedelta(seconds=30)),
                      "no-episode": post_result("no-episode", recommended_at)}
        # The late result is taken only once the worker has published that none was done in time.
        missed = _read_actions(broker.bootstrap, residents["late"], settle_s=0,
                               until=lambda actions: any(a.status == "not_done" for a in actions))
        assert [a.status for a in missed] == ["recommended", "not_done"], worker.log()[-3000:]
        result_ids["late"] = post_result("late", recommended_at + timedelta(seconds=2 * TARGET_S))
        intake.close()
        yield Scenario(broker.bootstrap, location, recommended_at, residents, result_ids, worker)
    finally:
        publisher.stop(drain_timeout_s=30)
        registry.close()
        worker.stop()
        broker.stop()


def _summary(actions: list[events.UrinalysisRecommendation]) -> list[tuple]:
    return [(a.status, a.on_time, a.occurred_at, a.result_event_id) for a in actions]


def test_an_amber_score_recommends_and_a_result_in_time_closes_it(scenario):
    r, due = scenario.recommended_at, scenario.recommended_at + timedelta(seconds=TARGET_S)
    actions = _read_actions(scenario.bootstrap, scenario.residents["on-time"], until=lambda a: len(a) >= 2)
    assert _summary(actions) == [("recommended", None, r, None),
                                 ("done", True, r + timedelta(seconds=30), scenario.result_ids["on-time"])], (
        scenario.worker.log()[-3000:])
    assert {(a.risk, a.recommended_at, a.due_at, a.rules_version) for a in actions} == {
        ("medium", r, due, "carepulse-quality.2")}


def test_a_missing_result_is_not_done_once_the_due_time_passes(scenario):
    r, due = scenario.recommended_at, scenario.recommended_at + timedelta(seconds=TARGET_S)
    actions = _read_actions(scenario.bootstrap, scenario.residents["missing"], until=lambda a: len(a) >= 2)
    assert _summary(actions) == [("recommended", None, r, None), ("not_done", None, due, None)]


def test_an_upgrade_to_high_before_a_result_withdraws_it(scenario):
    r = scenario.recommended_at
    actions = _read_actions(scenario.bootstrap, scenario.residents["upgraded"], until=lambda a: len(a) >= 2)
    assert _summary(actions) == [("recommended", None, r, None), ("withdrawn", None, r + timedelta(seconds=30), None)]


def test_a_result_after_not_done_is_recorded_as_done_late(scenario):
    r, due = scenario.recommended_at, scenario.recommended_at + timedelta(seconds=TARGET_S)
    actions = _read_actions(scenario.bootstrap, scenario.residents["late"], until=lambda a: len(a) >= 3)
    assert _summary(actions) == [("recommended", None, r, None), ("not_done", None, due, None),
                                 ("done", False, r + timedelta(seconds=2 * TARGET_S), scenario.result_ids["late"])]


def test_a_result_without_an_episode_is_accepted_and_changes_no_action(scenario):
    results = read_topic(scenario.bootstrap, topics.CLINICAL_ACTIONS.name, timeout_s=30,
                         until=lambda vs: scenario.result_ids["no-episode"] in {e.event_id for e in parse_all(vs)})
    assert scenario.result_ids["no-episode"] in {e.event_id for e in parse_all(results)}
    assert _read_actions(scenario.bootstrap, scenario.residents["no-episode"], until=lambda a: False,
                         timeout_s=3) == []


def test_the_location_counts_the_missing_and_the_late_urinalysis(scenario):
    """urinalysis_timeliness at the location: on time 1 (the result in time) of 3 judged (the missing one and
    the late one count against it; the withdrawn one is not judged; none is pending)."""

    def updates(values: list[bytes]) -> list[events.IndicatorUpdate]:
        return sorted((e for e in parse_all(values) if isinstance(e, events.IndicatorUpdate)
                       and e.location_id == scenario.location and e.indicator_id == "urinalysis_timeliness"),
                      key=lambda e: e.window_end)

    def counted(values: list[bytes]) -> bool:
        latest = updates(values)[-1:]
        return bool(latest) and (latest[0].numerator, latest[0].denominator) == (1, 3)

    values = read_topic(scenario.bootstrap, topics.INDICATORS.name, timeout_s=45, until=counted)
    latest = updates(values)[-1:]
    assert [(u.numerator, u.denominator, u.details.get("pending"), u.details.get("upgraded_to_high"), u.status)
            for u in latest] == [(1, 3, 0, 1, "insufficient_data")], scenario.worker.log()[-3000:]


def test_with_the_pathway_off_nothing_is_published_on_urinalysis(tmp_path):
    broker = own_broker(tmp_path / "broker.log")
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", "e2e-urinalysis-off").start()
    try:
        resident = unique_resident("off")
        at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=15)
        amber = observation_set(resident, occurred_at=at, **AMBER)
        produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(amber))])
        escalations = read_topic(broker.bootstrap, topics.ESCALATIONS.name, timeout_s=60, until=lambda vs: any(
            isinstance(e, events.Escalation) and e.resident_id == resident for e in parse_all(vs)))
        assert [(e.status, e.risk) for e in parse_all(escalations) if isinstance(e, events.Escalation)] == [
            ("raised", "medium")], worker.log()[-3000:]
        # The episode is raised and the worker runs on, yet not even the recommendation appears.
        assert read_topic(broker.bootstrap, topics.URINALYSIS.name, timeout_s=5, until=lambda vs: False) == []
    finally:
        worker.stop()
        broker.stop()
