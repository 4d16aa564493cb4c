"""A reading travels the whole way: real broker process, real worker process (issue: walking skeleton)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from carepulse import events, topics
from tests.factories import RED_VITALS, observation_set, unique_resident
from tests.kafka_helpers import WorkerProcess, parse_all, produce, read_topic

pytestmark = pytest.mark.e2e


@pytest.fixture
def worker(broker, tmp_path):
    # A consumer group of its own per test: re-joining one group over and over on the embedded broker
    # occasionally leaves a partition unfetched after the rebalance (faust-streaming #629); the restart
    # tests below rejoin a group on purpose.
    group = f"e2e-skeleton-{uuid.uuid4().hex[:8]}"
    process = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", worker_id=group).start()
    yield process
    if process.process is not None:
        process.stop()


def _for_resident(values: list[bytes], model: type[events.Event], resident_id: str) -> list:
    return [e for e in parse_all(values) if isinstance(e, model) and getattr(e, "resident_id", None) == resident_id]


def test_red_observation_set_raises_one_high_escalation(broker, worker):
    resident = unique_resident()
    red = observation_set(resident, **RED_VITALS)
    produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(red))])

    values = read_topic(broker.bootstrap, topics.ESCALATIONS.name, timeout_s=90, settle_s=2,
                        until=lambda vs: bool(_for_resident(vs, events.Escalation, resident)))
    escalations = _for_resident(values, events.Escalation, resident)
    assert len(escalations) == 1, worker.log()[-3000:]
    escalation = escalations[0]
    assert (escalation.status, escalation.risk, escalation.total, escalation.any_single_3) == ("raised", "high", 15, True)
    assert escalation.occurred_at == red.occurred_at and escalation.location_id == red.location_id

    scores = _for_resident(
        read_topic(broker.bootstrap, topics.NEWS2_SCORES.name, timeout_s=30,
                   until=lambda vs: bool(_for_resident(vs, events.News2Scored, resident))),
        events.News2Scored, resident)
    assert [(s.total, s.risk, s.observation_set_id, s.event_id) for s in scores] == [
        (15, "high", red.event_id, escalation.score_event_id)
    ]
    assert scores[0].parameter_scores == {
        "respiration_rate": 3, "spo2": 3, "air_or_oxygen": 0, "systolic_bp": 2, "pulse": 2,
        "consciousness": 3, "temperature": 2,
    }


@pytest.mark.parametrize(
    ("payload", "reason_part"),
    [
        (b"\x00\xffnot json at all", "invalid event"),
        (json.dumps({"event_type": "observation_set", "pulse": "fast"}).encode(), "pulse"),
    ],
)
def test_garbage_goes_to_dead_letters_with_reason(broker, worker, payload, reason_part):
    produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(b"garbage", payload)])
    original = payload.decode("utf-8", "backslashreplace")
    values = read_topic(broker.bootstrap, topics.DEAD_LETTERS.name, timeout_s=90,
                        until=lambda vs: any(getattr(e, "original_payload", None) == original for e in parse_all(vs)))
    letters = [e for e in parse_all(values) if e.original_payload == original]
    assert len(letters) == 1, worker.log()[-3000:]
    assert letters[0].stage == "worker.resident"
    assert letters[0].original_topic == topics.OBSERVATION_SETS.name
    assert reason_part in letters[0].reason


def test_impossible_vitals_are_dead_lettered_not_scored(broker, worker):
    resident = unique_resident()
    impossible = observation_set(resident, spo2=104)
    produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(impossible))])
    original = events.to_json(impossible).decode()
    values = read_topic(broker.bootstrap, topics.DEAD_LETTERS.name, timeout_s=90,
                        until=lambda vs: any(getattr(e, "original_payload", None) == original for e in parse_all(vs)))
    letters = [e for e in parse_all(values) if e.original_payload == original]
    assert len(letters) == 1
    assert letters[0].reason.startswith("impossible value: spo2")
    scores = read_topic(broker.bootstrap, topics.NEWS2_SCORES.name, timeout_s=3, until=lambda vs: False)
    assert _for_resident(scores, events.News2Scored, resident) == []


def test_restarted_worker_does_not_re_emit_escalations(broker, tmp_path):
    resident = unique_resident()
    red = observation_set(resident, **RED_VITALS)
    worker = WorkerProcess(broker.bootstrap, tmp_path / "worker-1.log", worker_id="e2e-restart").start()
    produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(red))])
    read_topic(broker.bootstrap, topics.ESCALATIONS.name, timeout_s=90,
               until=lambda vs: bool(_for_resident(vs, events.Escalation, resident)))
    assert worker.stop() == 0

    # The same set again (a gateway replay) and an acknowledgement, to a fresh worker process: the
    # episode it restored from the changelog is acknowledged, and nothing is raised a second time.
    acknowledgement = events.EscalationAcknowledgement(
        event_id=uuid.uuid4(), occurred_at=red.occurred_at + timedelta(minutes=5),
        received_at=red.occurred_at + timedelta(minutes=5), source=red.source, location_id=red.location_id,
        resident_id=resident, acknowledged_by="nurse-7", action="called 999",
    )
    restarted = WorkerProcess(broker.bootstrap, tmp_path / "worker-2.log", worker_id="e2e-restart").start()
    try:
        produce(broker.bootstrap, topics.OBSERVATION_SETS.name, [(resident.encode(), events.to_json(red))])
        produce(broker.bootstrap, topics.CLINICAL_ACTIONS.name, [(resident.encode(), events.to_json(acknowledgement))])
        values = read_topic(
            broker.bootstrap, topics.ESCALATIONS.name, timeout_s=90, settle_s=3,
            until=lambda vs: any(e.status == "acknowledged" for e in _for_resident(vs, events.Escalation, resident)))
    finally:
        restarted.stop()
    escalations = _for_resident(values, events.Escalation, resident)
    assert [(e.status, e.risk, e.acknowledged_by) for e in escalations] == [
        ("raised", "high", None), ("acknowledged", "high", "nurse-7")
    ], restarted.log()[-3000:]
    assert escalations[0].episode_id == escalations[1].episode_id
