"""One resident's worker logic (streams/resident.py) driven with real events, no broker.

Each test feeds events (and timer ticks) through `ResidentProcessor.handle` / `tick` and compares what it
published, step by step, as compact tuples (`brief`) or as whole events. Packaged rules: high 30 min,
medium and low-medium 60 min, 600 s assembly window, 120 s allowed lateness.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepulse import events, topics
from indicators import news2
from indicators.escalation import load_rules
from streams.resident import Output, ResidentProcessor, ResidentState
from tests.factories import RED_VITALS, T0, observation_set

RULES = load_rules()
RESIDENT = "res-1"
SOURCE = events.Source(gateway_id="gw-test", device_id="dev-test")
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)


# ---------------------------------------------------------------------------------------------------
# Building events

def _envelope(at: datetime) -> dict:
    return dict(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id="loc-1",
                resident_id=RESIDENT)


def oximeter(at: datetime, spo2: float, pulse: float) -> events.DeviceReading:
    return events.DeviceReading(**_envelope(at), characteristic="plx_spot_check_measurement",
                                values={"spo2_pct": spo2, "pulse_rate_bpm": pulse})


def cuff(at: datetime, systolic: float, pulse: float) -> events.DeviceReading:
    return events.DeviceReading(**_envelope(at), characteristic="blood_pressure_measurement",
                                values={"systolic_mmhg": systolic, "diastolic_mmhg": 70.0, "pulse_rate_bpm": pulse,
                                        "mean_arterial_pressure_mmhg": "NaN"})


def thermometer(at: datetime, celsius: float) -> events.DeviceReading:
    return events.DeviceReading(**_envelope(at), characteristic="temperature_measurement",
                                values={"temperature_c": celsius})


def manual(at: datetime, **values) -> events.ManualObservation:
    return events.ManualObservation(**_envelope(at), recorded_by="carer-1", **values)


def acknowledgement(at: datetime, by: str = "nurse-1") -> events.EscalationAcknowledgement:
    return events.EscalationAcknowledgement(**_envelope(at), acknowledged_by=by, action="GP called")


def review(at: datetime, outcome: str = "GP visited") -> events.ClinicalReview:
    return events.ClinicalReview(**_envelope(at), reviewed_by="gp-1", outcome=outcome)


def record(at: datetime, status: str = "admitted", scale2_at: datetime | None = None) -> events.ResidentRecord:
    prescription = events.Scale2Prescription(prescribed_by="gp-1", prescribed_at=scale2_at) if scale2_at else None
    return events.ResidentRecord(**_envelope(at), status=status, scale2_prescription=prescription)


def a_set(at: datetime, **vitals) -> events.ObservationSet:
    return observation_set(RESIDENT, location_id="loc-1", occurred_at=at, **vitals)


def round_(at: datetime, *, spo2=97.0, pulse=72.0, systolic=125.0, celsius=36.8, **manual_values) -> list:
    """Oximeter, cuff, thermometer and the carer's tablet, 40 s apart (all within the lateness bound)."""
    entered = dict(respiration_rate=16, consciousness="A", on_oxygen=False) | manual_values
    return [oximeter(at, spo2, pulse), cuff(at + 40 * S, systolic, pulse + 1), thermometer(at + 80 * S, celsius),
            manual(at + 120 * S, **entered)]


def red_round(at: datetime) -> list:
    """SpO2 90 (3), pulse 125 (2), SBP 95 (2), 39.2 C (2), RR 26 (3), new confusion (3): 15, high."""
    return round_(at, spo2=90.0, pulse=125.0, systolic=95.0, celsius=39.2, respiration_rate=26, consciousness="C")


@dataclass(frozen=True)
class Tick:
    clock: datetime


# ---------------------------------------------------------------------------------------------------
# Driving the processor

TOPIC_OF = {
    events.ObservationSet: topics.OBSERVATION_SETS, events.News2Scored: topics.NEWS2_SCORES,
    events.Escalation: topics.ESCALATIONS, events.EscalationOverdue: topics.ESCALATIONS,
    events.ObservationOverdue: topics.OBSERVATIONS_DUE,
}


def run(steps: list, *, restart: bool = False, state: ResidentState | None = None,
        ) -> tuple[ResidentState, list[list[Output]]]:
    """Feed each event (or Tick) in turn; `now` is the step's own time. With `restart`, every step starts from
    the state's JSON (as the changelog table would restore it) and a fresh processor."""
    processor = ResidentProcessor(RULES, worker_id="worker-test")
    state = state or ResidentState()
    published = []
    for step in steps:
        if restart:
            state = ResidentState.from_json(json.loads(json.dumps(state.to_json())))
            processor = ResidentProcessor(RULES, worker_id="worker-test")
        if isinstance(step, Tick):
            state, outputs = processor.tick(state, step.clock, step.clock)
        else:
            state, outputs = processor.handle(state, step, step.occurred_at)
        for output in outputs:  # every output goes to its topic, keyed by resident
            assert (output.topic, output.key) == (TOPIC_OF[type(output.event)], RESIDENT)
        published.append(outputs)
    return state, published


def brief(output: Output) -> tuple:
    event = output.event
    match event:
        case events.ObservationSet():
            return ("set", event.spo2_scale, event.late, tuple(sorted(event.model_dump(include=set(VITAL_FIELDS),
                                                                                       exclude_none=True))))
        case events.News2Scored():
            return ("score", event.complete, event.total, event.risk, event.any_single_3)
        case events.Escalation():
            return ("escalation", event.status, event.risk, event.total)
        case events.EscalationOverdue():
            return ("escalation_overdue", event.risk, event.deadline_at)
        case events.ObservationOverdue():
            return ("observation_overdue", event.monitoring, event.due_at)
    raise AssertionError(f"unexpected output {event!r}")


VITAL_FIELDS = ("respiration_rate", "spo2", "on_oxygen", "systolic_bp", "pulse", "consciousness", "temperature")
ALL_SEVEN = tuple(sorted(VITAL_FIELDS))


def briefs(published: list[list[Output]]) -> list[list[tuple]]:
    return [[brief(output) for output in outputs] for outputs in published]


def escalations(published: list[list[Output]]) -> list[tuple]:
    return [(o.event.status, o.event.risk, o.event.episode_id)
            for outputs in published for o in outputs if isinstance(o.event, events.Escalation)]


# ---------------------------------------------------------------------------------------------------
# Assembly and scoring

def test_three_devices_and_a_manual_entry_form_one_scored_set():
    readings = round_(T0)
    state, published = run(readings)
    assert briefs(published) == [[], [], [], [("set", 1, False, ALL_SEVEN), ("score", True, 0, "low", False)]]
    observation, scored = (o.event for o in published[3])
    assert observation.model_dump(include=set(VITAL_FIELDS)) == dict(
        respiration_rate=16, spo2=97, on_oxygen=False, systolic_bp=125, pulse=72, consciousness="A",
        temperature=36.8)  # pulse: the oximeter's, the earlier of the two
    assert (sorted(observation.contributing_event_ids), observation.occurred_at) == (
        sorted(r.event_id for r in readings), T0 + 120 * S)
    assert (scored.observation_set_id, scored.occurred_at) == (observation.event_id, T0 + 120 * S)
    assert (state.open_set, state.episode) == (None, None)


def test_a_red_round_escalates_as_readings_arrive_and_stays_one_episode():
    _, published = run(red_round(T0))
    assert briefs(published) == [
        [("score", False, None, None, True), ("escalation", "raised", "medium", None)],  # SpO2 3 + pulse 2
        [("score", False, None, None, True), ("escalation", "upgraded", "high", None)],  # + SBP 2 = 7
        [],  # temperature: still high, nothing new to say
        [("set", 1, False, ALL_SEVEN), ("score", True, 15, "high", True)],
    ]
    raised, upgraded = (o.event for o in published[0] + published[1] if isinstance(o.event, events.Escalation))
    assert raised.episode_id == upgraded.episode_id
    assert (raised.deadline_at, upgraded.deadline_at) == (T0 + 60 * MIN, T0 + 40 * S + 30 * MIN)
    assert (upgraded.response, upgraded.rules_version) == (
        news2.response_for(news2.Risk.HIGH), f"{news2.RULES_VERSION}/carepulse-escalation.1")


def test_a_single_3_escalates_before_the_set_is_complete():
    steps = [manual(T0, respiration_rate=16, consciousness="C", on_oxygen=False), *round_(T0 + 10 * S)[:3]]
    _, published = run(steps)
    assert briefs(published) == [
        [("score", False, None, None, True), ("escalation", "raised", "low-medium", None)],
        [], [],
        [("set", 1, False, ALL_SEVEN), ("score", True, 3, "low-medium", True)],  # same band: no second episode
    ]
    early = published[0][0].event
    assert (early.parameter_scores, early.missing) == (
        {"respiration_rate": 0, "air_or_oxygen": 0, "consciousness": 3},
        ["spo2", "systolic_bp", "pulse", "temperature"])


def test_an_unfinished_round_is_scored_incomplete_when_its_window_closes():
    steps = [oximeter(T0, 96.0, 80.0), thermometer(T0 + 30 * S, 37.0), Tick(T0 + 600 * S - S), Tick(T0 + 600 * S)]
    _, published = run(steps)
    assert briefs(published) == [[], [], [], [
        ("set", 1, False, ("pulse", "spo2", "temperature")), ("score", False, None, None, False)]]
    assert published[3][1].event.missing == ["respiration_rate", "air_or_oxygen", "systolic_bp", "consciousness"]


# ---------------------------------------------------------------------------------------------------
# The escalation lifecycle

def test_a_worse_set_upgrades_the_open_episode_instead_of_opening_another():
    steps = [a_set(T0, consciousness="C"),  # a single 3: low-medium
             a_set(T0 + 15 * MIN, respiration_rate=22, pulse=115, temperature=38.5),  # 2 + 2 + 1 = 5: medium
             a_set(T0 + 30 * MIN, **RED_VITALS),  # 15: high
             a_set(T0 + 45 * MIN, **RED_VITALS),
             a_set(T0 + 50 * MIN, respiration_rate=22, pulse=115, temperature=38.5)]  # better, still open
    _, published = run(steps)
    assert [[b for b in step if b[0] == "escalation"] for step in briefs(published)] == [
        [("escalation", "raised", "low-medium", 3)], [("escalation", "upgraded", "medium", 5)],
        [("escalation", "upgraded", "high", 15)], [], []]
    assert len({episode for _, _, episode in escalations(published)}) == 1


def test_an_acknowledgement_stops_the_overdue():
    steps = [a_set(T0, **RED_VITALS), acknowledgement(T0 + 10 * MIN), acknowledgement(T0 + 12 * MIN, "nurse-2"),
             Tick(T0 + 31 * MIN), Tick(T0 + 5 * H)]
    _, published = run(steps)
    assert briefs(published) == [
        [("score", True, 15, "high", True), ("escalation", "raised", "high", 15)],
        [("escalation", "acknowledged", "high", 15)], [], [], []]
    acknowledged = published[1][0].event
    assert (acknowledged.acknowledged_by, acknowledged.acknowledged_at, acknowledged.episode_id) == (
        "nurse-1", T0 + 10 * MIN, published[0][1].event.episode_id)


def test_an_unacknowledged_episode_is_overdue_exactly_once_after_its_deadline():
    steps = [a_set(T0, **RED_VITALS), Tick(T0 + 30 * MIN - S), Tick(T0 + 30 * MIN), Tick(T0 + 31 * MIN),
             Tick(T0 + 5 * H)]
    _, published = run(steps)
    assert briefs(published)[1:] == [[], [("escalation_overdue", "high", T0 + 30 * MIN)], [], []]
    overdue = published[2][0].event
    assert (overdue.episode_id, overdue.raised_at, overdue.occurred_at) == (
        published[0][1].event.episode_id, T0, T0 + 30 * MIN)


def test_an_upgrade_rearms_the_deadline():
    steps = [a_set(T0, respiration_rate=22, pulse=115, temperature=38.5), Tick(T0 + 60 * MIN),
             a_set(T0 + 70 * MIN, **RED_VITALS), Tick(T0 + 100 * MIN - S), Tick(T0 + 100 * MIN)]
    _, published = run(steps)
    assert [[b for b in step if b[0] != "score"] for step in briefs(published)] == [
        [("escalation", "raised", "medium", 5)],
        [("escalation_overdue", "medium", T0 + 60 * MIN), ("observation_overdue", "1-hourly", T0 + 60 * MIN)],
        [("escalation", "upgraded", "high", 15)], [], [("escalation_overdue", "high", T0 + 100 * MIN)]]


@pytest.mark.parametrize(("ending", "resolution"), [
    (review(T0 + 20 * MIN, "admitted to hospital"), "clinical review: admitted to hospital"),
    (record(T0 + 20 * MIN, status="discharged"), "resident discharged"),
], ids=["clinical-review", "discharge"])
def test_a_review_or_discharge_resolves_the_episode(ending, resolution):
    state, published = run([a_set(T0, **RED_VITALS), ending, Tick(T0 + 5 * H)])
    assert briefs(published)[1:] == [[("escalation", "resolved", "high", 15)], []]
    resolved = published[1][0].event
    assert (resolved.resolution, resolved.occurred_at) == (resolution, T0 + 20 * MIN)
    assert state.episode is None


def test_low_scores_for_72_hours_resolve_the_episode():
    steps = [a_set(T0, **RED_VITALS), acknowledgement(T0 + 5 * MIN),
             a_set(T0 + H), a_set(T0 + 72 * H), a_set(T0 + 73 * H - S), a_set(T0 + 73 * H)]
    _, published = run(steps)
    assert [[b for b in step if b[0] == "escalation"] for step in briefs(published)] == [
        [("escalation", "raised", "high", 15)], [("escalation", "acknowledged", "high", 15)], [], [], [],
        [("escalation", "resolved", "high", 15)]]
    assert published[5][1].event.resolution == "scores low for 72 h"


# ---------------------------------------------------------------------------------------------------
# Observations due (Chart 4 monitoring frequency)

@pytest.mark.parametrize(("vitals", "due_at", "monitoring"), [
    ({}, T0 + 12 * H, "12-hourly"),
    (dict(temperature=38.5), T0 + 6 * H, "4-6-hourly"),
], ids=["total-0", "total-1"])
def test_an_observation_is_overdue_after_the_monitoring_interval(vitals, due_at, monitoring):
    steps = [a_set(T0, **vitals), Tick(due_at - S), Tick(due_at), Tick(due_at + H)]
    _, published = run(steps)
    assert briefs(published)[1:] == [[], [("observation_overdue", monitoring, due_at)], []]


def test_a_high_score_needs_continuous_monitoring_not_a_due_observation():
    steps = [a_set(T0, **RED_VITALS), acknowledgement(T0 + MIN), *(Tick(T0 + h * H) for h in (1, 12, 24, 48))]
    _, published = run(steps)
    assert [b for step in briefs(published) for b in step if b[0].endswith("overdue")] == []


def test_a_new_complete_set_moves_the_due_time_on():
    steps = [a_set(T0), a_set(T0 + 10 * H), Tick(T0 + 12 * H), Tick(T0 + 22 * H)]
    _, published = run(steps)
    assert briefs(published)[2:] == [[], [("observation_overdue", "12-hourly", T0 + 22 * H)]]


def test_a_late_worse_reading_is_scored_but_neither_escalates_nor_moves_the_due_time():
    """H-11: a reading older than the assembly window plus the allowed lateness behind the resident's newest
    reading is scored on its own as late; the newer observations still speak for the resident (the policy
    awaits CSO sign-off, H-26)."""
    newest = T0 + timedelta(seconds=RULES.assembly_window_s + RULES.allowed_lateness_s) + MIN
    steps = [a_set(newest), oximeter(newest, 97.0, 72.0), Tick(newest + 11 * MIN),
             oximeter(T0, 85.0, 135.0),  # SpO2 85 scores 3: on time it would escalate at once
             Tick(newest + 12 * H)]
    _, published = run(steps)
    assert briefs(published)[3] == [("set", 1, True, ("pulse", "spo2")), ("score", False, None, None, True)]
    assert escalations(published) == []
    assert briefs(published)[4] == [("observation_overdue", "12-hourly", newest + 12 * H)]


# ---------------------------------------------------------------------------------------------------
# Inputs that must change nothing

@pytest.mark.parametrize("make", [
    lambda: oximeter(T0 + MIN, 90.0, 125.0),
    lambda: manual(T0 + MIN, respiration_rate=26, consciousness="C", on_oxygen=False),
    lambda: a_set(T0 + MIN, **RED_VITALS),
    lambda: acknowledgement(T0 + MIN),
    lambda: review(T0 + MIN),
], ids=["device", "manual", "set", "acknowledgement", "review"])
def test_a_duplicate_event_id_publishes_nothing(make):
    event = make()
    start, _ = run([a_set(T0, respiration_rate=22, pulse=115, temperature=38.5)])
    once, _ = run([event], state=start)
    again, published = run([event], state=once)
    assert (again, published) == (once, [[]])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: oximeter(T0 + MIN, 120.0, 80.0), "spo2 = 120.0 is impossible"),
    (lambda: cuff(T0 + MIN, 125.0, 400.0), "pulse = 400.0 is impossible"),
    (lambda: manual(T0 + MIN, respiration_rate=95), "respiration_rate = 95.0 is impossible"),
], ids=["oximeter-spo2", "cuff-pulse", "manual-rr"])
def test_an_impossible_value_is_refused_and_changes_nothing(make, message):
    start, _ = run(round_(T0 - 20 * MIN)[:2])  # a round in progress
    before = json.dumps(start.to_json())
    bad = make()
    processor = ResidentProcessor(RULES, worker_id="worker-test")
    with pytest.raises(news2.ImpossibleValue, match=message):
        processor.handle(start, bad, bad.occurred_at)
    assert json.dumps(start.to_json()) == before
    # Redelivered, it is refused again (it was not remembered as seen), and the resident carries on as before.
    with pytest.raises(news2.ImpossibleValue):
        processor.handle(start, bad, bad.occurred_at)
    rest = round_(T0 - 20 * MIN)[2:]
    assert briefs(run(rest, state=start)[1]) == briefs(run(round_(T0 - 20 * MIN))[1][2:])


# ---------------------------------------------------------------------------------------------------
# SpO2 Scale 2 only on prescription (news2.md §1a)

ON_OXYGEN_97 = dict(spo2=97.0, on_oxygen=True)
SCALE_1 = {"respiration_rate": 0, "spo2": 0, "air_or_oxygen": 2, "systolic_bp": 0, "pulse": 0, "consciousness": 0,
           "temperature": 0}
SCALE_2 = {**SCALE_1, "spo2": 3}


@pytest.mark.parametrize(("before", "scale", "scores", "escalation"), [
    ([], 1, SCALE_1, []),
    ([record(T0 - H)], 1, SCALE_1, []),
    ([record(T0 - H, scale2_at=T0 - 24 * H)], 2, SCALE_2, [("escalation", "raised", "medium", 5)]),
    ([record(T0 - H, scale2_at=T0 + H)], 1, SCALE_1, []),  # prescribed after these observations
    ([record(T0 - 2 * H, scale2_at=T0 - 24 * H), record(T0 - H)], 1, SCALE_1, []),  # prescription withdrawn
], ids=["no-record", "no-prescription", "prescribed", "prescribed-later", "withdrawn"])
def test_scale_2_only_after_a_prescription(before, scale, scores, escalation):
    _, published = run([*before, *round_(T0, **ON_OXYGEN_97)])
    observation, scored, *rest = published[-1]
    assert (observation.event.spo2_scale, scored.event.parameter_scores) == (scale, scores)
    assert [brief(o) for o in rest] == escalation


# ---------------------------------------------------------------------------------------------------
# Restarts, replays and delivery order

STORY = [
    *red_round(T0),
    acknowledgement(T0 + 10 * MIN),
    Tick(T0 + 40 * MIN),
    a_set(T0 + H, respiration_rate=22, pulse=115, temperature=38.5),
    oximeter(T0 + 2 * H, 96.0, 80.0),  # a round left unfinished
    Tick(T0 + 2 * H + 11 * MIN),
    a_set(T0 + 3 * H),
    Tick(T0 + 16 * H),
    review(T0 + 17 * H, "stable"),
]


def test_state_survives_a_restart_after_every_step():
    straight_state, straight = run(STORY)
    restarted_state, restarted = run(STORY, restart=True)
    assert restarted == straight
    assert restarted_state == straight_state
    assert [b for step in briefs(straight) for b in step if b[0] != "score"] == [
        ("escalation", "raised", "medium", None), ("escalation", "upgraded", "high", None),
        ("set", 1, False, ALL_SEVEN), ("escalation", "acknowledged", "high", None),
        ("set", 1, False, ("pulse", "spo2")), ("observation_overdue", "1-hourly", T0 + 2 * H),
        ("observation_overdue", "12-hourly", T0 + 15 * H), ("escalation", "resolved", "high", None)]


def test_replaying_the_same_events_yields_the_same_outputs():
    first_state, first = run(STORY)
    second_state, second = run(STORY)
    assert (second_state, second) == (first_state, first)
    # Redelivered on top of the state that already saw them (a rebalance replaying the uncommitted tail):
    _, again = run([step for step in STORY if not isinstance(step, Tick)], state=first_state)
    assert again == [[]] * len(again)


def test_the_complete_set_does_not_depend_on_delivery_order_within_the_lateness_bound():
    readings = red_round(T0)
    expected = None
    for order in itertools.permutations(readings):
        state, published = run(list(order))
        # received_at is when the worker built the event, so it is the one field that follows arrival order.
        sets = [o.event.model_dump(exclude={"received_at"}) for outputs in published for o in outputs
                if isinstance(o.event, events.ObservationSet)]
        complete = [o.event.model_dump(exclude={"received_at"}) for outputs in published for o in outputs
                    if isinstance(o.event, events.News2Scored) and o.event.complete]
        assert (len(sets), len(complete)) == (1, 1)
        outcome = (sets, complete, state.episode.risk, state.open_set)
        expected = expected or outcome
        assert outcome == expected


def test_an_amber_acknowledgement_delivered_after_the_red_upgrade_does_not_silence_red():
    """Acknowledged at +5 min, red at +6 min: delivered in either order (1 min apart, within lateness), red
    still needs its own acknowledgement and goes overdue at +36 min."""
    amber, ack, red = (a_set(T0, respiration_rate=22, pulse=115, temperature=38.5), acknowledgement(T0 + 5 * MIN),
                       a_set(T0 + 6 * MIN, **RED_VITALS))
    ticks = [Tick(T0 + 36 * MIN - S), Tick(T0 + 36 * MIN)]
    overdue = [[b for step in briefs(run([amber, *order, *ticks])[1]) for b in step if b[0] == "escalation_overdue"]
               for order in ([ack, red], [red, ack])]
    assert overdue == [[("escalation_overdue", "high", T0 + 36 * MIN)]] * 2


def test_a_shuffled_round_yields_the_same_episode_outcome_and_set():
    """Escalating on the parameters already present (a single 3 must not wait for the round) means the
    intermediate step depends on which device reports first; what must not depend on delivery order is
    tested here: one episode, the same highest risk, the same complete set and score."""
    readings = red_round(T0)

    def outcome(published: list[list[Output]]) -> tuple:
        steps = escalations(published)
        sets = [(o.event.total, o.event.observation_set_id) for outputs in published for o in outputs
                if isinstance(o.event, events.News2Scored) and o.event.complete]
        return len({episode for _, _, episode in steps}), steps[-1][1], sets

    expected = outcome(run(readings)[1])
    assert expected[:2] == (1, "high") and [total for total, _ in expected[2]] == [15]
    for order in itertools.permutations(readings):
        assert outcome(run(list(order))[1]) == expected


def test_acknowledgements_read_ahead_of_their_observations_each_answer_their_own_episode():
    """A backlog read topic by topic: both acknowledgements before any observation. Each answers the episode
    open when it was made, so neither episode goes overdue; the state survives a restart at every step."""
    acks = [acknowledgement(T0 + 10 * MIN), acknowledgement(T0 + 5 * H + 10 * MIN, "nurse-2")]
    steps = [*acks, a_set(T0, **RED_VITALS), Tick(T0 + 40 * MIN), review(T0 + 2 * H),
             a_set(T0 + 5 * H, **RED_VITALS), Tick(T0 + 5 * H + 40 * MIN)]
    for restart in (False, True):
        state, published = run(steps, restart=restart)
        outputs = [o.event for step in published for o in step if not isinstance(o.event, events.News2Scored)]
        assert [(type(e).__name__, getattr(e, "status", None), getattr(e, "acknowledged_at", None),
                 getattr(e, "acknowledged_by", None)) for e in outputs] == [
            ("Escalation", "raised", None, None), ("Escalation", "acknowledged", T0 + 10 * MIN, "nurse-1"),
            ("Escalation", "resolved", T0 + 10 * MIN, "nurse-1"),
            ("Escalation", "raised", None, None), ("Escalation", "acknowledged", T0 + 5 * H + 10 * MIN, "nurse-2")]
        assert state.pending_acknowledgements == ()


def test_an_acknowledgement_made_while_no_episode_was_open_answers_no_later_episode():
    steps = [acknowledgement(T0), a_set(T0 + H, **RED_VITALS), Tick(T0 + H + 30 * MIN)]
    _, published = run(steps)
    assert [b for step in briefs(published) for b in step if b[0] != "score"] == [
        ("escalation", "raised", "high", 15), ("escalation_overdue", "high", T0 + H + 30 * MIN)]


# ---------------------------------------------------------------------------------------------------
# Acknowledgements and observations read in any relative order

MEDIUM_VITALS = dict(respiration_rate=22, pulse=115, temperature=38.5)  # 2 + 2 + 1 = 5: medium
LOW_MEDIUM_VITALS = dict(consciousness="C")  # a single 3: low-medium


def judged_in_any_order(sets: list[events.ObservationSet], acks: list[events.EscalationAcknowledgement]
                        ) -> list[dict[str, dict]]:
    """The distinct outputs (by event id, without the arrival-dependent `received_at`) of every read order that
    keeps each topic in its own order: the resident's sets in the order they were made, the acknowledgements
    in theirs, interleaved in every way. Between reads the deadline timer ticks at every instant something
    can fall due (an input's time, a deadline), but never reaches an input still to be read: the partition
    clock holds time back behind unread inputs (streams/clocks.py), and judges `allowed_lateness_s` late."""
    inputs = sorted([*sets, *acks], key=lambda e: e.occurred_at)
    instants = sorted({e.occurred_at for e in inputs}
                      | {s.occurred_at + timedelta(seconds=d) for s in sets for d in RULES.deadline_s.values()})
    outcomes = []
    for ack_slots in itertools.combinations(range(len(sets) + len(acks)), len(acks)):
        pending_sets, pending_acks, order = list(sets), list(acks), []
        for slot in range(len(sets) + len(acks)):
            order.append((pending_acks if slot in ack_slots else pending_sets).pop(0))
        steps, clock_at = [], 0
        for read, event in enumerate(order):
            steps.append(event)
            unread = [e.occurred_at for e in order[read + 1:]]
            while clock_at < len(instants) and (not unread or instants[clock_at] < min(unread)):
                steps.append(Tick(instants[clock_at]))
                clock_at += 1
        for restart in (False, True):
            _, published = run(steps, restart=restart)
            outcomes.append({str(o.event.event_id): o.event.model_dump(mode="json", exclude={"received_at"})
                             for outputs in published for o in outputs})
    return outcomes


ACKNOWLEDGEMENT_ORDER = [
    # (name, sets (minutes after T0, vitals), acknowledgements (minutes after T0),
    #  expected escalation events in event-time order: (status, risk, minutes after T0))
    ("the kill test's: medium, red a second later, acknowledged a second after that",
     [(0, MEDIUM_VITALS), (1 / 60, RED_VITALS)], [2 / 60],
     [("raised", "medium", 0), ("upgraded", "high", 1 / 60), ("acknowledged", "high", 2 / 60)]),
    ("amber acknowledged a minute before red: red still needs its own",
     [(0, MEDIUM_VITALS), (6, RED_VITALS)], [5],
     [("raised", "medium", 0), ("acknowledged", "medium", 5), ("upgraded", "high", 6), ("overdue", "high", 36)]),
    ("acknowledged as red is raised: answers red", [(0, MEDIUM_VITALS), (10, RED_VITALS)], [10],
     [("raised", "medium", 0), ("upgraded", "high", 10), ("acknowledged", "high", 10)]),
    ("every band acknowledged in its own time",
     [(0, LOW_MEDIUM_VITALS), (10, MEDIUM_VITALS), (20, RED_VITALS)], [5, 15, 25],
     [("raised", "low-medium", 0), ("acknowledged", "low-medium", 5), ("upgraded", "medium", 10),
      ("acknowledged", "medium", 15), ("upgraded", "high", 20), ("acknowledged", "high", 25)]),
    ("red acknowledged a second later", [(0, RED_VITALS)], [1 / 60],
     [("raised", "high", 0), ("acknowledged", "high", 1 / 60)]),
    ("red acknowledged after its deadline: overdue, then acknowledged", [(0, RED_VITALS)], [40],
     [("raised", "high", 0), ("overdue", "high", 30), ("acknowledged", "high", 40)]),
    ("acknowledged before anything was raised: answers nothing", [(0, RED_VITALS)], [-1],
     [("raised", "high", 0), ("overdue", "high", 30)]),
    ("amber acknowledged twice, then red", [(0, MEDIUM_VITALS), (30, RED_VITALS)], [10, 20],
     [("raised", "medium", 0), ("acknowledged", "medium", 10), ("upgraded", "high", 30), ("overdue", "high", 60)]),
]


@pytest.mark.parametrize(("sets", "acks", "expected"), [row[1:] for row in ACKNOWLEDGEMENT_ORDER],
                         ids=[row[0] for row in ACKNOWLEDGEMENT_ORDER])
def test_escalations_do_not_depend_on_the_order_acknowledgements_and_sets_are_read_in(sets, acks, expected):
    """Every interleaving of the acknowledgements with the sets, straight and with a restart at every step,
    publishes the same distinct events (same ids, same content), and those are the expected ones."""
    observed = [a_set(T0 + minutes * MIN, **vitals) for minutes, vitals in sets]
    acknowledged = [acknowledgement(T0 + minutes * MIN, f"nurse-{n}") for n, minutes in enumerate(acks)]
    outcomes = judged_in_any_order(observed, acknowledged)
    assert all(outcome == outcomes[0] for outcome in outcomes)
    escalation_events = sorted((e for e in outcomes[0].values() if e["event_type"].startswith("escalation")),
                               key=lambda e: (e["occurred_at"], e["event_type"]))
    assert [("overdue" if e["event_type"] == "escalation_overdue" else e["status"], e["risk"],
             datetime.fromisoformat(e["occurred_at"])) for e in escalation_events] == [
        (status, risk, T0 + minutes * MIN) for status, risk, minutes in expected]
    # An acknowledgement carries the band it answers (the indicators match it by raised_at) and its own source.
    for event in escalation_events:
        if event["event_type"] == "escalation" and event["status"] == "acknowledged":
            band = next(e for e in escalation_events if e.get("status") in ("raised", "upgraded")
                        and e["raised_at"] == event["raised_at"])
            assert (event["risk"], event["score_event_id"], event["source"]) == (
                band["risk"], band["score_event_id"], SOURCE.model_dump())


@settings(max_examples=60)
@given(risks=st.lists(st.sampled_from(["low", "low-medium", "medium", "high"]), min_size=1, max_size=4),
       ack_minutes=st.lists(st.integers(min_value=-5, max_value=100), min_size=1, max_size=3))
def test_any_sets_and_acknowledgements_give_the_same_escalations_in_any_read_order(risks, ack_minutes):
    """Sets every 10 minutes at any risk, acknowledgements at any minute (several in one band, before the
    episode, after a deadline), interleaved in every way: one outcome."""
    vitals = {"low": {}, "low-medium": LOW_MEDIUM_VITALS, "medium": MEDIUM_VITALS, "high": RED_VITALS}
    observed = [a_set(T0 + 10 * n * MIN, **vitals[risk]) for n, risk in enumerate(risks)]
    acknowledged = [acknowledgement(T0 + minutes * MIN, f"nurse-{n}") for n, minutes in enumerate(sorted(ack_minutes))]
    outcomes = judged_in_any_order(observed, acknowledged)
    assert all(outcome == outcomes[0] for outcome in outcomes)


def test_a_waiting_acknowledgement_stored_before_sources_were_kept_still_answers_its_band():
    """A state in the changelog from before acknowledgements kept their source ([at, by] entries) is read,
    and the acknowledgement is published with the resident's first source instead."""
    state, _ = run([a_set(T0, **MEDIUM_VITALS)])
    stored = state.to_json() | {"pending_acknowledgements": [[(T0 + 5 * MIN).isoformat(), "nurse-1"]]}
    restored = ResidentState.from_json(json.loads(json.dumps(stored)))
    assert restored.pending_acknowledgements == ((T0 + 5 * MIN, "nurse-1", None),)
    _, published = run([Tick(T0 + 5 * MIN)], state=restored)
    acknowledged = published[0][0].event
    assert (acknowledged.status, acknowledged.risk, acknowledged.acknowledged_at, acknowledged.source) == (
        "acknowledged", "medium", T0 + 5 * MIN, state.source)
