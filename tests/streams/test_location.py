"""The streaming side's location store (streams/location.py) against the batch oracle (indicators/recompute.py).

The two are written separately; here they must agree on every indicator of every location, whatever order
the events arrive in, however often each is repeated, and at any evaluated instant — including one before
some of the events, as a daily snapshot is. The store is round-tripped through JSON first, as a Faust table
restored from its changelog would be.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carepulse import events as ev
from indicators.quality import local_midnight
from indicators.recompute import recompute
from streams.location import IndicatorBoard, LocationStore, TooLate, evaluation_instant, retention
from tests.indicators import test_recompute as hand_built

SRC = ev.Source(gateway_id="gw-1")
# Four weeks spanning the spring clock change in England (29 March 2026), so local days of 23 hours occur.
T0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
SPAN_MIN = 40 * 24 * 60
RESIDENTS = ("r1", "r2", "r3")
EPISODES = tuple(uuid.UUID(int=i) for i in range(1, 4))
#: An observation set belongs to one resident; a few ids each, so re-emitted results of one set occur.
SETS = {resident: tuple(uuid.uuid5(uuid.NAMESPACE_OID, f"{resident}-{i}") for i in range(3)) for resident in RESIDENTS}


def applied(log: list[ev.Event]) -> LocationStore:
    store = LocationStore({})
    for event in log:
        store.apply(event)
    return LocationStore(json.loads(json.dumps(store.store)))


def oracle(log: list[ev.Event], as_of: datetime, beds: dict | None = None) -> dict[str, list]:
    by_location: dict[str, list] = {}
    for value in recompute(log, as_of=as_of, bed_counts=beds):
        by_location.setdefault(value.location_id, []).append(value)
    return by_location


def test_the_hand_built_log_reversed_and_repeated_gives_the_oracles_values() -> None:
    log = hand_built.care_home() + hand_built.homecare()
    store = applied(list(reversed(log + log)))
    expected = oracle(log, hand_built.AS_OF, {"home-a": 30})
    assert expected.keys() == {"home-a", "home-b"}
    assert store.evaluate("home-a", hand_built.AS_OF, beds=30) == expected["home-a"]
    assert store.evaluate("home-b", hand_built.AS_OF) == expected["home-b"]
    assert store.evaluate("home-a", hand_built.AS_OF, beds=30) == hand_built.EXPECTED[:10]


# --- random logs --------------------------------------------------------------------------------------------

@st.composite
def events_strategy(draw) -> ev.Event:
    if draw(st.integers(0, 9)) == 0:  # exactly at a local midnight, the census instant
        at = local_midnight(T0.date() + timedelta(days=draw(st.integers(0, SPAN_MIN // 1440))))
    else:
        at = T0 + timedelta(minutes=draw(st.integers(0, SPAN_MIN)), seconds=draw(st.sampled_from([0, 0, 30])))
    base = dict(event_id=draw(st.uuids()), occurred_at=at, received_at=at, source=SRC,
                location_id=draw(st.sampled_from(["home-a", "home-a", "home-b"])))
    resident = dict(resident_id=draw(st.sampled_from(RESIDENTS)))
    kind = draw(st.sampled_from(["record", "fluid", "fall", "call", "visit", "check_in", "check_out", "cancel",
                                 "score", "escalation"]))
    if kind == "record":
        return ev.ResidentRecord(**base, **resident, status=draw(st.sampled_from(["admitted", "admitted",
                                                                                  "in_hospital", "discharged"])),
                                 sex=draw(st.sampled_from(["female", "male", None])),
                                 fluid_target_ml=draw(st.sampled_from([None, 1500])))
    if kind == "fluid":
        volume = st.floats(0, 500, allow_nan=False)
        return ev.FluidIntake(**base, **resident, offered_ml=draw(volume), consumed_ml=draw(volume),
                              method="carer", recorded_by="c1")
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
        return ev.VisitCheckIn(**base, **resident, **visit, carer_id="c1", verification="gps")
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
    raised_at = at - timedelta(minutes=draw(st.sampled_from([0, 0, 20, 90])))
    status = draw(st.sampled_from(["raised", "upgraded", "acknowledged", "resolved"]))
    return ev.Escalation(**base, **resident, episode_id=draw(st.sampled_from(EPISODES)), status=status,
                         risk=draw(st.sampled_from(["medium", "high"])), total=5, any_single_3=False,
                         response="r", rules_version="e.1", raised_at=raised_at,
                         deadline_at=draw(st.sampled_from([None, raised_at + timedelta(minutes=30)])),
                         acknowledged_at=at if status == "acknowledged" else None)


@settings(deadline=None)
@given(log=st.lists(events_strategy(), min_size=1, max_size=120), rnd=st.randoms(use_true_random=False),
       as_of_min=st.integers(0, SPAN_MIN + 60), small_home=st.booleans())
def test_any_log_in_any_order_with_repeats_equals_the_oracle(log, rnd, as_of_min, small_home) -> None:
    delivered = log + rnd.sample(log, k=len(log) // 3)
    rnd.shuffle(delivered)
    store = applied(delivered)
    as_of = T0 + timedelta(minutes=as_of_min)
    beds = {"home-a": 30} if small_home else None
    for location_id, values in oracle(log, as_of, beds).items():
        assert store.evaluate(location_id, as_of, beds=(beds or {}).get(location_id)) == values


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
