"""The urinalysis pathway in one resident's worker logic (streams/resident.py), driven with real events, no broker.

Packaged escalation rules; quality rules with the pathway switched on (it is off in the packaged file) and
the packaged 6 h target. Amber here is a medium score (RR 22, pulse 115, 38.5 °C: 2 + 2 + 1 = 5); red is
`RED_VITALS` (15, high).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime

import pytest

from carepulse import events, topics
from indicators import quality
from streams.resident import Output, ResidentProcessor, ResidentState
from tests.factories import RED_VITALS, T0
from tests.streams.test_resident import MIN, RULES, H, S, Tick, a_set, acknowledgement

PACKAGED = quality.packaged_rules()
SWITCHED_ON = replace(PACKAGED, urinalysis_pathway=replace(PACKAGED.urinalysis_pathway, enabled=True))
AMBER = dict(respiration_rate=22, pulse=115, temperature=38.5)
DUE = T0 + 6 * H


def urinalysis_result(at: datetime, episode_id: uuid.UUID | None = None) -> events.UrinalysisResult:
    return events.UrinalysisResult(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=events.Source(gateway_id="gw-test",
                                                                                     device_id="tab-1"),
        location_id="loc-1", resident_id="res-1", recorded_by="nurse-1", reader="smartphone_reader",
        leukocytes="+", nitrites="positive", blood="trace", protein="negative", episode_id=episode_id)


def run(steps: list, *, rules: quality.QualityRules | None = SWITCHED_ON, restart: bool = False,
        state: ResidentState | None = None) -> tuple[ResidentState, list[list[Output]]]:
    """Each event (or Tick) in turn, `now` its own time; with `restart`, from the state's JSON each step."""
    state = state or ResidentState()
    published = []
    for step in steps:
        if restart:
            state = ResidentState.from_json(json.loads(json.dumps(state.to_json())))
        processor = ResidentProcessor(RULES, worker_id="worker-test", quality_rules=rules)
        if isinstance(step, Tick):
            state, outputs = processor.tick(state, step.clock, step.clock)
        else:
            state, outputs = processor.handle(state, step, step.occurred_at)
        published.append(outputs)
    return state, published


def actions(published: list[list[Output]]) -> list[list[tuple]]:
    """Per step, the urinalysis actions as (status, on_time, occurred_at); each on its topic, keyed by resident."""
    steps = []
    for outputs in published:
        mine = [o for o in outputs if isinstance(o.event, events.UrinalysisRecommendation)]
        assert all((o.topic, o.key) == (topics.URINALYSIS, "res-1") for o in mine)
        steps.append([(o.event.status, o.event.on_time, o.event.occurred_at) for o in mine])
    return steps


def test_an_amber_episode_recommends_a_urinalysis_after_its_escalation():
    state, published = run([a_set(T0, **AMBER)])
    escalation, recommendation = (o.event for o in published[0][1:])
    assert isinstance(escalation, events.Escalation)
    assert recommendation == events.UrinalysisRecommendation(
        event_id=recommendation.event_id, occurred_at=T0, received_at=T0,
        source=events.Source(gateway_id="worker-test"), location_id="loc-1", resident_id="res-1",
        episode_id=escalation.episode_id, status="recommended", risk="medium", recommended_at=T0, due_at=DUE,
        rules_version="carepulse-quality.2")
    assert [r.episode_id for r in state.urinalysis_pathway.recommendations] == [str(escalation.episode_id)]


def test_a_result_in_time_closes_it_and_reports_the_result():
    result = urinalysis_result(T0 + 2 * H)
    _, published = run([a_set(T0, **AMBER), result])
    done = published[1][0].event
    assert actions(published) == [[("recommended", None, T0)], [("done", True, T0 + 2 * H)]]
    assert (done.result_event_id, done.tested_at, done.recommended_at, done.due_at) == (
        result.event_id, T0 + 2 * H, T0, DUE)


LIFECYCLES = [
    pytest.param([a_set(T0, **AMBER), Tick(DUE - S), Tick(DUE), Tick(DUE + H)],
                 [[("recommended", None, T0)], [], [("not_done", None, DUE)], []], id="missing"),
    pytest.param([a_set(T0, **AMBER), Tick(DUE), urinalysis_result(DUE + H)],
                 [[("recommended", None, T0)], [("not_done", None, DUE)], [("done", False, DUE + H)]],
                 id="late-result-after-not-done-corrects-the-record"),
    pytest.param([a_set(T0, **AMBER), a_set(T0 + H, **RED_VITALS), urinalysis_result(T0 + 2 * H), Tick(DUE)],
                 [[("recommended", None, T0)], [("withdrawn", None, T0 + H)], [], []],
                 id="upgraded-to-high-first"),
    pytest.param([a_set(T0, consciousness="C"), a_set(T0 + H, **AMBER), urinalysis_result(T0 + 90 * MIN)],
                 [[("recommended", None, T0)], [], [("done", True, T0 + 90 * MIN)]],
                 id="low-medium-then-medium-is-one-recommendation"),
    pytest.param([urinalysis_result(T0), a_set(T0 + H, **RED_VITALS), Tick(DUE)], [[], [], []],
                 id="a-result-without-a-recommendation-and-a-red-episode-recommend-nothing"),
]


@pytest.mark.parametrize("steps, expected", LIFECYCLES)
def test_lifecycle(steps, expected):
    assert actions(run(steps)[1]) == expected
    assert actions(run(steps, restart=True)[1]) == expected


def test_a_duplicate_result_changes_nothing():
    result = urinalysis_result(T0 + 2 * H)
    once, _ = run([a_set(T0, **AMBER), result])
    again, published = run([result], state=once)
    assert (again, published) == (once, [[]])
    # Even once the resident's recent ids have forgotten it, the pathway recognises the same result.
    forgotten = replace(once, recent=())
    assert actions(run([result], state=forgotten)[1]) == [[]]


def test_reprocessing_the_same_inputs_gives_the_same_event_ids():
    steps = [a_set(T0, **AMBER), Tick(DUE), urinalysis_result(DUE + H)]
    ids = [[o.event.event_id for o in outputs] for outputs in run(steps)[1]]
    assert ids == [[o.event.event_id for o in outputs] for outputs in run(steps)[1]]


@pytest.mark.parametrize("rules", [None, PACKAGED], ids=["no-quality-rules", "packaged-rules-switched-off"])
def test_switched_off_nothing_is_published_and_nothing_kept(rules):
    state, published = run([a_set(T0, **AMBER), urinalysis_result(T0 + H), Tick(DUE)], rules=rules)
    assert actions(published) == [[], [], []]
    assert state.to_json()["urinalysis_pathway"] is None


def test_the_state_survives_a_restart_after_every_step():
    steps = [urinalysis_result(T0 - H), a_set(T0, **AMBER), Tick(DUE), urinalysis_result(DUE + H),
             a_set(DUE + 2 * H, **RED_VITALS)]
    assert run(steps, restart=True) == run(steps)
    assert run(steps)[0].urinalysis_pathway.recommendations


def test_a_result_read_ahead_of_the_observations_does_not_move_the_episode_on():
    """A backlog of clinical actions read before the observations: the urinalysis must not advance the
    resident's event time, or the waiting acknowledgement would be applied before its episode exists and the
    red escalation would go overdue although it was acknowledged in time."""
    steps = [acknowledgement(T0 + 10 * MIN), urinalysis_result(T0 + 2 * H), a_set(T0, **RED_VITALS),
             Tick(T0 + 40 * MIN)]
    _, published = run(steps)
    statuses = [(type(o.event).__name__, getattr(o.event, "status", None)) for outputs in published
                for o in outputs if not isinstance(o.event, events.News2Scored)]
    assert statuses == [("Escalation", "raised"), ("Escalation", "acknowledged")]
