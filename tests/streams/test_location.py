"""The streaming side's location store (streams/location.py) against the batch oracle (indicators/recompute.py).

The two are written separately; here they must agree on every indicator of every location (issue 11's
too) and on live capacity, whatever order the events arrive in, however often each is repeated, and at any
evaluated instant — including one before some of the events, as a daily snapshot is. The store is
round-tripped through JSON first, as a Faust table restored from its changelog would be.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepulse import events as ev
from carepulse.topics import ALERTS, CAPACITY, INDICATORS, INDICATORS_HISTORY
from indicators.quality import (
    ALL_INDICATOR_IDS,
    INDICATOR_IDS,
    local_midnight,
    packaged_rules,
    streamed_indicator_ids,
)
from indicators.recompute import capacity, recompute
from streams.location import (
    IndicatorBoard,
    LocationStore,
    TooLate,
    evaluation_instant,
    retention,
)
from tests.indicators import test_recompute as hand_built

SRC = ev.Source(gateway_id="gw-1")
# Four weeks spanning the spring clock change in England (29 March 2026), so local days of 23 hours occur.
T0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
SPAN_MIN = 40 * 24 * 60
RESIDENTS = ("r1", "r2", "r3")
EPISODES = tuple(uuid.UUID(int=i) for i in range(1, 4))
#: An observation set belongs to one resident; a few ids each, so re-emitted results of one set occur.
SETS = {resident: tuple(uuid.uuid5(uuid.NAMESPACE_OID, f"{resident}-{i}") for i in range(3)) for resident in RESIDENTS}
CARERS = ("c1", "c2", "c3")
PACKAGED = packaged_rules()
#: The packaged rules with the urinalysis pathway switched on, so the store streams all 13 indicators.
PATHWAY_ON = replace(PACKAGED, urinalysis_pathway=replace(PACKAGED.urinalysis_pathway, enabled=True))
#: ... and continuity limits a log of a hundred events can cross (14 contacts and 8 carers a person cannot).
RULES = replace(PATHWAY_ON, indicators={**PATHWAY_ON.indicators, "carer_continuity": replace(
    PATHWAY_ON["carer_continuity"], parameters={"minimum_contacts_per_person": 2, "homecare_more_than_carers": 1,
                                                "care_home_more_than_carers": 1})})


def applied(log: list[ev.Event], rules=PACKAGED) -> LocationStore:
    store = LocationStore({}, rules)
    for event in log:
        store.apply(event)
    return LocationStore(json.loads(json.dumps(store.store)), rules)


def oracle(log: list[ev.Event], as_of: datetime, rules=PACKAGED, indicator_ids=None) -> dict[str, list]:
    by_location: dict[str, list] = {}
    indicator_ids = indicator_ids or streamed_indicator_ids(rules)
    for value in recompute(log, as_of=as_of, rules=rules, indicator_ids=indicator_ids):
        by_location.setdefault(value.location_id, []).append(value)
    return by_location


def test_the_worker_streams_urinalysis_timeliness_only_with_the_pathway_on() -> None:
    assert streamed_indicator_ids(PACKAGED) == INDICATOR_IDS + ("carer_continuity", "travel_time")
    assert streamed_indicator_ids(PATHWAY_ON) == ALL_INDICATOR_IDS


def test_the_hand_built_log_reversed_and_repeated_gives_the_oracles_values() -> None:
    log = (hand_built.care_home() + hand_built.homecare() + hand_built.agency_run() + hand_built.urinalyses()
           + [hand_built.home_profile()])
    store = applied(list(reversed(log + log)), PATHWAY_ON)
    expected = oracle(log, hand_built.AS_OF, PATHWAY_ON)
    assert expected.keys() == {"home-a", "home-b", "home-c"}
    for location_id in expected:
        assert store.evaluate(location_id, hand_built.AS_OF) == expected[location_id]
    assert store.evaluate("home-a", hand_built.AS_OF) == hand_built.EXPECTED[:10] + hand_built.EXPECTED_EXTENSIONS[:3]
    assert store.evaluate("home-c", hand_built.AS_OF)[10:] == hand_built.EXPECTED_EXTENSIONS[6:]


# --- random logs --------------------------------------------------------------------------------------------

@st.composite
def profile_strategy(draw, base: dict) -> ev.LocationProfile:
    if draw(st.booleans()):
        return ev.LocationProfile(**base, setting="care_home", registered_beds=draw(st.sampled_from([2, 12, 45])))
    return ev.LocationProfile(**base, setting="homecare",
                              commissioned_hours_per_week=draw(st.sampled_from([None, 3.0, 40.0])))


@st.composite
def events_strategy(draw) -> ev.Event:
    if draw(st.integers(0, 9)) == 0:  # exactly at a local midnight, the census instant
        at = local_midnight(T0.date() + timedelta(days=draw(st.integers(0, SPAN_MIN // 1440))))
    elif draw(st.booleans()):  # a busy day: a carer's visits, gaps between them, an episode and its urinalysis
        at = T0 + timedelta(days=20, minutes=draw(st.integers(6 * 60, 14 * 60)))
    else:
        at = T0 + timedelta(minutes=draw(st.integers(0, SPAN_MIN)), seconds=draw(st.sampled_from([0, 0, 30])))
    base = dict(event_id=draw(st.uuids()), occurred_at=at, received_at=at, source=SRC,
                location_id=draw(st.sampled_from(["home-a", "home-a", "home-b"])))
    resident = dict(resident_id=draw(st.sampled_from(RESIDENTS)))
    kind = draw(st.sampled_from(["record", "fluid", "fall", "call", "visit", "check_in", "check_out", "cancel",
                                 "score", "escalation", "urinalysis", "profile"]))
    if kind == "profile":
        return draw(profile_strategy(base))
    if kind == "record":
        return ev.ResidentRecord(**base, **resident, status=draw(st.sampled_from(["admitted", "admitted",
                                                                                  "in_hospital", "discharged"])),
                                 sex=draw(st.sampled_from(["female", "male", None])),
                                 fluid_target_ml=draw(st.sampled_from([None, 1500])))
    if kind == "fluid":
        volume = st.floats(0, 500, allow_nan=False)
        return ev.FluidIntake(**base, **resident, offered_ml=draw(volume), consumed_ml=draw(volume),
                              method=draw(st.sampled_from(["carer", "carer", "smart_cup"])),
                              recorded_by=draw(st.sampled_from(CARERS)))
    if kind == "fall":
        return ev.Fall(**base, **resident, detected_by="device", confirmed=draw(st.booleans()),
                       harm=draw(st.sampled_from([None, "none", "low", "severe"])),
                       alert_id=draw(st.sampled_from([None, "a1", "a2"])), recorded_by="c1")
    if kind == "call":
        return ev.CallBell(**base, call_id=draw(st.sampled_from(["c1", "c2", "c3", "c4", "c5"])),
                           phase=draw(st.sampled_from(["raised", "answered"])),
                           priority=draw(st.sampled_from(["routine", "emergency"])),
                           call_type=draw(st.sampled_from(["call_point"] * 5 + ["test"])))
    visit = dict(visit_id=draw(st.sampled_from(["v1", "v2", "v3", "v4", "v5", "v6"])))
    if kind == "visit":
        start = at + timedelta(hours=draw(st.integers(-6, 30)))
        tasks = [ev.VisitTask(task_id=f"m{i}", kind="medication", time_critical=draw(st.booleans()))
                 for i in range(draw(st.integers(0, 2)))]
        return ev.VisitPlanned(**base, **resident, **visit, planned_start=start, planned_end=start + timedelta(hours=1),
                               time_critical=draw(st.booleans()), tasks=tasks)
    if kind == "check_in":
        return ev.VisitCheckIn(**base, **resident, **visit, carer_id=draw(st.sampled_from(CARERS)), verification="gps")
    if kind == "check_out":
        outcomes = [ev.TaskOutcome(task_id=f"m{i}", outcome=draw(st.sampled_from(["done", "refused", "not_done"])))
                    for i in range(draw(st.integers(0, 2)))]
        return ev.VisitCheckOut(**base, **resident, **visit, carer_id="c1", task_outcomes=outcomes)
    if kind == "cancel":
        return ev.VisitCancelled(**base, **resident, **visit, by_client_in_advance=draw(st.booleans()))
    if kind == "score":
        complete = draw(st.booleans())
        return ev.News2Scored(**base, **resident, observation_set_id=draw(st.sampled_from(SETS[resident["resident_id"]])), complete=complete,
                              parameter_scores={}, any_single_3=False,
                              total=draw(st.integers(0, 8)) if complete else None,
                              monitoring_interval_minutes=draw(st.sampled_from([None, 60, 360, 720])),
                              rules_version="news2.1")
    if kind == "urinalysis":
        return ev.UrinalysisResult(**base, **resident, recorded_by="c1", reader="visual", leukocytes="trace",
                                   nitrites="negative", blood="negative", protein="negative",
                                   episode_id=draw(st.sampled_from([None, None, *EPISODES])))
    raised_at = at - timedelta(minutes=draw(st.sampled_from([0, 0, 20, 90])))
    status = draw(st.sampled_from(["raised", "upgraded", "acknowledged", "resolved"]))
    return ev.Escalation(**base, **resident, episode_id=draw(st.sampled_from(EPISODES)), status=status,
                         risk=draw(st.sampled_from(["low-medium", "medium", "high"])), total=5, any_single_3=False,
                         response="r", rules_version="e.1", raised_at=raised_at,
                         deadline_at=draw(st.sampled_from([None, raised_at + timedelta(minutes=30)])),
                         acknowledged_at=at if status == "acknowledged" else None)


#: Instants (minutes after T0) from the first carer runs' morning to two days after: most of the action.
BUSY_DAYS_AND_AFTER = st.integers(20 * 1440 + 7 * 60, 23 * 1440)


def envelope(draw, at: datetime) -> dict:
    return dict(event_id=draw(st.uuids()), occurred_at=at, received_at=at, source=SRC,
                location_id=draw(st.sampled_from(["home-a", "home-b"])))


@st.composite
def carer_run(draw) -> list[ev.Event]:
    """One carer's visits through a morning, each checked out: gaps of travel, breaks and overlaps. Visit ids
    are partly shared with the random events, so some visits have two check-ins (the first counts)."""
    base = envelope(draw, T0)
    carer = dict(carer_id=draw(st.sampled_from(CARERS)))
    at = T0 + timedelta(days=draw(st.sampled_from([20, 21])), hours=7)
    run = []
    for _ in range(draw(st.integers(2, 5))):
        visit = dict(visit_id=draw(st.sampled_from([f"v{i}" for i in range(1, 13)])),
                     resident_id=draw(st.sampled_from(RESIDENTS)))
        stay = timedelta(minutes=draw(st.integers(15, 60)))
        run += [ev.VisitCheckIn(**{**base, "event_id": draw(st.uuids()), "occurred_at": at, "received_at": at},
                                **visit, **carer, verification="gps"),
                ev.VisitCheckOut(**{**base, "event_id": draw(st.uuids()), "occurred_at": at + stay,
                                    "received_at": at + stay}, **visit, **carer)]
        at += stay + timedelta(minutes=draw(st.integers(-10, 90)))
    return run


@st.composite
def amber_episode(draw) -> list[ev.Event]:
    """An amber escalation, perhaps upgraded to high, and urinalysis results before or after, some naming an
    episode (this one or another)."""
    raised_at = T0 + timedelta(days=draw(st.integers(0, 39)), minutes=draw(st.integers(0, 1439)))
    base = envelope(draw, raised_at)
    who = dict(resident_id=draw(st.sampled_from(RESIDENTS)))
    episode_id = draw(st.sampled_from(EPISODES))
    band = dict(**who, episode_id=episode_id, total=5, any_single_3=False, response="r", rules_version="e.1")
    episode = [ev.Escalation(**base, **band, status="raised", risk=draw(st.sampled_from(["low-medium", "medium"])),
                             raised_at=raised_at, deadline_at=raised_at + timedelta(hours=1))]
    if draw(st.booleans()):
        upgraded_at = raised_at + timedelta(minutes=draw(st.integers(-30, 480)))
        # Mostly the same resident; another one's band in the same episode (bad data) tests which resident
        # the episode belongs to: its first band's.
        episode.append(ev.Escalation(**{**base, "event_id": draw(st.uuids()), "occurred_at": upgraded_at,
                                        "received_at": upgraded_at},
                                     **{**band, "resident_id": draw(st.sampled_from([who["resident_id"]] * 3
                                                                                    + list(RESIDENTS)))},
                                     status="upgraded", risk="high", raised_at=upgraded_at,
                                     deadline_at=upgraded_at + timedelta(minutes=30)))
    for _ in range(draw(st.integers(0, 2))):
        tested_at = raised_at + timedelta(minutes=draw(st.integers(-60, 600)))
        episode.append(ev.UrinalysisResult(
            **{**base, "event_id": draw(st.uuids()), "occurred_at": tested_at, "received_at": tested_at}, **who,
            recorded_by="c1", reader="smartphone_reader", leukocytes="+", nitrites="negative", blood="trace",
            protein="negative", episode_id=draw(st.sampled_from([None, None, episode_id, *EPISODES]))))
    return episode


@st.composite
def profiles_strategy(draw) -> list[ev.LocationProfile]:
    """A few profiles, mostly from before the span, so that most logs' locations have capacity."""
    return [draw(profile_strategy(envelope(draw, T0 + timedelta(days=draw(st.sampled_from([-1, -1, 10]))))))
            for _ in range(draw(st.integers(0, 3)))]


@settings(deadline=None)
@given(events=st.lists(events_strategy(), min_size=1, max_size=120), profiles=profiles_strategy(),
       runs=st.lists(carer_run(), max_size=3), episodes=st.lists(amber_episode(), max_size=4),
       rnd=st.randoms(use_true_random=False),
       as_of_min=st.one_of(st.integers(0, SPAN_MIN + 60), BUSY_DAYS_AND_AFTER))
def test_any_log_in_any_order_with_repeats_equals_the_oracle(events, profiles, runs, episodes, rnd,
                                                             as_of_min) -> None:
    log = events + profiles + [e for run in runs for e in run] + [e for episode in episodes for e in episode]
    delivered = log + rnd.sample(log, k=len(log) // 3)
    rnd.shuffle(delivered)
    store = applied(delivered, RULES)
    as_of = T0 + timedelta(minutes=as_of_min)
    for location_id, values in oracle(log, as_of, RULES).items():
        assert store.evaluate(location_id, as_of) == values
    expected_capacity = {c.location_id: c for c in capacity(log, as_of=as_of)}
    for location_id in {e.location_id for e in log}:
        assert store.capacity(location_id, as_of) == expected_capacity.get(location_id)


# --- limits -------------------------------------------------------------------------------------------------

def fluid(at: datetime, ml: float = 200) -> ev.FluidIntake:
    return ev.FluidIntake(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SRC, location_id="home-a",
                          resident_id="r1", offered_ml=ml, consumed_ml=ml, method="carer", recorded_by="c1")


def test_an_event_older_than_every_window_is_refused_and_old_days_are_pruned() -> None:
    store = LocationStore({})
    keep = retention(store.rules)
    assert keep >= timedelta(days=90)  # the longest window (falls with harm) is 90 days
    store.apply(fluid(T0))
    store.apply(fluid(T0 + keep))  # exactly the retention behind is still applied
    with pytest.raises(TooLate, match="beyond every indicator window"):
        store.apply(fluid(T0 - timedelta(seconds=1)))
    store.apply(fluid(T0 + keep + timedelta(days=2)))
    assert store.prune("home-a") == 1
    assert store.directory("home-a")["buckets"] == sorted(k for k in store.store if k.startswith("home-a|"))
    assert not any("2026-03-10" in key for key in store.store)


def test_an_event_that_feeds_no_indicator_is_refused() -> None:
    reading = ev.DeviceReading(event_id=uuid.uuid4(), occurred_at=T0, received_at=T0, source=SRC,
                               location_id="home-a", resident_id="r1", characteristic="x", values={})
    with pytest.raises(ValueError, match="does not feed any care-quality indicator"):
        LocationStore({}).apply(reading)


def test_a_repeated_drink_counts_once_and_a_late_one_corrects_its_day() -> None:
    store = LocationStore({})
    day = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    store.apply(ev.ResidentRecord(event_id=uuid.uuid4(), occurred_at=day - timedelta(days=2), received_at=day,
                                  source=SRC, location_id="home-a", resident_id="r1", status="admitted",
                                  sex="female"))
    drink = fluid(day, 400)
    for event in (drink, drink, fluid(day + timedelta(days=3))):
        store.apply(event)
    as_of = day + timedelta(days=4)
    consumed = store.evaluate("home-a", as_of)[3]
    assert consumed.indicator_id == "hydration_consumed_vs_offered"
    assert consumed.numerator == 600
    store.apply(fluid(day + timedelta(hours=2), 100))  # late: three days behind the location's clock
    assert store.evaluate("home-a", as_of)[3].numerator == 700
    assert store.clock("home-a") == day + timedelta(days=3)


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)])
def test_an_admission_at_the_census_midnight_counts_as_the_oracle_says(offset: timedelta) -> None:
    admitted = local_midnight(T0.date() + timedelta(days=5)) + offset
    log = [ev.ResidentRecord(event_id=uuid.uuid4(), occurred_at=admitted, received_at=admitted, source=SRC,
                             location_id="home-a", resident_id="r1", status="admitted", sex="female")]
    as_of = T0 + timedelta(days=10)
    values = applied(log).evaluate("home-a", as_of)
    assert values == oracle(log, as_of)["home-a"]
    hydration_days = values[2].denominator
    assert hydration_days == (4 if offset <= timedelta(0) else 3)


def test_a_busy_location_is_evaluated_at_most_once_per_refresh_interval() -> None:
    store = LocationStore({})
    for event in hand_built.care_home():
        store.apply(event)
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5), refresh=timedelta(seconds=15))
    now = hand_built.AS_OF
    assert board.updates("home-a", now)
    drink = fluid(now - timedelta(days=2))  # a late drink two days back: it changes a whole resident-day
    store.apply(drink)
    board.applied(drink)
    assert board.updates("home-a", now + timedelta(seconds=5)) == []  # the change waits for the interval
    later = board.updates("home-a", now + timedelta(seconds=15))
    assert any(event.indicator_id == "hydration_consumed_vs_offered" for _, _, event in later)


@pytest.mark.parametrize(("clock", "expected"), [
    (None, datetime(2026, 3, 10, 11, 55, tzinfo=timezone.utc)),  # nothing yet: the wall clock less the lag
    (datetime(2026, 3, 10, 11, 59, 30, tzinfo=timezone.utc), datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)),
    (datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc), datetime(2026, 3, 10, 12, 1, tzinfo=timezone.utc)),
    # quiet for an hour: windows still slide (and 23:00 deadlines pass) on the wall clock
    (datetime(2026, 3, 10, 11, 0, tzinfo=timezone.utc), datetime(2026, 3, 10, 11, 55, tzinfo=timezone.utc)),
])
def test_indicators_are_evaluated_after_the_newest_event_or_on_the_wall_clock_when_quiet(clock, expected) -> None:
    now = datetime(2026, 3, 10, 12, 0, 42, tzinfo=timezone.utc)
    assert evaluation_instant(clock, now, timedelta(minutes=5)) == expected


def test_the_board_knows_the_stores_locations_without_rescanning_it_each_tick() -> None:
    store = LocationStore({})
    store.apply(fluid(T0))
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5))
    assert board.locations() == ["home-a"]  # read from the store once (a restarted worker's restored table)
    other = fluid(T0).model_copy(update={"event_id": uuid.uuid4(), "location_id": "home-b"})
    store.apply(other)
    board.applied(other)
    assert board.locations() == ["home-a", "home-b"]
    store.store.clear()
    board.forget()  # a rebalance: the table may hold other locations now
    assert board.locations() == []


def profile(at: datetime, location_id: str = "home-a", **fields) -> ev.LocationProfile:
    return ev.LocationProfile(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SRC,
                              location_id=location_id, **fields)


def test_a_profile_is_never_too_late_and_replaced_ones_are_pruned_after_the_retention() -> None:
    store = LocationStore({})
    keep = retention(store.rules)
    first, second, third = (profile(T0 + timedelta(days=d), setting="care_home", registered_beds=beds)
                            for d, beds in ((0, 12), (1, 45), (50, 20)))
    for event in (fluid(T0 + keep + timedelta(days=3)), first, third, second):
        store.apply(event)
    store.prune("home-a")
    # The second replaced the first before the retention horizon; it still holds there, until the third.
    assert set(store.directory("home-a")["profiles"]) == {str(second.event_id), str(third.event_id)}
    assert store.capacity("home-a", T0 + timedelta(days=49)).max_beds == 45


def board_outputs(board: IndicatorBoard, location_id: str, now: datetime) -> dict[str, list]:
    """(key, event) of each of `board.updates`, by topic name."""
    outputs: dict[str, list] = {}
    for spec, key, event in board.updates(location_id, now):
        outputs.setdefault(spec.name, []).append((key, event))
    return outputs


@pytest.mark.parametrize(("rules", "published"), [(PACKAGED, 12), (PATHWAY_ON, 13)])
def test_the_board_publishes_the_streamed_indicators(rules, published) -> None:
    store = applied(hand_built.care_home() + hand_built.urinalyses() + [hand_built.home_profile()], rules)
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5))
    outputs = board_outputs(board, "home-a", hand_built.AS_OF)
    current = [update for _, update in outputs[INDICATORS.name]]
    assert [u.indicator_id for u in current] == list(streamed_indicator_ids(rules))
    assert len(current) == len(outputs[INDICATORS_HISTORY.name]) == published
    red = [u.indicator_id for u in current if u.status == "red"]
    assert red and [alert.indicator_id for _, alert in outputs[ALERTS.name]] == red


def test_capacity_is_published_when_it_changes_at_the_evaluation_instant() -> None:
    log = hand_built.homecare() + [profile(hand_built.t(11, 1), "home-b", setting="homecare",
                                           commissioned_hours_per_week=10.0)]
    store = applied(log)
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5))
    # The newest event is v6's check-out (22 Nov 09:05), so the board evaluates as of 09:06: v9, v1, v2, v3,
    # v5 and v6 were planned in the 7 days before (v4 was cancelled by the client), 1 h each.
    now = hand_built.t(11, 22, 9, 11)
    [(key, first)] = board_outputs(board, "home-b", now)[CAPACITY.name]
    assert key == "home-b"
    assert (first.occurred_at, first.setting, first.people_receiving_care, first.planned_hours_7d,
            first.commissioned_hours_7d, first.commissioned_hours_not_planned, first.max_beds) == \
        (hand_built.t(11, 22, 9, 6), "homecare", 1, 6.0, 10.0, 4.0, None)
    assert first.profile_event_id == log[-1].event_id
    assert CAPACITY.name not in board_outputs(board, "home-b", now + timedelta(minutes=1))  # same hours
    # Time passes: 22 Nov 12:00's visit (v8, cancelled by the provider) joins the roster with no new event.
    later = board_outputs(board, "home-b", hand_built.t(11, 22, 12, 11))[CAPACITY.name][0][1]
    assert (later.occurred_at, later.planned_hours_7d) == (hand_built.t(11, 22, 12, 6), 7.0)
    assert later.event_id != first.event_id
    board.forget()  # a rebalance: published again, with the same id for the same figures at the same instant
    assert board_outputs(board, "home-b", hand_built.t(11, 22, 12, 11))[CAPACITY.name][0][1] == later


def test_a_location_without_a_profile_has_no_capacity_and_a_care_homes_counts_beds() -> None:
    store = applied(hand_built.care_home() + hand_built.homecare() + [hand_built.home_profile()])
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5))
    assert CAPACITY.name not in board_outputs(board, "home-b", hand_built.AS_OF)
    home = board_outputs(board, "home-a", hand_built.AS_OF)[CAPACITY.name][0][1]
    assert (home.setting, home.max_beds, home.occupied_beds, home.reserved_beds, home.vacant_beds,
            home.over_max_beds, home.planned_hours_7d) == ("care_home", 30, 4, 0, 26, 0, None)


def test_a_visit_cancelled_by_the_client_then_by_the_provider_is_planned_care() -> None:
    agency = profile(hand_built.t(11, 1), "home-b", setting="homecare", commissioned_hours_per_week=10.0)
    recancelled = hand_built.make(ev.VisitCancelled, hand_built.t(11, 20, 19), location_id="home-b",
                                  resident_id="client-1", visit_id="v4", by_client_in_advance=False)
    log = hand_built.homecare() + [agency, recancelled]
    at = hand_built.t(11, 21, 9)
    assert applied(list(reversed(log))).capacity("home-b", at) == capacity(log, as_of=at)[0]
    assert capacity(log, as_of=at)[0].planned_hours_7d == 5.0  # v4 counts with v9, v1, v2 and v3
