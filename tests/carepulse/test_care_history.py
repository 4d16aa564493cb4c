"""The seeded care-activity generator (carepulse/care_history.py): deterministic, valid, realistic enough.

Two logs are generated once per module: 35 days of the demo's five locations (then 15 minutes more, as the
demo goes live) and 21 days of the three test locations. Their NEWS2 scores and escalations are derived as
the worker would derive them (the pure `streams.resident.ResidentProcessor`), and the batch oracle
`indicators.recompute.recompute` turns each log into indicators, which must show the colours each location
was designed for. Capacity is checked with the pure `indicators.quality` capacity functions.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from carepulse import care_history, topics
from carepulse import events as ev
from carepulse.care_history import (
    DEMO_HISTORY,
    BedRegistration,
    CareActivity,
    LocationProfile,
    bed_counts,
    delivery_with_faults,
    demo_profiles,
    topic_and_key,
)
from indicators import quality
from indicators.escalation import load_rules
from indicators.quality import ALL_INDICATOR_IDS, CARE_TZ, IndicatorValue, Rag
from indicators.recompute import recompute
from streams.resident import ResidentProcessor, ResidentState

#: A Monday; 35 days from it cross the end of British Summer Time (25 October 2026).
START = datetime(2026, 10, 5, tzinfo=CARE_TZ)
DEMO_END = START + DEMO_HISTORY
#: The demo starts its history DEMO_HISTORY before its start in UTC, and the simulator counts the profiles'
#: changes from it the same way: 35 days of elapsed time, an hour less than DEMO_END's 35 days of local dates
#: across the end of summer time.
GOES_LIVE_AT = START.astimezone(timezone.utc) + DEMO_HISTORY
#: What the demo publishes in its first minutes live, after the history.
LIVE_END = DEMO_END + timedelta(minutes=15)
TEST_END = START + timedelta(days=21)
SEED = 1
G, A, R, I = Rag.GREEN, Rag.AMBER, Rag.RED, Rag.INSUFFICIENT_DATA
CARE_HOME_INDICATORS = ("falls_rate", "falls_with_harm_rate", "hydration_days_met",
                        "hydration_consumed_vs_offered", "call_bell_response", "escalation_timeliness",
                        "observation_compliance")


def worker_outputs(log: list[ev.Event]) -> list[ev.Event]:
    """The NEWS2 scores and escalations the worker derives from the log's resident inputs, in event order."""
    processor = ResidentProcessor(load_rules(), "worker-test")
    states: dict[str, ResidentState] = defaultdict(ResidentState)
    derived = []
    for event in log:
        if isinstance(event, (ev.ResidentRecord, ev.ObservationSet, ev.EscalationAcknowledgement)):
            state = states[event.resident_id]
            states[event.resident_id], outputs = processor.handle(state, event, event.received_at)
            derived += [o.event for o in outputs]
    return derived


def indicators(log: list[ev.Event], derived: list[ev.Event], as_of: datetime,
               profiles: list[LocationProfile]) -> dict[tuple[str, str], IndicatorValue]:
    values = recompute(log + derived, as_of=as_of, bed_counts=bed_counts(profiles), indicator_ids=ALL_INDICATOR_IDS)
    return {(v.location_id, v.indicator_id): v for v in values}


@pytest.fixture(scope="module")
def demo_activity() -> CareActivity:
    return CareActivity(demo_profiles(), start=START, seed=SEED)


@pytest.fixture(scope="module")
def demo_log(demo_activity) -> list[ev.Event]:
    return demo_activity.advance(DEMO_END)


@pytest.fixture(scope="module")
def demo_live(demo_activity, demo_log) -> list[ev.Event]:
    """The demo's first 15 minutes after its history."""
    return demo_activity.advance(LIVE_END)


@pytest.fixture(scope="module")
def test_log() -> list[ev.Event]:
    return CareActivity(care_history.replay_profiles(), start=START, seed=SEED).advance(TEST_END)


@pytest.fixture(scope="module")
def demo_derived(demo_log) -> list[ev.Event]:
    return worker_outputs(demo_log)


@pytest.fixture(scope="module")
def demo_indicators(demo_log, demo_derived) -> dict[tuple[str, str], IndicatorValue]:
    return indicators(demo_log, demo_derived, DEMO_END, demo_profiles())


@pytest.fixture(scope="module")
def test_indicators(test_log) -> dict[tuple[str, str], IndicatorValue]:
    return indicators(test_log, worker_outputs(test_log), TEST_END, care_history.replay_profiles())


# --- determinism and the advance contract -------------------------------------------------------------------

H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.mark.parametrize("splits", [
    pytest.param([], id="one call"),
    pytest.param([7 * H + 13 * M, 24 * H + 5 * M, 71 * H + 59 * M], id="mid-step splits"),
    pytest.param([n * H for n in range(1, 72)], id="hourly"),
    pytest.param([START.astimezone(CARE_TZ).replace(hour=18) - START + n * M for n in range(0, 30, 7)],
                 id="through the roster publication"),
])
def test_events_do_not_depend_on_how_advance_splits_time(splits):
    end = START + timedelta(days=3)
    whole = CareActivity(care_history.replay_profiles(), start=START, seed=SEED).advance(end)
    activity = CareActivity(care_history.replay_profiles(), start=START, seed=SEED)
    pieces = [event for split in splits for event in activity.advance(START + split)] + activity.advance(end)
    assert pieces == whole
    assert len({e.event_id for e in whole}) == len(whole) > 1000


def test_bed_registrations_and_urine_tests_do_not_depend_on_how_advance_splits_time():
    end = START + timedelta(days=13)  # past larches' registration on day 12
    whole = CareActivity(demo_profiles(), start=START, seed=SEED).advance(end)
    activity = CareActivity(demo_profiles(), start=START, seed=SEED)
    pieces = [event for day in range(13) for event in activity.advance(START + timedelta(days=day, minutes=7))]
    pieces += activity.advance(end)
    assert pieces == whole
    assert {type(e) for e in whole} >= {ev.LocationProfile, ev.UrinalysisResult}
    assert sum(isinstance(e, ev.LocationProfile) for e in whole) == len(demo_profiles()) + 1


def test_each_advance_returns_its_interval_sorted_by_event_time():
    activity = CareActivity(demo_profiles(), start=START, seed=SEED)
    cursor = START
    two_days = START + timedelta(days=2)
    for until in (START + 30 * M, START + 19 * H + 1 * M, two_days, two_days):
        batch = activity.advance(until)
        times = [e.occurred_at for e in batch]
        assert times == sorted(times)
        assert all(cursor <= t < until for t in times)
        assert activity.cursor == until
        cursor = until


def test_the_seed_changes_the_activity_and_time_cannot_go_back():
    day = START + timedelta(days=1)
    one = CareActivity(care_history.replay_profiles(), start=START, seed=1).advance(day)
    two = CareActivity(care_history.replay_profiles(), start=START, seed=2).advance(day)
    assert [e.event_id for e in one] != [e.event_id for e in two]
    activity = CareActivity(care_history.replay_profiles(), start=START, seed=1)
    activity.advance(day)
    with pytest.raises(ValueError, match="cannot go back"):
        activity.advance(day - M)


@pytest.mark.parametrize("make, message", [
    (lambda: LocationProfile("loc-x", "hospital", 10), "kind must be care_home or homecare"),
    (lambda: LocationProfile("loc-x", "care_home", 3, permanent_people=4), "permanent_people"),
    (lambda: LocationProfile("loc-x", "care_home", 3, fall_harm_shares=(("none", 0.5),)), "add up to 1"),
    (lambda: LocationProfile("loc-x", "homecare", 3, visits_per_client_day=(5,)), "1 to 4"),
    (lambda: LocationProfile("loc-x", "homecare", 3, carers=2), "regular_carers_per_client"),
    (lambda: LocationProfile("loc-x", "homecare", 3, bed_registrations=(BedRegistration(H, 4),)), "no beds"),
    (lambda: LocationProfile("loc-x", "care_home", 3, commissioned_hours_per_week=10.0), "for homecare"),
    (lambda: LocationProfile("loc-x", "care_home", 3, bed_registrations=(BedRegistration(H, 3),)), "add beds"),
    (lambda: LocationProfile("loc-x", "care_home", 3, bed_registrations=(
        BedRegistration(2 * H, 4), BedRegistration(H, 5))), "later than the last"),
    (lambda: LocationProfile("loc-x", "care_home", 3, bed_registrations=(
        BedRegistration(H, 4, filled_within=(2 * H, H)),)), "filled_within"),
    (lambda: LocationProfile("loc-x", "care_home", 3, urinalysis_share=1.5), "urinalysis_share"),
    (lambda: LocationProfile("loc-x", "care_home", 3, smartphone_reader_share=-0.1), "smartphone_reader_share"),
    (lambda: LocationProfile("loc-x", "care_home", 3, urinalysis_delay_median_h=0), "median above 0"),
    (lambda: CareActivity([], start=datetime(2026, 10, 5), seed=1), "timezone-aware"),
    (lambda: CareActivity(care_history.replay_profiles() * 2, start=START, seed=1), "once"),
])
def test_bad_profiles_are_refused_with_a_sentence(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- contracts, topics and volumes --------------------------------------------------------------------------

def test_every_event_round_trips_through_the_wire_form(test_log, demo_log):
    issue_11 = [e for e in demo_log if isinstance(e, (ev.LocationProfile, ev.UrinalysisResult))]
    for event in test_log + issue_11:
        assert ev.any_event_adapter.validate_json(ev.to_json(event)) == event


@pytest.mark.parametrize("model, topic, key_field", [
    (ev.ResidentRecord, topics.RESIDENTS, "resident_id"),
    (ev.ObservationSet, topics.OBSERVATION_SETS, "resident_id"),
    (ev.EscalationAcknowledgement, topics.CLINICAL_ACTIONS, "resident_id"),
    (ev.UrinalysisResult, topics.CLINICAL_ACTIONS, "resident_id"),
    (ev.LocationProfile, topics.LOCATION_PROFILES, "location_id"),
    (ev.FluidIntake, topics.CARE_EVENTS, "location_id"),
    (ev.Fall, topics.CARE_EVENTS, "location_id"),
    (ev.CallBell, topics.CARE_EVENTS, "location_id"),
    (ev.VisitPlanned, topics.CARE_EVENTS, "location_id"),
    (ev.VisitCheckIn, topics.CARE_EVENTS, "location_id"),
    (ev.VisitCheckOut, topics.CARE_EVENTS, "location_id"),
    (ev.VisitCancelled, topics.CARE_EVENTS, "location_id"),
])
def test_each_kind_of_event_goes_to_its_input_topic_with_its_key(demo_log, model, topic, key_field):
    produced = [e for e in demo_log if type(e) is model]
    assert produced, f"the demo log has no {model.__name__}"
    assert {topic_and_key(e) for e in produced} == {(topic, getattr(e, key_field)) for e in produced}


def test_derived_events_have_no_input_topic(demo_derived):
    scored = next(e for e in demo_derived if isinstance(e, ev.News2Scored))
    with pytest.raises(ValueError, match="News2Scored is not an input event"):
        topic_and_key(scored)


@pytest.mark.parametrize("log_name, at_most", [("demo_log", 65_000), ("test_log", 12_000)])
def test_volumes_stay_within_what_a_test_or_demo_can_replay(request, log_name, at_most):
    log = request.getfixturevalue(log_name)
    per_location = Counter(e.location_id for e in log)
    assert 0.5 * at_most < len(log) <= at_most
    # Every location contributes: at least a third of an even share (the demo's second agency is small).
    assert min(per_location.values()) > len(log) / len(per_location) / 3


# --- what the activity contains -----------------------------------------------------------------------------

def test_acknowledgements_answer_open_escalations_and_every_band_is_acknowledged(demo_log, demo_derived):
    acknowledgements = sum(1 for e in demo_log if isinstance(e, ev.EscalationAcknowledgement))
    statuses = Counter(e.status for e in demo_derived if isinstance(e, ev.Escalation))
    assert acknowledgements == statuses["acknowledged"] > 20
    # Every band raised or upgraded more than 2.5 deadlines (2.5 h, the latest a late acknowledgement comes)
    # before the end was acknowledged, unless a worse band replaced it before then: an acknowledgement
    # made after an upgrade answers only the worse band.
    raised: dict = defaultdict(list)
    for e in demo_derived:
        if isinstance(e, ev.Escalation) and e.status in ("raised", "upgraded"):
            raised[e.episode_id].append(e.raised_at)
    late_limit = timedelta(hours=2.5)
    bands = {(episode_id, at) for episode_id, times in raised.items()
             for at, next_at in itertools.zip_longest(sorted(times), sorted(times)[1:])
             if at < DEMO_END - late_limit and (next_at is None or next_at - at > late_limit)}
    acknowledged = {(e.episode_id, e.raised_at) for e in demo_derived
                    if isinstance(e, ev.Escalation) and e.status == "acknowledged"}
    assert len(bands) > 20 and bands <= acknowledged


def test_the_live_demo_residents_are_admitted_at_the_start_and_stay(demo_log):
    records = defaultdict(list)
    for e in demo_log:
        if isinstance(e, ev.ResidentRecord) and e.location_id == "loc-demo-oakwood":
            records[e.resident_id].append((e.occurred_at, e.status))
    for n in range(1, 6):
        assert records[f"res-oakwood-{n:03d}"] == [(START, "admitted")]


def test_each_location_publishes_its_profile_at_the_start(demo_log, test_log):
    for log, profiles in ((demo_log, demo_profiles()), (test_log, care_history.replay_profiles())):
        at_start = {e.location_id: e for e in log if isinstance(e, ev.LocationProfile) and e.occurred_at == START}
        assert {location_id: (e.setting, e.name, e.registered_beds, e.commissioned_hours_per_week)
                for location_id, e in at_start.items()} == {
            p.location_id: (p.kind, p.name, p.people if p.kind == "care_home" else None, p.commissioned_hours_per_week)
            for p in profiles}


def beds_at(log: list[ev.Event], location_id: str, at: datetime) -> quality.CareHomeCapacity:
    profiles = [e for e in log if isinstance(e, ev.LocationProfile) and e.location_id == location_id
                and e.occurred_at < at]
    changes = [(e.resident_id, e.occurred_at, e.status) for e in log
               if isinstance(e, ev.ResidentRecord) and e.location_id == location_id]
    return quality.care_home_capacity(location_id, at, max_beds=profiles[-1].registered_beds,
                                      statuses=quality.latest_statuses(changes, at))


def test_care_home_vacancies_move_over_the_history(demo_log):
    for profile in demo_profiles():
        if profile.kind != "care_home":
            continue
        here = [e for e in demo_log if e.location_id == profile.location_id
                and isinstance(e, (ev.ResidentRecord, ev.LocationProfile))]
        days = [beds_at(here, profile.location_id, START + timedelta(days=n, hours=12)) for n in range(35)]
        assert all(b.over_max_beds == 0 for b in days), profile.location_id
        free = Counter(b.vacant_beds + b.reserved_beds for b in days)
        assert len(free) > 1 and free[0] < 35, (profile.location_id, free)  # neither always full nor static


def test_larches_registers_two_beds_on_day_12_and_fills_them_within_a_week(demo_log):
    profiles = [(e.occurred_at, e.registered_beds) for e in demo_log
                if isinstance(e, ev.LocationProfile) and e.location_id == "loc-demo-larches"]
    registered_at = START.astimezone(timezone.utc) + timedelta(days=12)
    assert profiles == [(START, 22), (registered_at, 24)]
    before = beds_at(demo_log, "loc-demo-larches", registered_at)
    after = beds_at(demo_log, "loc-demo-larches", registered_at + timedelta(seconds=1))
    assert (after.max_beds, after.vacant_beds) == (24, before.vacant_beds + 2)
    new_rooms = [e for e in demo_log if isinstance(e, ev.ResidentRecord) and e.location_id == "loc-demo-larches"
                 and e.status == "admitted" and registered_at < e.occurred_at]
    assert new_rooms and min(e.occurred_at for e in new_rooms) >= registered_at + timedelta(days=1)
    assert len({e.resident_id for e in new_rooms if e.occurred_at <= registered_at + timedelta(days=7)}) >= 2


def test_willows_capacity_moves_live(demo_log, demo_live):
    """A minute after the demo goes live, willows registers 4 more beds; its waiting list fills them within
    10 min."""
    log = demo_log + demo_live
    registered_at = GOES_LIVE_AT + timedelta(minutes=1)
    assert [(e.occurred_at, e.registered_beds) for e in log
            if isinstance(e, ev.LocationProfile) and e.location_id == "loc-demo-willows"] == [
        (START, 40), (registered_at, 44)]
    before = beds_at(log, "loc-demo-willows", registered_at)
    just_after = beds_at(log, "loc-demo-willows", registered_at + timedelta(seconds=1))
    filled = beds_at(log, "loc-demo-willows", registered_at + timedelta(minutes=10, seconds=1))
    assert (before.max_beds, just_after.max_beds) == (40, 44)
    assert just_after.vacant_beds == before.vacant_beds + 4
    assert filled.vacant_beds == before.vacant_beds and filled.occupied_beds == before.occupied_beds + 4


def homecare_load(log: list[ev.Event], location_id: str, at: datetime) -> quality.HomecareCapacity:
    cancelled = {e.visit_id: e.by_client_in_advance for e in log if isinstance(e, ev.VisitCancelled)}
    visits = [quality.RosteredVisit(e.resident_id, e.planned_start, e.planned_end, cancelled.get(e.visit_id, False))
              for e in log if isinstance(e, ev.VisitPlanned) and e.location_id == location_id]
    profile = next(e for e in log if isinstance(e, ev.LocationProfile) and e.location_id == location_id)
    return quality.homecare_capacity(location_id, at, visits=visits,
                                     commissioned_hours_per_week=profile.commissioned_hours_per_week)


@pytest.mark.parametrize("location_id, spare_share", [
    ("loc-demo-careway", (0.0, 0.1)),  # nearly at capacity
    ("loc-demo-meadows", (0.2, 0.4)),  # hours to spare
])
def test_homecare_agencies_plan_their_commissioned_hours_as_designed(demo_log, location_id, spare_share):
    for day in range(7, 36, 7):
        load = homecare_load(demo_log, location_id, START + timedelta(days=day))
        low, high = spare_share
        assert low < load.commissioned_hours_not_planned / load.commissioned_hours_7d < high, (day, load)


def amber_recommendations(derived: list[ev.Event]) -> dict[str, tuple[str, datetime, datetime | None]]:
    """Per escalation episode that reached a risk the urinalysis pathway acts on: (resident, when it first
    did, when it was upgraded to high after that), from the worker's escalations."""
    amber = set(quality.packaged_rules().urinalysis_pathway.recommend_at_risks)
    bands: dict = defaultdict(list)
    for e in derived:
        if isinstance(e, ev.Escalation) and e.status in ("raised", "upgraded"):
            bands[str(e.episode_id)].append(e)
    episodes = {}
    for episode_id, episode in bands.items():
        recommended_at = min((e.raised_at for e in episode if e.risk in amber), default=None)
        if recommended_at is not None:
            high_at = min((e.raised_at for e in episode if e.risk == "high" and e.raised_at > recommended_at),
                          default=None)
            episodes[episode_id] = (episode[0].resident_id, recommended_at, high_at)
    return episodes


def test_urine_tests_follow_amber_episodes_within_a_delay_some_late_some_never(demo_log, demo_derived):
    episodes = amber_recommendations(demo_derived)
    results = [e for e in demo_log if isinstance(e, ev.UrinalysisResult)]
    testing = {p.location_id for p in demo_profiles() if p.urinalysis_share}
    assert {e.location_id for e in results} == testing
    target = timedelta(seconds=quality.packaged_rules()["urinalysis_timeliness"].parameters["target_s"])
    # A result naming its episode (smartphone reader) names one the worker raised and that reached amber;
    # one without (read by eye) follows an amber recommendation of its resident.
    named = [e for e in results if e.episode_id is not None]
    assert named and all(str(e.episode_id) in episodes for e in named)
    assert {e.reader for e in named} == {"smartphone_reader"}
    assert {e.reader for e in results if e.episode_id is None} == {"visual"}
    outcome: Counter = Counter()
    answered = set()
    for episode_id, (resident_id, recommended_at, high_at) in episodes.items():
        tests = [e.occurred_at for e in results if e.resident_id == resident_id and recommended_at <= e.occurred_at
                 and (e.episode_id is None or str(e.episode_id) == episode_id)]
        tested_at = min(tests, default=None)
        if tested_at is not None:
            answered.add(episode_id)
            # An upgrade to high replaces the test with the emergency response.
            assert high_at is None or tested_at < high_at
        if recommended_at < DEMO_END - 4 * target:
            outcome["never" if tested_at is None else "on time" if tested_at <= recommended_at + target
                    else "late"] += 1
    assert len(named) <= len(answered)
    assert outcome["on time"] > outcome["late"] > 0 and outcome["never"] > 0, outcome


def test_urine_tests_are_read_mostly_negative(demo_log):
    results = [e for e in demo_log if isinstance(e, ev.UrinalysisResult)]
    pads = ("leukocytes", "nitrites", "blood", "protein")
    for pad in pads:
        grades = Counter(getattr(e, pad) for e in results)
        assert grades.most_common(1)[0][0] == "negative", (pad, grades)
    readings = [getattr(e, pad) for e in results for pad in pads]
    assert readings.count("negative") > 0.6 * len(readings)
    assert len({(e.leukocytes, e.blood, e.protein) for e in results}) > 3


def test_urine_tests_leave_every_other_event_as_it_was():
    """The urinalysis settings draw from a source of their own and number their events apart: switching
    them off removes the results and changes nothing else (bed registrations do change who is in a bed)."""
    end = START + timedelta(days=7)
    testing = CareActivity(demo_profiles(), start=START, seed=SEED).advance(end)
    profiles = [dataclasses.replace(p, urinalysis_share=0.0) for p in demo_profiles()]
    not_testing = CareActivity(profiles, start=START, seed=SEED).advance(end)
    assert any(isinstance(e, ev.UrinalysisResult) for e in testing)
    assert [e for e in testing if not isinstance(e, ev.UrinalysisResult)] == not_testing


def test_care_homes_admit_everyone_then_residents_come_and_go(demo_log):
    statuses = Counter((e.location_id, e.status) for e in demo_log if isinstance(e, ev.ResidentRecord))
    first = Counter(e.location_id for e in demo_log
                    if isinstance(e, ev.ResidentRecord) and e.occurred_at == START)
    assert first == {p.location_id: p.people for p in demo_profiles()}
    assert sum(n for (_, status), n in statuses.items() if status == "in_hospital") >= 2
    assert sum(n for (_, status), n in statuses.items() if status == "discharged") >= 2
    for profile in demo_profiles():
        if profile.kind == "care_home":  # new admissions fill the beds that became free
            assert statuses[(profile.location_id, "admitted")] > profile.people


def test_device_alerts_are_confirmed_with_the_same_alert_id_or_never(demo_log):
    alerts = {e.alert_id: e.occurred_at for e in demo_log if isinstance(e, ev.Fall) and not e.confirmed}
    confirmed_device = [e for e in demo_log
                        if isinstance(e, ev.Fall) and e.confirmed and e.detected_by == "device"]
    assert confirmed_device and all(alerts[e.alert_id] < e.occurred_at for e in confirmed_device)
    assert len(alerts) > len(confirmed_device)  # some alerts were false and never confirmed
    harms = Counter(e.harm for e in demo_log if isinstance(e, ev.Fall) and e.confirmed)
    assert harms["none"] > harms["low"] > harms["moderate"] + harms["severe"] > 0


def test_call_bells_are_answered_after_they_are_raised_and_tests_have_no_resident(demo_log):
    raised, answered = {}, {}
    for e in demo_log:
        if isinstance(e, ev.CallBell):
            (raised if e.phase == "raised" else answered)[e.call_id] = e
    assert set(answered) < set(raised)  # a few calls were never answered
    assert all(raised[call_id].occurred_at < bell.occurred_at for call_id, bell in answered.items())
    tests = [e for e in raised.values() if e.call_type == "test"]
    assert tests and all(e.resident_id is None for e in tests)
    assert Counter(e.priority for e in raised.values())["emergency"] > 0


def test_carers_are_pseudonymous_and_never_in_two_visits_at_once(demo_log):
    visits: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    check_ins = {e.visit_id: e for e in demo_log if isinstance(e, ev.VisitCheckIn)}
    for out in (e for e in demo_log if isinstance(e, ev.VisitCheckOut)):
        assert out.carer_id == check_ins[out.visit_id].carer_id
        visits[out.carer_id].append((check_ins[out.visit_id].occurred_at, out.occurred_at))
    short = {p.location_id: p.location_id[-7:] for p in demo_profiles()}
    assert all(re.fullmatch(rf"carer-{short[e.location_id]}-\d\d", e.carer_id) for e in check_ins.values())
    travel = timedelta(minutes=min(p.travel_min[0] for p in demo_profiles()))
    for carer, spans in visits.items():  # the next check-in comes after the check-out and the travel
        spans.sort()
        assert all(left + travel <= arrived for (_, left), (arrived, _) in itertools.pairwise(spans)), carer


def test_test_agency_keeps_its_carers(test_indicators):
    continuity = test_indicators[("loc-test-homeway", "carer_continuity")]
    assert continuity.status is G and continuity.details["median_carers"] <= 8


def test_homecare_rosters_are_published_the_evening_before(demo_log):
    planned = [e for e in demo_log if isinstance(e, ev.VisitPlanned)]
    for visit in planned:
        published = visit.occurred_at.astimezone(CARE_TZ)
        day = visit.planned_start.astimezone(CARE_TZ).date()
        if visit.occurred_at == START:  # the first day's roster: the history starts that morning
            assert day == START.date()
        else:
            assert (published.date(), published.hour) == (day - timedelta(days=1), 18)
    tasks = Counter((task.kind, task.time_critical) for visit in planned for task in visit.tasks)
    assert tasks[("medication", True)] > 0 and tasks[("medication", False)] > 0


# --- delivery with faults -----------------------------------------------------------------------------------

@pytest.mark.parametrize("duplicate_share, late_share", [(0.03, 0.05), (0.1, 0.0), (0.0, 0.2), (0.0, 0.0)])
def test_delivery_keeps_every_event_duplicates_a_share_and_delays_within_the_bound(test_log, duplicate_share,
                                                                                   late_share):
    max_delay = timedelta(hours=2)
    delivered = delivery_with_faults(test_log, seed=SEED, duplicate_share=duplicate_share,
                                     late_share=late_share, max_delay=max_delay)
    copies = Counter(e.event_id for e in delivered)
    assert set(copies) == {e.event_id for e in test_log}
    extra = len(delivered) - len(test_log)
    assert abs(extra - duplicate_share * len(test_log)) <= 0.2 * duplicate_share * len(test_log)
    by_id = {e.event_id: e for e in test_log}
    assert all(e is by_id[e.event_id] for e in delivered)  # a duplicate is the same event
    # Nothing arrives after an event more than max_delay younger than it; a first copy is "late" when a
    # younger event came before it.
    watermark, late, seen = START, 0, set()
    for event in delivered:
        assert watermark - event.occurred_at <= max_delay
        if event.event_id not in seen and event.occurred_at < watermark:
            late += 1
        seen.add(event.event_id)
        watermark = max(watermark, event.occurred_at)
    assert abs(late - late_share * len(test_log)) <= 0.2 * late_share * len(test_log)
    if duplicate_share == late_share == 0:
        assert delivered == test_log


# --- the indicators each location was designed to show ------------------------------------------------------

@pytest.mark.parametrize("location_id, indicator_id, expected", [
    ("loc-demo-oakwood", "falls_rate", {G, A}),
    ("loc-demo-oakwood", "hydration_days_met", {G}),
    ("loc-demo-oakwood", "call_bell_response", {G}),
    ("loc-demo-willows", "falls_rate", {R}),
    ("loc-demo-willows", "hydration_days_met", {R}),
    ("loc-demo-larches", "call_bell_response", {R}),
    ("loc-demo-careway", "missed_visits", {R}),
    ("loc-demo-careway", "late_visits", {R}),
    ("loc-demo-careway", "missed_medication_doses", {R}),
    ("loc-demo-careway", "carer_continuity", {R}),
    ("loc-demo-careway", "travel_time", {R}),
    ("loc-demo-oakwood", "carer_continuity", {G}),
    ("loc-demo-meadows", "late_visits", {G}),
    ("loc-demo-meadows", "missed_visits", {G}),
    ("loc-demo-oakwood", "urinalysis_timeliness", {G, A}),
    ("loc-demo-willows", "urinalysis_timeliness", {A, R}),
    ("loc-demo-larches", "urinalysis_timeliness", {R}),
])
def test_demo_locations_show_the_colours_they_were_designed_for(demo_indicators, location_id, indicator_id,
                                                                expected):
    assert demo_indicators[(location_id, indicator_id)].status in expected


def test_oakwood_is_mostly_green_and_never_red(demo_indicators):
    statuses = Counter(demo_indicators[("loc-demo-oakwood", i)].status for i in CARE_HOME_INDICATORS)
    assert statuses[R] == 0 and statuses[G] >= 5


@pytest.mark.parametrize("location_id", ["loc-test-birches", "loc-test-hollies"])
def test_test_care_homes_have_enough_data_for_most_indicators_in_21_days(test_indicators, location_id):
    sufficient = [i for i in CARE_HOME_INDICATORS if test_indicators[(location_id, i)].status is not I]
    assert len(sufficient) >= 6, sufficient


def test_test_locations_show_several_colours(test_indicators):
    homecare = {test_indicators[("loc-test-homeway", i)].status
                for i in ("missed_visits", "late_visits", "missed_medication_doses")}
    assert I not in homecare
    assert {G, A, R} <= {v.status for v in test_indicators.values()}
