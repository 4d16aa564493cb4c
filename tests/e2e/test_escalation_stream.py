"""The NEWS2 escalation stream through a real broker and real worker processes."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kafka import KafkaProducer

from carepulse import events, topics
from carepulse.broker import EmbeddedBroker, ensure_topics
from carepulse.settings import Settings
from tests.factories import NORMAL_VITALS, RED_VITALS, observation_set, unique_resident
from tests.kafka_helpers import WorkerProcess, free_port, parse_all, produce, read_topic

pytestmark = pytest.mark.e2e

FAST_RULES = Path(__file__).with_name("fast_escalation.toml")
SOURCE = events.Source(gateway_id="gw-test", device_id="dev-test")


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    process = WorkerProcess(
        broker.bootstrap, tmp_path_factory.mktemp("worker") / "worker.log", worker_id="e2e-escalation",
        extra_env={"CAREPULSE_ESCALATION_RULES_PATH": str(FAST_RULES)},
    ).start()
    yield process
    if process.process is not None:
        process.stop()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _reading(resident: str, at: datetime, characteristic: str, values: dict) -> events.DeviceReading:
    return events.DeviceReading(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id="loc-e2e",
        resident_id=resident, characteristic=characteristic, values=values,
    )


def _manual(resident: str, at: datetime, **values) -> events.ManualObservation:
    return events.ManualObservation(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id="loc-e2e",
        resident_id=resident, recorded_by="carer-1", **values,
    )


def _acknowledgement(resident: str, at: datetime) -> events.EscalationAcknowledgement:
    return events.EscalationAcknowledgement(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id="loc-e2e",
        resident_id=resident, acknowledged_by="nurse-1", action="GP called",
    )


def _publish(bootstrap: str, spec: topics.TopicSpec, items: list[events.ResidentEvent]) -> None:
    produce(bootstrap, spec.name, [(e.resident_id.encode(), events.to_json(e)) for e in items])


def _of(values: list[bytes], resident: str, *types: type) -> list:
    return [e for e in parse_all(values) if isinstance(e, types) and getattr(e, "resident_id", None) == resident]


def _escalations(bootstrap: str, resident: str, until, timeout_s: float = 60, settle_s: float = 2) -> list:
    values = read_topic(bootstrap, topics.ESCALATIONS.name, timeout_s=timeout_s, settle_s=settle_s,
                        until=lambda vs: until(_of(vs, resident, events.Escalation, events.EscalationOverdue)))
    return _of(values, resident, events.Escalation, events.EscalationOverdue)


def _red_round(resident: str, at: datetime) -> list[events.ResidentEvent]:
    """Three devices and the tablet: SpO2 90 (3), pulse 125 (2), SBP 95 (2), 39.2 C (2), RR 26 (3), new confusion (3)."""
    return [
        _reading(resident, at, "plx_spot_check_measurement", {"spo2_pct": 90.0, "pulse_rate_bpm": 125.0}),
        _reading(resident, at + timedelta(seconds=40), "blood_pressure_measurement",
                 {"systolic_mmhg": 95.0, "diastolic_mmhg": 60.0, "pulse_rate_bpm": 124.0}),
        _reading(resident, at + timedelta(seconds=80), "temperature_measurement", {"temperature_c": 39.2}),
        _manual(resident, at + timedelta(seconds=120), respiration_rate=26, consciousness="C", on_oxygen=False),
    ]


def test_three_devices_and_a_manual_entry_assemble_into_one_scored_set(broker, worker):
    resident = unique_resident()
    round_ = _red_round(resident, _now())
    _publish(broker.bootstrap, topics.READINGS, round_)
    sets = _of(read_topic(broker.bootstrap, topics.OBSERVATION_SETS.name, timeout_s=60, settle_s=2,
                          until=lambda vs: bool(_of(vs, resident, events.ObservationSet))),
               resident, events.ObservationSet)
    assert len(sets) == 1, worker.log()[-3000:]
    assert sorted(sets[0].contributing_event_ids) == sorted(e.event_id for e in round_)
    assert (sets[0].respiration_rate, sets[0].spo2, sets[0].on_oxygen, sets[0].systolic_bp, sets[0].pulse,
            sets[0].consciousness, sets[0].temperature) == (26, 90, False, 95, 125, "C", 39.2)
    escalations = _escalations(broker.bootstrap, resident, until=lambda es: len(es) >= 2, timeout_s=30)
    # The oximeter alone (SpO2 3 + pulse 2) already reached medium, before the set was complete;
    # the cuff's SBP took it to high: one episode, raised then upgraded, never a second one.
    assert [(e.status, e.risk) for e in escalations if isinstance(e, events.Escalation)] == [
        ("raised", "medium"), ("upgraded", "high")
    ]
    assert len({e.episode_id for e in escalations}) == 1


def test_a_worse_set_upgrades_the_open_episode(broker, worker):
    resident = unique_resident()
    at = _now() - timedelta(hours=1)
    new_confusion = observation_set(resident, occurred_at=at, consciousness="C")  # a single 3: low-medium
    medium = observation_set(resident, occurred_at=at + timedelta(minutes=15),
                             respiration_rate=22, pulse=115, temperature=38.5)  # 2 + 2 + 1 = 5
    red = observation_set(resident, occurred_at=at + timedelta(minutes=30), **RED_VITALS)
    same_again = observation_set(resident, occurred_at=at + timedelta(minutes=45), **RED_VITALS)
    _publish(broker.bootstrap, topics.OBSERVATION_SETS, [new_confusion, medium, red, same_again])
    escalations = _escalations(broker.bootstrap, resident, until=lambda es: any(
        getattr(e, "risk", None) == "high" for e in es))
    assert [(e.status, e.risk, e.total) for e in escalations if isinstance(e, events.Escalation)] == [
        ("raised", "low-medium", 3), ("upgraded", "medium", 5), ("upgraded", "high", 15)
    ]
    assert len({e.episode_id for e in escalations}) == 1


def test_unacknowledged_red_goes_overdue_and_an_acknowledged_one_does_not(broker, worker):
    ignored, answered = unique_resident(), unique_resident()
    at = _now()
    _publish(broker.bootstrap, topics.OBSERVATION_SETS, [
        observation_set(ignored, occurred_at=at, **RED_VITALS),
        observation_set(answered, occurred_at=at, **RED_VITALS),
    ])
    _publish(broker.bootstrap, topics.CLINICAL_ACTIONS, [_acknowledgement(answered, at + timedelta(seconds=1))])
    overdue = _escalations(broker.bootstrap, ignored, timeout_s=60,
                           until=lambda es: any(isinstance(e, events.EscalationOverdue) for e in es))
    assert [type(e).__name__ for e in overdue] == ["Escalation", "EscalationOverdue"], worker.log()[-3000:]
    assert overdue[1].deadline_at == at + timedelta(seconds=4)
    acknowledged = _escalations(broker.bootstrap, answered, until=lambda es: False, timeout_s=8)
    assert [(type(e).__name__, getattr(e, "status", None)) for e in acknowledged] == [
        ("Escalation", "raised"), ("Escalation", "acknowledged")
    ]


def test_a_missed_observation_is_reported_overdue(broker, worker):
    resident = unique_resident()
    # A score of 0 taken 12 h 3 min ago: the next set was due 12-hourly (RCP Chart 4), 3 minutes ago.
    scored_at = _now() - timedelta(hours=12, minutes=3)
    _publish(broker.bootstrap, topics.OBSERVATION_SETS, [observation_set(resident, occurred_at=scored_at, **NORMAL_VITALS)])
    values = read_topic(broker.bootstrap, topics.OBSERVATIONS_DUE.name, timeout_s=60, settle_s=2,
                        until=lambda vs: bool(_of(vs, resident, events.ObservationOverdue)))
    overdue = _of(values, resident, events.ObservationOverdue)
    assert [(o.monitoring, o.due_at) for o in overdue] == [("12-hourly", scored_at + timedelta(hours=12))]


def _event_log(residents: list[str], start: datetime) -> list[events.ResidentEvent]:
    """A recorded stream, in event-time order: device rounds and tablet sets for several residents."""
    log: list[events.ResidentEvent] = []
    for index, resident in enumerate(residents):
        at = start + timedelta(minutes=index)
        log += _red_round(resident, at) if index % 2 == 0 else [
            observation_set(resident, occurred_at=at, **NORMAL_VITALS)]
        log.append(observation_set(resident, occurred_at=at + timedelta(minutes=20), **{**RED_VITALS, "spo2": 85}))
    return sorted(log, key=lambda event: event.occurred_at)


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own: its partitions' event-time clocks see only this test's log."""
    settings = Settings(broker_port=free_port())
    embedded = EmbeddedBroker(settings, log_path=tmp_path / "broker.log")
    embedded.start()
    ensure_topics(embedded.bootstrap, settings.topic_partitions)
    yield embedded
    embedded.stop()


def test_replays_with_duplicates_and_shuffled_order_yield_the_same_escalations(own_broker, tmp_path):
    start = _now() - timedelta(hours=2)
    clean = [unique_resident("clean") for _ in range(4)]
    log = _event_log(clean, start)
    # The same log an hour later under other resident ids, every event delivered twice, each round's
    # readings shuffled (a round spans 2 minutes, inside one 10-minute assembly window).
    messy = {resident: unique_resident("messy") for resident in clean}
    rng = random.Random(11)
    messy_log = []
    for resident in clean:
        mine = [e.model_copy(update={"resident_id": messy[resident], "occurred_at": e.occurred_at + timedelta(hours=1)})
                for e in log if e.resident_id == resident]
        first_round, rest = mine[:-1], mine[-1:]
        rng.shuffle(first_round)
        messy_log += [e for e in first_round for _ in range(2)] + rest * 2
    messy_log.sort(key=lambda event: event.occurred_at.replace(second=0))  # event-time order, rounds shuffled
    worker = WorkerProcess(own_broker.bootstrap, tmp_path / "worker.log", "e2e-replay",
                           {"CAREPULSE_ESCALATION_RULES_PATH": str(FAST_RULES)}).start()
    try:
        producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, acks="all")
        for event in [*log, *log, *messy_log]:  # the clean log twice: a plain replay
            readings = isinstance(event, (events.DeviceReading, events.ManualObservation))
            topic = (topics.READINGS if readings else topics.OBSERVATION_SETS).name
            producer.send(topic, key=event.resident_id.encode(), value=events.to_json(event))
        producer.flush()
        producer.close()
        last = messy[clean[-1]]
        values = read_topic(own_broker.bootstrap, topics.ESCALATIONS.name, timeout_s=90, settle_s=4,
                            until=lambda vs: len(_of(vs, last, events.Escalation)) >= 1)
    finally:
        worker.stop()

    scores = read_topic(own_broker.bootstrap, topics.NEWS2_SCORES.name, timeout_s=10, until=lambda vs: False)

    def outcome(resident: str) -> tuple:
        """What must not depend on delivery: the episodes, the highest risk each reached, the complete sets' totals.
        (Which intermediate step a round passes through depends on which device reports first: the worker
        escalates on the parameters it has rather than wait for the round to complete.)"""
        escalations = _of(values, resident, events.Escalation)
        totals = sorted(e.total for e in _of(scores, resident, events.News2Scored) if e.complete)
        return len({e.episode_id for e in escalations}), escalations[-1].risk if escalations else None, totals

    assert [outcome(r) for r in clean] == [(1, "high", [15, 15]), (1, "high", [0, 15])] * 2, (
        [(e.resident_id[-4:], e.occurred_at.strftime("%H:%M:%S"), e.complete, e.missing, e.late) for r in clean for e in _of(scores, r, events.News2Scored)],
        [outcome(r) for r in clean], [outcome(messy[r]) for r in clean],
        [(type(e).__name__, e.resident_id[-4:], getattr(e, "complete", None), getattr(e, "missing", None)) for e in parse_all(scores)])
    assert [outcome(messy[r]) for r in clean] == [outcome(r) for r in clean]


def test_killed_worker_mid_episode_continues_without_duplicates_and_the_timer_still_fires(broker, tmp_path):
    resident = unique_resident()
    env = {"CAREPULSE_ESCALATION_RULES_PATH": str(FAST_RULES)}
    first = WorkerProcess(broker.bootstrap, tmp_path / "worker-1.log", "e2e-sigkill", env).start()
    at = _now() + timedelta(seconds=20)  # deadline 4 s after this: after the restart below
    _publish(broker.bootstrap, topics.OBSERVATION_SETS, [observation_set(resident, occurred_at=at, **RED_VITALS)])
    _escalations(broker.bootstrap, resident, until=bool, settle_s=0)
    first.kill()
    second = WorkerProcess(broker.bootstrap, tmp_path / "worker-2.log", "e2e-sigkill", env).start()
    try:
        escalations = _escalations(broker.bootstrap, resident, timeout_s=90, settle_s=3,
                                   until=lambda es: any(isinstance(e, events.EscalationOverdue) for e in es))
    finally:
        second.stop()
    # At-least-once: an input redelivered after SIGKILL may be re-sent, but always with the same event id,
    # which consumers deduplicate; the episode and its timer survive the kill.
    distinct = {e.event_id: e for e in escalations}
    assert [type(e).__name__ for e in distinct.values()] == ["Escalation", "EscalationOverdue"], second.log()[-3000:]
    assert len({e.episode_id for e in distinct.values()}) == 1
