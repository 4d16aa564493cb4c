"""Fuzzing the worker's input path exactly as its agents run it (streams/app.py), without the broker.

For every topic an agent consumes, any message (key, payload) ends in one of two ways: the event is
handled (resident agent: `ResidentProcessor.handle`, then its state and outputs serialise; location
agent: the future check, `LocationStore.apply` and `prune`, then the indicators evaluate), or the agent
catches what the step raised — `ValueError` from `parse_keyed_event`, `news2.ImpossibleValue` from the
resident processor, `ValueError`/`TooLate` from the location store — with a non-empty reason, and the
dead letter built from it (`dead_letter_event`) serialises. Any other exception would kill the agent.

Payloads are arbitrary bytes, arbitrary JSON, and valid events of every model the topics carry with
fields replaced (wrong types, arbitrary JSON, extreme numbers, timestamps from year 1 to 9999), dropped
or added, under the right key or another; several per example, through one resident's state and one
location's store, so that a poisoned state is caught by the inputs after it.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from pydantic import ValidationError
from hypothesis import strategies as st

from carepulse import events, topics
from carepulse.settings import Settings
from indicators import escalation, news2, quality
from streams.app import LOCATION_INPUTS, RESIDENT_INPUTS, dead_letter_event, parse_keyed_event
from streams.location import IndicatorBoard, LocationStore
from streams.resident import ResidentProcessor, ResidentState
from tests.factories import T0
from tests.fuzz.conftest import examples

pytestmark = pytest.mark.fuzz

NOW = T0
RESIDENT, LOCATION = "res-1", "loc-1"
RULES = escalation.load_rules()
# The urinalysis pathway switched on, so its code is fuzzed too (it is off in the packaged rules).
PATHWAY_ON = dataclasses.replace(
    quality.packaged_rules(),
    urinalysis_pathway=dataclasses.replace(quality.packaged_rules().urinalysis_pathway, enabled=True))
SETTINGS = Settings()
FUTURE_TOLERANCE = timedelta(seconds=SETTINGS.indicators_future_tolerance_s)
#: What became of the inputs, over the module: the teardown checks the fuzzing reached every outcome.
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _outcomes():
    yield
    print(f"\nworker inputs: {dict(sorted(OUTCOMES.items()))}")
    if OUTCOMES.total() < 200:
        return  # a single test was selected
    assert {"resident handled", "location applied", "dead letter: worker.resident",
            "dead letter: worker.location"} <= set(OUTCOMES), OUTCOMES


def _envelope(minutes: int = 0, **more: Any) -> dict[str, Any]:
    at = (NOW + timedelta(minutes=minutes)).isoformat()
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "occurred_at": at, "received_at": at,
            "source": {"gateway_id": "gw-1", "device_id": "dev-1"}, "location_id": LOCATION,
            "resident_id": RESIDENT, **more}


def _valid_events() -> list[dict[str, Any]]:
    """One valid event of each model the agents consume (as JSON-ready dicts)."""
    episode = str(uuid.UUID(int=5))
    return [
        _envelope(event_type="device_reading", characteristic="plx_spot_check_measurement",
                  values={"spo2_pct": 88.0, "pulse_rate_bpm": 131.0}),
        _envelope(event_type="device_reading", characteristic="blood_pressure_measurement",
                  values={"systolic_mmhg": 85.0, "diastolic_mmhg": 60.0, "pulse_rate_bpm": 130.0,
                          "mean_arterial_pressure_mmhg": "NaN"}),
        _envelope(event_type="device_reading", characteristic="temperature_measurement", values={"temperature_c": 39.5}),
        _envelope(1, event_type="manual_observation", recorded_by="carer-1", respiration_rate=26, consciousness="C",
                  on_oxygen=False),
        _envelope(2, event_type="observation_set", respiration_rate=26, spo2=90, spo2_scale=1, on_oxygen=False,
                  systolic_bp=95, pulse=125, consciousness="C", temperature=39.2),
        _envelope(event_type="resident", status="admitted", sex="female", fluid_target_ml=1500,
                  scale2_prescription={"prescribed_by": "gp-1", "prescribed_at": NOW.isoformat()}),
        _envelope(5, event_type="escalation_acknowledgement", acknowledged_by="nurse-1", action="GP called"),
        _envelope(9, event_type="clinical_review", reviewed_by="gp-1", outcome="GP visited"),
        _envelope(event_type="fluid_intake", offered_ml=200, consumed_ml=150, method="carer", recorded_by="carer-1"),
        _envelope(event_type="fall", detected_by="device", confirmed=True, harm="low", alert_id="alert-1",
                  recorded_by="carer-1"),
        _envelope(event_type="call_bell", call_id="call-1", phase="raised", priority="emergency", call_type="pendant"),
        _envelope(3, event_type="call_bell", call_id="call-1", phase="answered", answered_by="carer-1"),
        _envelope(event_type="visit_planned", visit_id="visit-1", planned_start=NOW.isoformat(),
                  planned_end=(NOW + timedelta(minutes=30)).isoformat(), time_critical=True,
                  tasks=[{"task_id": "meds", "kind": "medication", "time_critical": True}]),
        _envelope(1, event_type="visit_check_in", visit_id="visit-1", carer_id="carer-1", verification="gps"),
        _envelope(30, event_type="visit_check_out", visit_id="visit-1", carer_id="carer-1",
                  task_outcomes=[{"task_id": "meds", "outcome": "done"}]),
        _envelope(event_type="visit_cancelled", visit_id="visit-2", by_client_in_advance=True),
        _envelope(3, event_type="news2_score", observation_set_id=str(uuid.UUID(int=9)), complete=True,
                  parameter_scores={"respiration_rate": 3}, missing=[], total=9, risk="high", any_single_3=True,
                  monitoring="continuous", monitoring_interval_minutes=0, response="Emergency response",
                  rules_version="news2.1"),
        _envelope(3, event_type="escalation", episode_id=episode, status="raised", risk="high", total=9,
                  any_single_3=True, response="Emergency response", rules_version="news2.1",
                  raised_at=NOW.isoformat(), deadline_at=(NOW + timedelta(minutes=30)).isoformat()),
        _envelope(6, event_type="escalation", episode_id=episode, status="acknowledged", risk="high", total=9,
                  any_single_3=True, response="Emergency response", rules_version="news2.1",
                  acknowledged_by="nurse-1", acknowledged_at=(NOW + timedelta(minutes=6)).isoformat()),
        _envelope(40, event_type="urinalysis_result", recorded_by="carer-1", reader="smartphone_reader",
                  leukocytes="+", nitrites="negative", blood="trace", protein="negative", episode_id=episode),
        _envelope(3, event_type="urinalysis_recommendation", episode_id=episode, status="recommended",
                  risk="medium", recommended_at=NOW.isoformat(), due_at=(NOW + timedelta(hours=6)).isoformat(),
                  rules_version="carepulse-quality.2"),
        {key: value for key, value in _envelope(-60 * 24, event_type="location_profile", setting="care_home",
                                                registered_beds=30).items() if key != "resident_id"},
    ]


VALID = _valid_events()
_CONSUMED = {spec.name: spec for spec in (*RESIDENT_INPUTS, *LOCATION_INPUTS)}
# Every model a consumed topic carries has a valid example above.
assert {m.model_fields["event_type"].default for spec in _CONSUMED.values() for m in spec.value_models} <= {
    e["event_type"] for e in VALID}


def _topic_for(event_type: str) -> str:
    for name, spec in _CONSUMED.items():
        if event_type in {m.model_fields["event_type"].default for m in spec.value_models}:
            return name
    raise AssertionError(event_type)


json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)
#: The whole calendar: the event contracts refuse instants outside 1900-2200 (`events.Instant`), which this
#: fuzzer found overflowing the worker's date arithmetic near year 1 and 9999.
EARLIEST, LATEST = datetime(1, 1, 2), datetime(9999, 12, 30)
timestamps = st.one_of(
    st.datetimes(min_value=EARLIEST, max_value=LATEST,
                 timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                            timezone(timedelta(hours=-12))])),
    st.timedeltas(min_value=-timedelta(days=80), max_value=timedelta(days=2)).map(lambda d: NOW + d),
).map(lambda at: at.isoformat())
field_values = st.one_of(
    json_values, timestamps, st.floats(-1e6, 1e6), st.integers(-100, 400),
    st.sampled_from(["1900-01-01T00:00:00+14:00", "2199-12-31T23:59:59-23:59", "2026-11-23T08:50:00", "NaN",
                     "Infinity", "4505577104", "", "A" * 65, "\ud800", RESIDENT, LOCATION, "loc-2", "res-2"]),
)


deep_json = st.builds(lambda depth, opener, closer: opener * depth + closer * depth,
                      st.sampled_from([100, 1_000, 10_000, 100_000]), st.sampled_from([b"[", b'{"values":']),
                      st.sampled_from([b"]", b"}"]))


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(the topic the original event belongs on, the event with some fields changed)."""
    event = dict(draw(st.sampled_from(VALID)))
    topic = _topic_for(event["event_type"])
    event["event_id"] = str(draw(st.uuids(version=4) | st.sampled_from([uuid.UUID(int=1), uuid.UUID(int=2)])))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "time", "nested"]))
        if action == "replace":
            event[draw(st.sampled_from(sorted(event)))] = draw(field_values)
        elif action == "drop":
            event.pop(draw(st.sampled_from(sorted(event))))
        elif action == "add":
            event[draw(st.text(max_size=12) | st.sampled_from(["late", "contributing_event_ids", "values"]))] = draw(field_values)
        elif action == "time":
            event[draw(st.sampled_from(["occurred_at", "received_at", "raised_at", "deadline_at", "acknowledged_at",
                                        "planned_start", "planned_end"]))] = draw(timestamps)
        elif isinstance(event.get("values"), dict):
            event["values"] = {**event["values"], draw(st.sampled_from(["spo2_pct", "pulse_rate_bpm", "temperature_c",
                                                                        "systolic_mmhg", "x"])): draw(field_values)}
    return topic, event


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes | None, bytes]:
    """(topic, key, payload) as the agent receives them."""
    kind = draw(st.sampled_from(["valid"] * 3 + ["event"] * 6 + ["bytes", "json"]))
    if kind == "valid":  # an untouched event, with a new id and time: sequences that reach deep into the handlers
        event = {**draw(st.sampled_from(VALID)), "event_id": str(draw(st.uuids(version=4)))}
        event["occurred_at"] = (NOW + draw(st.timedeltas(timedelta(0), timedelta(hours=2)))).isoformat()
        topic = _topic_for(event["event_type"])
        key = event[topics.by_name(topic).key].encode()
        return topic, key, json.dumps(event).encode()
    if kind == "event":
        topic, event = draw(mutated_events())
        if not draw(st.integers(0, 9)):
            topic = draw(st.sampled_from(sorted(_CONSUMED)))  # a producer writing to the wrong topic
        payload = json.dumps(event).encode()
    else:
        topic = draw(st.sampled_from(sorted(_CONSUMED)))
        payload = draw(st.binary(max_size=300) | deep_json) if kind == "bytes" else json.dumps(draw(json_values)).encode()
    spec = topics.by_name(topic)
    right = {"resident_id": RESIDENT, "location_id": LOCATION}[spec.key].encode()
    key = draw(st.one_of(*[st.just(right)] * 6, st.sampled_from([None, b"", b"res-2", b"\xff\xfe"]), st.binary(max_size=10)))
    return topic, key, payload


def _rejected(stage: str, topic: str, key: bytes | None, payload: bytes, exc: ValueError) -> None:
    """What the agent does with a rejection: a dead letter with the reason, which must reach the topic."""
    reason = str(exc)
    assert reason.strip(), f"{type(exc).__name__} without a reason"
    OUTCOMES[f"dead letter: {stage}"] += 1
    letter = dead_letter_event(stage, topic, key, payload, reason, "worker-fuzz")
    events.DeadLetter.model_validate_json(events.to_json(letter))


def _resident_step(processor: ResidentProcessor, state: ResidentState, event: events.Event, topic: str, key, payload
                   ) -> ResidentState:
    try:
        new_state, outputs = processor.handle(state, event, NOW)
    except news2.ImpossibleValue as exc:
        _rejected("worker.resident", topic, key, payload, ValueError(f"impossible value: {exc}"))
        return state
    OUTCOMES["resident handled"] += 1
    for output in outputs:
        events.any_event_adapter.validate_json(events.to_json(output.event))
    stored = json.loads(json.dumps(new_state.to_json(), allow_nan=False))  # what the changelog table keeps
    return ResidentState.from_json(stored)


def _location_step(store: LocationStore, board: IndicatorBoard, event: events.Event, topic: str, key, payload) -> None:
    try:
        if event.occurred_at > NOW + FUTURE_TOLERANCE:
            raise ValueError(f"occurred_at {event.occurred_at.isoformat()} is in the future; "
                             "the device or system clock that stamped it is wrong")
        store.apply(event)
        store.prune(event.location_id)
    except ValueError as exc:  # TooLate is a ValueError
        _rejected("worker.location", topic, key, payload, exc)
        return
    OUTCOMES["location applied"] += 1
    board.applied(event)


@examples(0.5)
@given(batch=st.lists(messages(), min_size=1, max_size=6))
def test_every_message_is_handled_or_dead_lettered_with_a_reason(batch) -> None:
    processor = ResidentProcessor(RULES, "worker-fuzz", quality_rules=PATHWAY_ON)
    states: dict[bytes, ResidentState] = {}
    table: dict[str, Any] = {}
    store = LocationStore(table)
    board = IndicatorBoard(store, worker_id="worker-fuzz", wall_clock_lag=timedelta(seconds=30))
    for topic, key, payload in batch:
        try:
            event = parse_keyed_event(topic, payload, key)
        except ValueError as exc:
            _rejected("worker.resident", topic, key, payload, exc)
            continue
        if topic in {spec.name for spec in RESIDENT_INPUTS}:
            resident_key = event.resident_id.encode()
            states[resident_key] = _resident_step(processor, states.get(resident_key, ResidentState()), event,
                                                  topic, key, payload)
        else:
            _location_step(store, board, event, topic, key, payload)
    # The timers: deadlines judged on every resident's state, indicators evaluated for every location.
    for state in states.values():
        _, outputs = processor.tick(state, NOW + timedelta(hours=1), NOW + timedelta(hours=1))
        for output in outputs:
            events.to_json(output.event)
    for location_id in store.locations():
        for _, _, update in board.updates(location_id, NOW + timedelta(hours=1)):
            events.to_json(update)
    json.dumps(table, allow_nan=False)  # the location table's changelog takes JSON


@examples(1.0)
@given(topic=st.sampled_from(sorted(_CONSUMED)), key=st.none() | st.binary(max_size=20),
       payload=st.binary(max_size=500) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_payloads_are_rejected_with_a_reason(topic, key, payload) -> None:
    try:
        parse_keyed_event(topic, payload, key)
    except ValueError as exc:
        _rejected("worker.resident", topic, key, payload, exc)


@examples(0.5)
@given(payload=st.binary(max_size=500) | deep_json | json_values.map(lambda v: json.dumps(v).encode())
       | mutated_events().map(lambda topic_event: json.dumps(topic_event[1]).encode()))
def test_the_relay_to_locations_skips_what_it_cannot_read(payload) -> None:
    """The relay agent reads resident-keyed topics and catches only ValidationError (streams/app.py)."""
    try:
        events.any_event_adapter.validate_json(payload)
    except ValidationError:
        pass


def test_every_valid_example_is_valid_on_its_topic() -> None:
    for event in VALID:
        topic = _topic_for(event["event_type"])
        key = event[topics.by_name(topic).key].encode()
        parse_keyed_event(topic, json.dumps(event).encode(), key)


#: One message per place the edge of the calendar used to crash (found by this fuzzer): (topic, field, value).
CALENDAR_EDGES = [
    ("care-events", "fluid_intake", "occurred_at", "0001-01-01T00:00:00+14:00"),  # streams/location.py local_day
    ("care-events", "visit_planned", "planned_start", "9999-12-31T23:59:59+00:00"),  # indicators/quality.py
    ("location-events", "escalation", "deadline_at", "9999-12-31T23:59:59-12:00"),  # streams/location.py
    ("readings", "device_reading", "occurred_at", "9999-12-31T23:59:59+00:00"),  # indicators/escalation.py
    ("readings", "manual_observation", "occurred_at", "9999-12-31T23:59:59-12:00"),
    ("observation-sets", "observation_set", "occurred_at", "9999-12-31T23:59:59+00:00"),
]


@pytest.mark.parametrize("topic, event_type, field, value", CALENDAR_EDGES)
def test_a_timestamp_at_the_edge_of_the_calendar_is_dead_lettered(topic, event_type, field, value) -> None:
    event = {**next(e for e in VALID if e["event_type"] == event_type), field: value}
    assert _topic_for(event_type) == topic
    key = event[topics.by_name(topic).key].encode()
    payload = json.dumps(event).encode()
    with pytest.raises(ValueError, match="must be between 1900 and 2200") as refused:
        parse_keyed_event(topic, payload, key)
    _rejected("worker.resident", topic, key, payload, refused.value)