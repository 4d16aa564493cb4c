"""The urinalysis pathway's lifecycle (indicators/urinalysis.py): tables of input steps and the actions they
publish, and a property test that for any episodes, results and delivery order the status it ends in is the
``urinalysis_timeliness`` indicator's classification of the same events (via ``recompute._amber_episodes``).

Target 6 h (the packaged ``target_s``), pathway switched on for the test (it is off in the packaged rules).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepulse import events as ev
from indicators import quality as q
from indicators import recompute
from indicators import urinalysis as u
from indicators.urinalysis import PathwayState, Status

QUALITY = q.packaged_rules()
RULES = replace(u.PathwayRules.from_quality(QUALITY), enabled=True)
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
DUE = T0 + 6 * H
DONE, NOT_DONE, WITHDRAWN, RECOMMENDED = Status.DONE, Status.NOT_DONE, Status.WITHDRAWN, Status.RECOMMENDED


def test_the_rules_come_from_the_quality_rules_and_the_pathway_is_off_by_default():
    assert u.PathwayRules.from_quality(QUALITY) == u.PathwayRules(
        enabled=False, recommend_at_risks=("low-medium", "medium"), target_s=21600, keep_s=28 * 86400,
        version="carepulse-quality.2")


# -- steps -------------------------------------------------------------------------------------------
def band(episode: str, risk: str, at: datetime) -> tuple:
    return ("band", episode, risk, at)


def result(name: str, at: datetime, episode: str | None = None) -> tuple:
    return ("result", name, at, episode)


def clock(at: datetime) -> tuple:
    return ("clock", at)


def apply(state: PathwayState, step: tuple, rules: u.PathwayRules = RULES) -> tuple[PathwayState, list[u.Action]]:
    match step:
        case ("band", episode, risk, at):
            return u.on_band(state, rules, episode, risk, at)
        case ("result", name, at, episode):
            return u.on_result(state, rules, name, at, episode)
        case ("clock", at):
            return u.on_clock(state, at)
    raise AssertionError(step)


def run(steps: list[tuple], rules: u.PathwayRules = RULES, *, restart: bool = False
        ) -> tuple[PathwayState, list[tuple]]:
    """Every action as (episode, status, on_time, at, result); with `restart`, the state goes through its
    JSON before each step, as the changelog table would restore it."""
    state, published = PathwayState(), []
    for step in steps:
        if restart:
            state = PathwayState.from_json(json.loads(json.dumps(state.to_json())))
        state, actions = apply(state, step, rules)
        published += [(a.recommendation.episode_id, a.status, a.on_time, a.at,
                       a.result.event_id if a.result else None) for a in actions]
    return state, published


LIFECYCLES = [
    pytest.param([band("e1", "medium", T0), result("r1", T0 + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + H, "r1")], id="result-in-time"),
    pytest.param([band("e1", "low-medium", T0), result("r1", DUE)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, DUE, "r1")], id="result-at-the-due-time"),
    pytest.param([band("e1", "medium", T0), clock(DUE - timedelta(microseconds=1)), clock(DUE), clock(DUE + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", NOT_DONE, None, DUE, None)], id="missing"),
    pytest.param([band("e1", "medium", T0), clock(DUE), result("r1", DUE + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", NOT_DONE, None, DUE, None),
                  ("e1", DONE, False, DUE + H, "r1")], id="late-result-after-not-done"),
    pytest.param([band("e1", "medium", T0), result("r1", DUE + H), clock(DUE + 2 * H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, False, DUE + H, "r1")],
                 id="late-result-before-the-judgement"),
    pytest.param([band("e1", "medium", T0), band("e1", "high", T0 + H), result("r1", T0 + 2 * H), clock(DUE)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", WITHDRAWN, None, T0 + H, None)],
                 id="upgraded-to-high-before-a-result"),
    pytest.param([band("e1", "medium", T0), result("r1", T0 + H), band("e1", "high", T0 + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + H, "r1")],
                 id="result-at-the-moment-of-the-upgrade"),
    pytest.param([band("e1", "medium", T0), result("r1", T0 + 2 * H), band("e1", "high", T0 + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + 2 * H, "r1"),
                  ("e1", WITHDRAWN, None, T0 + H, None)], id="upgrade-read-after-a-later-result-corrects-it"),
    pytest.param([band("e1", "medium", T0), clock(DUE), band("e1", "high", DUE + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", NOT_DONE, None, DUE, None)],
                 id="upgraded-after-the-due-time"),
    pytest.param([result("r0", T0 - MIN), band("e1", "medium", T0), clock(DUE)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", NOT_DONE, None, DUE, None)],
                 id="a-result-before-the-recommendation-does-not-count"),
    pytest.param([result("r1", T0 + H), band("e1", "medium", T0)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + H, "r1")],
                 id="result-read-before-the-observations"),
    pytest.param([band("e1", "medium", T0), result("r2", DUE + H), result("r1", T0 + H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, False, DUE + H, "r2"),
                  ("e1", DONE, True, T0 + H, "r1")], id="an-earlier-result-read-later-corrects-it"),
    pytest.param([band("e1", "medium", T0), result("r1", T0 + H), result("r1", T0 + H), result("r2", T0 + 2 * H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + H, "r1")],
                 id="a-duplicate-or-a-second-result-changes-nothing"),
    pytest.param([band("e1", "low-medium", T0), band("e1", "medium", T0 + H), result("r1", T0 + 2 * H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", DONE, True, T0 + 2 * H, "r1")],
                 id="one-recommendation-per-episode"),
    pytest.param([band("e1", "medium", T0), band("e1", "medium", T0 - 10 * MIN), clock(DUE - 10 * MIN)],
                 [("e1", RECOMMENDED, None, T0, None), ("e1", RECOMMENDED, None, T0 - 10 * MIN, None),
                  ("e1", NOT_DONE, None, DUE - 10 * MIN, None)], id="an-earlier-amber-band-moves-it"),
    pytest.param([band("e1", "high", T0), result("r1", T0 + H), clock(DUE)], [], id="high-at-once-recommends-none"),
    pytest.param([band("e1", "medium", T0), band("e2", "low-medium", T0 + H), result("r1", T0 + 2 * H)],
                 [("e1", RECOMMENDED, None, T0, None), ("e2", RECOMMENDED, None, T0 + H, None),
                  ("e1", DONE, True, T0 + 2 * H, "r1"), ("e2", DONE, True, T0 + 2 * H, "r1")],
                 id="a-result-naming-no-episode-answers-every-open-recommendation"),
    pytest.param([band("e1", "medium", T0), band("e2", "low-medium", T0 + H), result("r1", T0 + 2 * H, "e2"),
                  result("r2", T0 + 3 * H, "e9"), clock(DUE)],
                 [("e1", RECOMMENDED, None, T0, None), ("e2", RECOMMENDED, None, T0 + H, None),
                  ("e2", DONE, True, T0 + 2 * H, "r1"), ("e1", NOT_DONE, None, DUE, None)],
                 id="a-result-naming-an-episode-answers-that-one-only"),
    pytest.param([result("r1", T0 + H, "e2"), band("e1", "medium", T0), band("e2", "medium", T0 + MIN)],
                 [("e1", RECOMMENDED, None, T0, None), ("e2", RECOMMENDED, None, T0 + MIN, None),
                  ("e2", DONE, True, T0 + H, "r1")], id="a-result-naming-an-episode-read-before-it"),
]


@pytest.mark.parametrize("steps, expected", LIFECYCLES)
def test_lifecycle(steps, expected):
    assert run(steps)[1] == expected
    assert run(steps, restart=True)[1] == expected


def test_switched_off_it_recommends_nothing_and_keeps_nothing():
    steps = [band("e1", "medium", T0), result("r1", T0 + H), clock(DUE)]
    assert run(steps, replace(RULES, enabled=False)) == (PathwayState(), [])


def test_a_recommending_risk_is_what_the_rules_say():
    only_medium = replace(RULES, recommend_at_risks=("medium",))
    assert run([band("e1", "low-medium", T0), band("e1", "medium", T0 + H)], only_medium)[1] == [
        ("e1", RECOMMENDED, None, T0 + H, None)]


def test_the_action_ids_follow_the_content_so_reprocessing_repeats_them():
    steps = [band("e1", "medium", T0), clock(DUE), result("r1", DUE + H)]
    ids = [[a.event_id for a in apply(state, step)[1]] for state, step in zip(_states(steps), steps)]
    assert ids == [[a.event_id for a in apply(state, step)[1]] for state, step in zip(_states(steps), steps)]
    flat = [i for step in ids for i in step]
    assert len(flat) == len(set(flat)) == 3 and {i.version for i in flat} == {5}


def _states(steps: list[tuple]) -> list[PathwayState]:
    states = [PathwayState()]
    for step in steps[:-1]:
        states.append(apply(states[-1], step)[0])
    return states


def test_old_recommendations_and_results_are_pruned_after_the_indicator_window():
    state, _ = run([band("e1", "medium", T0), result("r1", T0 + H), band("e2", "medium", T0 + 3 * 24 * H)])
    keep = timedelta(days=28)
    assert u.prune(state, RULES, T0 + keep) is state
    pruned = u.prune(state, RULES, T0 + H + keep + timedelta(seconds=1))
    assert ([r.episode_id for r in pruned.recommendations], pruned.results) == (["e2"], ())


def test_the_state_keeps_a_bounded_number_of_recommendations_and_results():
    steps = [s for i in range(12) for s in (band(f"e{i:02}", "medium", T0 + i * H), result(f"r{i:02}", T0 + i * H))]
    state, _ = run(steps)
    assert [r.episode_id for r in state.recommendations] == [f"e{i:02}" for i in range(4, 12)]
    assert [r.event_id for r in state.results] == [f"r{i:02}" for i in range(4, 12)]


# -- agreement with the indicator --------------------------------------------------------------------
LOCATION, RESIDENT = "loc-prop", "res-prop"
#: Minutes from an episode's first amber band, often exactly at or next to the due time (6 h).
OFFSET_MIN = st.one_of(st.integers(-60, 20 * 60), st.sampled_from([0, 359, 360, 361]))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple], list[tuple], datetime]:
    """Episodes (each: amber bands, maybe a later high band, in the order the resident processor raises them),
    the resident's results, judgement ticks, all interleaved in any order; and a final judgement instant after
    every event."""
    bands: list[list[tuple]] = []
    for index in range(draw(st.integers(1, 3))):
        episode = str(uuid.UUID(int=index + 1))
        start = T0 + draw(st.integers(0, 3 * 24 * 60)) * MIN
        mine = [band(episode, draw(st.sampled_from(["low-medium", "medium"])), start)]
        if draw(st.booleans()):  # an upgrade to medium, possibly timed earlier (readings out of order)
            mine.append(band(episode, "medium", start + draw(st.integers(-30, 180)) * MIN))
        if draw(st.booleans()):
            mine.append(band(episode, "high", start + draw(OFFSET_MIN) * MIN))
        bands.append(mine)
    starts = [b[0][3] for b in bands]
    # A result names one of the episodes, an unknown one, or (mostly) none.
    names = st.one_of(st.none(), st.none(), st.sampled_from([b[0][1] for b in bands] + [str(uuid.UUID(int=99))]))
    results = [result(str(uuid.UUID(int=1000 + i)), draw(st.sampled_from(starts)) + draw(OFFSET_MIN) * MIN,
                      draw(names))
               for i in range(draw(st.integers(0, 5)))]
    results += draw(st.lists(st.sampled_from(results), max_size=2)) if results else []  # redelivered
    times = [s[3] for b in bands for s in b] + [r[2] for r in results]
    # The final judgement comes after every event: a while after, or exactly at a due time still ahead.
    after = max(times) + draw(st.integers(1, 10 * 3600)) * timedelta(seconds=1)
    dues = [start + 6 * H for start in starts if start + 6 * H > max(times)]
    final = draw(st.sampled_from([after, *dues]))
    ticks = [clock(min(starts) + draw(st.integers(0, 40 * 60)) * MIN) for _ in range(draw(st.integers(0, 3)))]
    ticks = [t for t in ticks if t[1] <= final]
    order = draw(st.permutations([*(s for b in bands for s in b), *results, *ticks]))
    # Each episode's bands stay in their own order, wherever the permutation put them.
    queues = {b[0][1]: list(b) for b in bands}
    steps = [queues[s[1]].pop(0) if s[0] == "band" else s for s in order]
    return steps, results, final


ENVELOPE = dict(source=ev.Source(gateway_id="w"), location_id=LOCATION, resident_id=RESIDENT)


def _escalation(step: tuple, status: str) -> ev.Escalation:
    _, episode, risk, at = step
    return ev.Escalation(event_id=uuid.uuid4(), occurred_at=at, received_at=at, **ENVELOPE,
                         episode_id=uuid.UUID(episode), status=status, risk=risk, total=None, any_single_3=True,
                         response="r", rules_version="t", raised_at=at)


def _result_event(step: tuple) -> ev.UrinalysisResult:
    _, name, at, episode = step
    return ev.UrinalysisResult(event_id=uuid.UUID(name), occurred_at=at, received_at=at, **ENVELOPE,
                               recorded_by="nurse-1", reader="visual", leukocytes="negative", nitrites="negative",
                               blood="negative", protein="negative", episode_id=uuid.UUID(episode) if episode else None)


def _indicator_class(episode: q.AmberEpisode, window_end: datetime) -> str:
    value = q.urinalysis_timeliness(LOCATION, window_end - timedelta(days=28), window_end, episodes=[episode],
                                    rules=QUALITY)
    if value.details["pending"]:
        return "pending"
    if value.details["upgraded_to_high"]:
        return "upgraded"
    return "on_time" if value.numerator else "late"


STATUS_CLASS = {(DONE, True): "on_time", (DONE, False): "late", (NOT_DONE, None): "late",
                (WITHDRAWN, None): "upgraded", (RECOMMENDED, None): "pending"}


@given(scenarios())
def test_the_lifecycle_ends_where_the_indicator_classifies_the_episode(scenario):
    steps, results, final = scenario
    state, published = run([*steps, clock(final)])
    seen: set[str] = set()
    escalations = [_escalation(s, "upgraded" if s[1] in seen or seen.add(s[1]) else "raised")
                   for s in steps if s[0] == "band"]
    log = [*escalations, *{_result_event(r) for r in results}]
    oracle = {e.episode_id: e for e in recompute._amber_episodes(log, QUALITY)}
    assert {r.episode_id for r in state.recommendations} == set(oracle)
    for rec in state.recommendations:
        expected = oracle[rec.episode_id]
        assert STATUS_CLASS[rec.status()] == _indicator_class(expected, final), (rec, expected)
        assert (rec.recommended_at, rec.upgraded_to_high_at, rec.result.tested_at if rec.result else None) == (
            expected.recommended_at, expected.upgraded_to_high_at, expected.urinalysis_at)
        # What was published last for the episode is its status now.
        last = [p for p in published if p[0] == rec.episode_id][-1]
        assert last[1:3] == rec.status()
    # Delivered again (a replay after a restart), the same inputs publish nothing.
    assert run([*steps, clock(final)])[0] == state
    again = state
    for step in [*steps, clock(final)]:
        again, actions = apply(again, step)
        assert actions == []
