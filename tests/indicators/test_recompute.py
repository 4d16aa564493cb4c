"""The batch oracle (indicators/recompute.py) over a small hand-built log, compared whole.

Two locations: a care home (home-a, whose profile, `home_profile`, gives 30 beds: the 90-day falls window
of cqc_domain.md §2.1) with four residents, and a homecare agency (home-b, no profile) with one client.
Every event appears twice and the log is reversed, so deduplication and ordering are exercised on every
indicator. Expected numbers are worked out in the comments.

Issue 11's indicators (continuity of carers, travel between visits, urinalysis timeliness, from urinalysis
results) are recomputed only when asked for; a third location (home-c, an agency of six clients over 14
days) gives them sufficient data. Live capacity has its own oracle function, for locations with a profile.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from carepulse import events as ev
from indicators import quality as q
from indicators.quality import IndicatorValue, Rag
from indicators.recompute import capacity, recompute

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
SRC = ev.Source(gateway_id="gw-1")
G, A, R, I = Rag.GREEN, Rag.AMBER, Rag.RED, Rag.INSUFFICIENT_DATA


def t(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=timezone.utc)


def make(model: type, at: datetime, location_id: str = "home-a", **fields) -> ev.Event:
    return model(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SRC, location_id=location_id, **fields)


def profile(at: datetime, location_id: str = "home-a", **fields) -> ev.Event:
    return make(ev.LocationProfile, at, location_id, **fields)


def home_profile() -> ev.Event:
    """home-a's profile: 30 registered beds, under the 40 of the small-home window (§2.1)."""
    return profile(t(1, 5), setting="care_home", registered_beds=30)


def care_home() -> list[ev.Event]:
    log = [
        make(ev.ResidentRecord, t(8, 1), resident_id="r1", status="admitted", sex="female"),
        make(ev.ResidentRecord, t(8, 1), resident_id="r2", status="admitted", sex="male", fluid_target_ml=1500),
        make(ev.ResidentRecord, t(8, 1), resident_id="r3", status="admitted", sex="female"),
        make(ev.ResidentRecord, t(8, 1), resident_id="r4", status="admitted"),
        make(ev.ResidentRecord, t(11, 20, 10), resident_id="r3", status="in_hospital", sex="female"),
        make(ev.ResidentRecord, t(11, 22, 12), resident_id="r3", status="admitted", sex="female"),
        # Falls: a device alert and its confirmation are one fall (harm low); r4's alert is never confirmed;
        # a fall after as_of is not yet in the log.
        make(ev.Fall, t(11, 10, 3), resident_id="r1", detected_by="device", confirmed=False, alert_id="a1",
             recorded_by="gw"),
        make(ev.Fall, t(11, 10, 3, 5), resident_id="r1", detected_by="device", confirmed=True, alert_id="a1",
             harm="low", recorded_by="carer-1"),
        make(ev.Fall, t(11, 15, 14), resident_id="r2", detected_by="staff", confirmed=True, harm="none",
             recorded_by="carer-1"),
        make(ev.Fall, t(11, 12), resident_id="r4", detected_by="device", confirmed=False, alert_id="a2",
             recorded_by="gw"),
        make(ev.Fall, t(11, 23, 10), resident_id="r4", detected_by="staff", confirmed=True, harm="severe",
             recorded_by="carer-1"),
        # Drinks on 21 Nov: r1 consumes 1,600 of 2,000 mL (meets 1,600); r2 1,400 of 2,000 (misses 1,500).
        make(ev.FluidIntake, t(11, 21, 10), resident_id="r1", offered_ml=1200, consumed_ml=1000, method="smart_cup",
             recorded_by="cup-1"),
        make(ev.FluidIntake, t(11, 21, 15), resident_id="r1", offered_ml=800, consumed_ml=600, method="carer",
             recorded_by="carer-1"),
        make(ev.FluidIntake, t(11, 21, 12), resident_id="r2", offered_ml=2000, consumed_ml=1400, method="carer",
             recorded_by="carer-1"),
    ]
    # Call bells on 22 Nov: c0 and c1 emergencies; c9 takes 400 s; a test call and an unanswered call.
    response_s = [60, 60, 60, 60, 60, 60, 60, 60, 120, 400]
    for i, r in enumerate(response_s):
        raised = t(11, 22, 10 + i)
        priority = "emergency" if i < 2 else "routine"
        log += [make(ev.CallBell, raised, call_id=f"c{i}", phase="raised", priority=priority),
                make(ev.CallBell, raised + timedelta(seconds=r), call_id=f"c{i}", phase="answered",
                     priority=priority, answered_by="carer-1")]
    log += [make(ev.CallBell, t(11, 22, 3), call_id="test-1", phase="raised", call_type="test"),
            make(ev.CallBell, t(11, 22, 3, 20), call_id="test-1", phase="answered", call_type="test"),
            make(ev.CallBell, t(11, 23, 8), call_id="c10", phase="raised")]
    log += escalations() + observations()
    return log


def escalation(status: str, episode: uuid.UUID, risk: str, raised_at: datetime, minutes: int,
               acknowledged_at: datetime | None = None) -> ev.Event:
    return make(ev.Escalation, acknowledged_at or raised_at, resident_id="r1", episode_id=episode, status=status,
                risk=risk, total=None, any_single_3=True, response="r", rules_version="carepulse-escalation.1",
                raised_at=raised_at, deadline_at=raised_at + timedelta(minutes=minutes),
                acknowledged_at=acknowledged_at)


EPISODES = [uuid.uuid5(uuid.NAMESPACE_OID, f"episode-{i}") for i in range(1, 6)]


def escalations() -> list[ev.Event]:
    """e1: medium acknowledged in time, then upgraded to high and acknowledged 5 min late (a red event);
    e2–e4 in time; e5 still inside its deadline at as_of (pending). 4 of 5 on time."""
    e = EPISODES
    log = [
        escalation("raised", e[0], "medium", t(11, 20, 10), 60),
        escalation("acknowledged", e[0], "medium", t(11, 20, 10), 60, t(11, 20, 10, 30)),
        escalation("upgraded", e[0], "high", t(11, 20, 10, 45), 30),
        escalation("acknowledged", e[0], "high", t(11, 20, 10, 45), 30, t(11, 20, 11, 20)),
        escalation("raised", e[4], "medium", t(11, 23, 8, 50), 60),
    ]
    for i in (1, 2, 3):
        log += [escalation("raised", e[i], "low-medium", t(11, 10 + i, 9), 60),
                escalation("acknowledged", e[i], "low-medium", t(11, 10 + i, 9), 60, t(11, 10 + i, 10))]
    return log


def score(resident_id: str, at: datetime, total: int | None, interval_min: int | None,
          complete: bool = True, set_id: uuid.UUID | None = None) -> ev.Event:
    return make(ev.News2Scored, at, resident_id=resident_id, observation_set_id=set_id or uuid.uuid4(),
                complete=complete, parameter_scores={}, any_single_3=False, total=total,
                monitoring_interval_minutes=interval_min, rules_version="news2.1")


def observations() -> list[ev.Event]:
    """r1: due 04:00 taken 04:00; due 08:00 taken 09:00 (late); due 21:00 taken 21:00; due 21 Nov 09:00 never.
    r2: due 01:00 and 02:00 on time, 03:00 never. 4 of 7 on time; 7 of 8 sets complete."""
    set_0400 = uuid.uuid4()
    return [
        score("r1", t(11, 20, 0), 2, 240),
        score("r1", t(11, 20, 4), 1, 240, set_id=set_0400),
        score("r1", t(11, 20, 4), 1, 240, set_id=set_0400),   # the same set scored again
        score("r1", t(11, 20, 6), None, None, complete=False),
        score("r1", t(11, 20, 9), 0, 720),
        score("r1", t(11, 20, 21), 0, 720),
        score("r2", t(11, 22, 0), 3, 60),
        score("r2", t(11, 22, 1), 3, 60),
        score("r2", t(11, 22, 2), 3, 60),
    ]


def visit(visit_id: str, start: datetime, *, meds: tuple[str, ...] = (), critical_meds: tuple[str, ...] = (),
          time_critical: bool = False, check_in: datetime | None = None,
          outcomes: dict[str, str] | None = None) -> list[ev.Event]:
    tasks = [ev.VisitTask(task_id=m, kind="medication") for m in meds]
    tasks += [ev.VisitTask(task_id=m, kind="medication", time_critical=True) for m in critical_meds]
    who = dict(location_id="home-b", resident_id="client-1", visit_id=visit_id)
    log = [make(ev.VisitPlanned, start - timedelta(days=7), planned_start=start, planned_end=start + timedelta(hours=1),
                time_critical=time_critical, tasks=tasks, **who)]
    if check_in:
        log.append(make(ev.VisitCheckIn, check_in, carer_id="carer-9", verification="gps", **who))
    if outcomes is not None:
        log.append(make(ev.VisitCheckOut, check_in + timedelta(minutes=30), carer_id="carer-9",
                        task_outcomes=[ev.TaskOutcome(task_id=k, outcome=v) for k, v in outcomes.items()], **who))
    return log


def homecare() -> list[ev.Event]:
    """Judged: v9, v1, v2, v5, v6 delivered; v3 (no check-in by 23:00) and v8 (provider cancelled) missed;
    v4 cancelled by the client; v7 pending. Late > 30 min: v2 (40 min), v6 (35 min, time-critical).
    Doses: m1 done, m2 refused, m3 missed (visit missed), m5 no record, m6 done 35 min late: 2 of 5 missed."""
    return [
        *visit("v9", t(11, 19, 8), check_in=t(11, 19, 8), outcomes={}),
        *visit("v1", t(11, 20, 8), critical_meds=("m1",), check_in=t(11, 20, 8, 10), outcomes={"m1": "done"}),
        *visit("v2", t(11, 20, 12), meds=("m2",), check_in=t(11, 20, 12, 40), outcomes={"m2": "refused"}),
        *visit("v3", t(11, 20, 17), meds=("m3",)),
        *visit("v4", t(11, 21, 8), meds=("m4",)),
        make(ev.VisitCancelled, t(11, 20, 18), location_id="home-b", resident_id="client-1", visit_id="v4",
             by_client_in_advance=True),
        *visit("v5", t(11, 21, 12), meds=("m5",), check_in=t(11, 21, 12, 20), outcomes={}),
        *visit("v6", t(11, 22, 8), critical_meds=("m6",), time_critical=True, check_in=t(11, 22, 8, 35),
               outcomes={"m6": "done"}),
        *visit("v8", t(11, 22, 12)),
        make(ev.VisitCancelled, t(11, 22, 9), location_id="home-b", resident_id="client-1", visit_id="v8",
             by_client_in_advance=False),
        *visit("v7", t(11, 23, 8, 30), meds=("m7",)),
    ]


def value(indicator_id: str, location_id: str, days: int, numerator: float, denominator: float,
          value_: float | None, status: Rag, details: dict | None = None) -> IndicatorValue:
    return IndicatorValue(indicator_id, location_id, AS_OF - timedelta(days=days), AS_OF, numerator, denominator,
                          value_, status, "carepulse-quality.2", details or {})


def bells(by_priority: dict, median_s=None, p90_s=None, unanswered: int = 0) -> dict:
    return {"median_s": median_s, "p90_s": p90_s, "calls_over_exception": 0, "unanswered_calls": unanswered,
            "by_priority": by_priority}


EXPECTED = [
    # 90-day window (30 beds): 90 censuses each for r1, r2, r4; r3 in hospital at 2 of them -> 358 OBD.
    value("falls_rate", "home-a", 90, 2, 358, 2 / 358 * 1000, A),
    value("falls_with_harm_rate", "home-a", 90, 1, 358, 1 / 358 * 1000, R, {"severe_or_fatal_falls": 0}),
    # 27 whole days (27 Oct – 22 Nov) for r1 and r2, 24 for r3 (20–22 Nov not whole), none for r4 (no target).
    value("hydration_days_met", "home-a", 28, 1, 78, 1 / 78 * 100, R),
    # 17–22 Nov: r1 and r2 6 days each, r3 3; offered below target on all but r1's and r2's 21 Nov.
    value("hydration_consumed_vs_offered", "home-a", 7, 3000.0, 4000.0, 75.0, A,
          {"resident_days_offered_below_target": 13}),
    value("call_bell_response", "home-a", 28, 9, 10, 90.0, G, bells(
        {"emergency": {"calls": 2, "within_target": 2, "median_s": 60.0, "p90_s": 60.0, "over_exception": 0},
         "routine": {"calls": 8, "within_target": 7, "median_s": 60.0, "p90_s": 400.0, "over_exception": 0}},
        60.0, 120.0, 1)),
    value("escalation_timeliness", "home-a", 28, 4, 5, 80.0, R, {"pending": 1, "late_high": 1}),
    value("observation_compliance", "home-a", 28, 4, 7, 4 / 7 * 100, R, {"complete_sets_pct": 87.5}),
    value("missed_visits", "home-a", 28, 0, 0, None, I,
          {"cancelled_by_client": 0, "pending": 0, "missed_time_critical": 0}),
    value("late_visits", "home-a", 28, 0, 0, None, I,
          {"over_15_min": 0, "time_critical_delivered": 0, "time_critical_outside_30_min": 0}),
    value("missed_medication_doses", "home-a", 28, 0, 0, None, I, {"time_critical_red_events": 0}),
    value("falls_rate", "home-b", 28, 0, 0, None, I),
    value("falls_with_harm_rate", "home-b", 90, 0, 0, None, I, {"severe_or_fatal_falls": 0}),
    value("hydration_days_met", "home-b", 28, 0, 0, None, I),
    value("hydration_consumed_vs_offered", "home-b", 7, 0, 0, None, I, {"resident_days_offered_below_target": 0}),
    value("call_bell_response", "home-b", 28, 0, 0, None, I, bells({})),
    value("escalation_timeliness", "home-b", 28, 0, 0, None, I, {"pending": 0, "late_high": 0}),
    value("observation_compliance", "home-b", 28, 0, 0, None, I, {"complete_sets_pct": None}),
    value("missed_visits", "home-b", 28, 2, 7, 2 / 7 * 100, R,
          {"cancelled_by_client": 1, "pending": 1, "missed_time_critical": 0}),
    value("late_visits", "home-b", 28, 2, 5, 40.0, R,
          {"over_15_min": 3, "time_critical_delivered": 1, "time_critical_outside_30_min": 1}),
    value("missed_medication_doses", "home-b", 28, 2, 5, 40.0, R, {"time_critical_red_events": 0}),
]


def test_recompute_with_duplicates_out_of_order():
    log = care_home() + homecare() + [home_profile()]
    assert recompute(list(reversed(log + log)), as_of=AS_OF) == EXPECTED


def test_recompute_is_independent_of_arrival_order():
    log = care_home() + homecare() + [home_profile()]
    assert recompute(log, as_of=AS_OF) == recompute(log[1::2] + log[::2], as_of=AS_OF)


#: 28 censuses for r1, r2, r4 and 26 for r3 -> 110 OBD: insufficient data (§2.1, fewer than 300).
FALLS_OVER_28_DAYS = value("falls_rate", "home-a", 28, 2, 110, 2 / 110 * 1000, I)


def test_a_home_of_40_beds_or_more_uses_the_28_day_falls_window():
    log = care_home() + [home_profile(), profile(t(11, 1), setting="care_home", registered_beds=40)]
    assert recompute(log, as_of=AS_OF)[0] == FALLS_OVER_28_DAYS


def test_the_newest_profile_before_as_of_gives_the_beds():
    log = care_home() + [home_profile(), profile(t(11, 22, 18), setting="care_home", registered_beds=45)]
    assert recompute(log, as_of=AS_OF)[0] == FALLS_OVER_28_DAYS
    before = t(11, 22, 18)
    assert recompute(log, as_of=before)[0].window_start == before - timedelta(days=90)


def test_a_home_without_a_profile_uses_the_28_day_window_unless_a_bed_count_is_given():
    log = care_home()
    assert recompute(log, as_of=AS_OF)[0] == FALLS_OVER_28_DAYS
    assert recompute(log, as_of=AS_OF, bed_counts={"home-a": 30}) == recompute(log + [home_profile()], as_of=AS_OF)
    assert recompute(log + [home_profile()], as_of=AS_OF, bed_counts={"home-a": 40})[0] == FALLS_OVER_28_DAYS


def test_empty_log():
    assert recompute([], as_of=AS_OF) == []


# --- issue 11 ---------------------------------------------------------------------------------------------

def agency_run() -> list[ev.Event]:
    """home-c, 9-22 Nov (GMT, so local = UTC), every day:
    cw-1's run: client-1 08:00-08:30, client-2 08:45 (15 min travel), client-3 09:40 (25 min: long),
    client-4 12:00 (110 min: a break); client-5 sees a different carer each day (14 carers);
    client-6 has 3 visits only (days 0-2, below the 14 contacts a person needs to count)."""
    log = []
    def visit(visit_id: str, client: str, carer: str, check_in: datetime) -> None:
        who = {"location_id": "home-c", "resident_id": client, "visit_id": visit_id, "carer_id": carer}
        log.append(make(ev.VisitCheckIn, check_in, verification="gps", **who))
        log.append(make(ev.VisitCheckOut, check_in + timedelta(minutes=30), **who))
    for d in range(14):
        day = 9 + d
        visit(f"c1-{d}", "client-1", "cw-1", t(11, day, 8))
        visit(f"c2-{d}", "client-2", "cw-1", t(11, day, 8, 45))
        visit(f"c3-{d}", "client-3", "cw-1", t(11, day, 9, 40))
        visit(f"c4-{d}", "client-4", "cw-1", t(11, day, 12))
        visit(f"c5-{d}", "client-5", f"cw-x-{d}", t(11, day, 8))
        if d < 3:
            visit(f"c6-{d}", "client-6", "cw-2", t(11, day, 10))
    return log


def urinalysis(at: datetime, location_id: str = "home-a", resident_id: str = "r1",
               episode_id: uuid.UUID | None = None) -> ev.Event:
    return make(ev.UrinalysisResult, at, location_id, resident_id=resident_id, recorded_by="carer-1",
                reader="smartphone_reader", leukocytes="+", nitrites="positive", blood="negative",
                protein="trace", episode_id=episode_id)


def urinalyses() -> list[ev.Event]:
    """r1's urinalyses at home-a (all escalations() are r1's): 11 Nov 12:00 answers e2 (low-medium, 09:00) in
    3 h; 12 Nov 16:00 comes 7 h after e3 (late); 20 Nov 11:00 comes after e1's upgrade to high at 10:45
    (e1 leaves the denominator) and is e4's (13 Nov) first, a week late; 23 Nov 08:55 names e1, so it does
    not answer e5 (medium, 08:50), and 23 Nov 10:00 is after as_of: e5 is pending. 1 of 3 on time. A home-b
    result has no episode to answer."""
    return [urinalysis(t(11, 11, 12)), urinalysis(t(11, 12, 16)), urinalysis(t(11, 20, 11)),
            urinalysis(t(11, 23, 8, 55), episode_id=EPISODES[0]), urinalysis(t(11, 23, 10)),
            urinalysis(t(11, 20, 9), "home-b", "client-1")]


def continuity(location_id: str, setting: str, numerator: int, denominator: int, status: Rag,
               median: int | None, below: int) -> IndicatorValue:
    return value("carer_continuity", location_id, 28, numerator, denominator,
                 numerator / denominator * 100 if denominator else None, status,
                 {"setting": setting, "more_than_carers": 8 if setting == "homecare" else 20,
                  "median_carers": median, "people_below_minimum_contacts": below})


EXPECTED_EXTENSIONS = [
    # home-a is a care home (no check-ins): r1 and r2 have one carer-logged drink each, below 14 contacts.
    continuity("home-a", "care_home", 0, 0, I, None, 2),
    value("travel_time", "home-a", 28, 0, 0, None, I, {"median_travel_min": None, "breaks": 0, "overlaps": 0}),
    value("urinalysis_timeliness", "home-a", 28, 1, 3, 1 / 3 * 100, I, {"pending": 1, "upgraded_to_high": 1}),
    # home-b: client-1's 5 check-ins are below 14; carer-9's only same-day pair (20 Nov, v1 out 08:40, v2 in
    # 12:40) is a 240-min break.
    continuity("home-b", "homecare", 0, 0, I, None, 1),
    value("travel_time", "home-b", 28, 0, 0, None, I, {"median_travel_min": None, "breaks": 1, "overlaps": 0}),
    value("urinalysis_timeliness", "home-b", 28, 0, 0, None, I, {"pending": 0, "upgraded_to_high": 0}),
    # home-c: distinct carers 1, 1, 1, 1, 14 (client-6 below 14 contacts); 1 of 5 over 8 = 20 %, median 1.
    continuity("home-c", "homecare", 1, 5, A, 1, 1),
    # 14 days x (15 min, 25 min) travel, 14 breaks: 14 of 28 over 20 min; median (14th of 28) 15 min.
    value("travel_time", "home-c", 28, 14, 28, 50.0, R, {"median_travel_min": 15.0, "breaks": 14, "overlaps": 0}),
    value("urinalysis_timeliness", "home-c", 28, 0, 0, None, I, {"pending": 0, "upgraded_to_high": 0}),
]


def test_recompute_issue_11_indicators_with_duplicates_out_of_order():
    log = care_home() + homecare() + agency_run() + urinalyses() + [home_profile()]
    assert recompute(list(reversed(log + log)), as_of=AS_OF,
                     indicator_ids=q.EXTENSION_INDICATOR_IDS) == EXPECTED_EXTENSIONS


def test_a_urinalysis_naming_no_episode_answers_the_one_open():
    log = care_home() + [e for e in urinalyses() if e.occurred_at != t(11, 23, 8, 55)]
    log.append(urinalysis(t(11, 23, 8, 55)))
    timeliness = recompute(log, as_of=AS_OF, indicator_ids=("urinalysis_timeliness",))[0]
    assert (timeliness.numerator, timeliness.denominator, timeliness.details) == \
        (2, 4, {"pending": 0, "upgraded_to_high": 1})


def test_the_profile_sets_the_setting_continuity_is_judged_in():
    # home-c's check-ins would make it a homecare agency; its profile says it is a care home, whose
    # contacts are carer-logged drinks (none here).
    log = agency_run() + [profile(t(11, 1), "home-c", setting="care_home", registered_beds=12)]
    assert recompute(log, as_of=AS_OF, indicator_ids=("carer_continuity",)) == \
        [continuity("home-c", "care_home", 0, 0, I, None, 0)]


def test_all_indicators_come_per_location_in_the_order_asked():
    log = care_home() + homecare() + urinalyses() + [home_profile()]
    values = recompute(log, as_of=AS_OF, indicator_ids=q.ALL_INDICATOR_IDS)
    assert values == EXPECTED[:10] + EXPECTED_EXTENSIONS[:3] + EXPECTED[10:] + EXPECTED_EXTENSIONS[3:6]
    picked = recompute(log, as_of=AS_OF, indicator_ids=("travel_time", "falls_rate"))
    assert picked == [EXPECTED_EXTENSIONS[1], EXPECTED[0], EXPECTED_EXTENSIONS[4], EXPECTED[10]]


def test_unknown_indicator_is_refused():
    with pytest.raises(ValueError) as error:
        recompute([], as_of=AS_OF, indicator_ids=("falls_rate", "uti_rate"))
    assert str(error.value).startswith("No indicator uti_rate; known: falls_rate, falls_with_harm_rate,")


def agency_profile(at: datetime, hours: float | None = 10.0) -> ev.Event:
    return profile(at, "home-b", setting="homecare", commissioned_hours_per_week=hours)


@pytest.mark.parametrize("as_of, expected", [
    # 21 Nov 09:00: r3 in hospital since 20 Nov (bed held). home-b's planned visits in the 7 days before:
    # v9, v1, v2, v3 (1 h each; v4 was cancelled by the client) -> 4 h of 10 commissioned.
    (t(11, 21, 9), [q.CareHomeCapacity("home-a", t(11, 21, 9), 30, 3, 1, 26, 0),
                    q.HomecareCapacity("home-b", t(11, 21, 9), 1, 4.0, 10.0, 6.0)]),
    # 23 Nov 09:00: r3 back since 22 Nov. v9, v1, v2, v3, v5, v6, v8 (provider cancelled: still planned) and
    # v7 (08:30) -> 8 h.
    (AS_OF, [q.CareHomeCapacity("home-a", AS_OF, 30, 4, 0, 26, 0),
             q.HomecareCapacity("home-b", AS_OF, 1, 8.0, 10.0, 2.0)]),
])
def test_capacity(as_of, expected):
    log = care_home() + homecare() + [home_profile(), agency_profile(t(11, 1))]
    assert capacity(list(reversed(log + log)), as_of=as_of) == expected


def test_capacity_follows_the_newest_profile_before_as_of_and_needs_one():
    log = care_home() + homecare() + [home_profile()]
    assert [c.location_id for c in capacity(log, as_of=AS_OF)] == ["home-a"]
    log += [agency_profile(t(11, 1)), agency_profile(t(11, 22), hours=None),
            profile(t(11, 22), setting="care_home", registered_beds=3)]
    home, agency = capacity(log, as_of=AS_OF)
    assert home == q.CareHomeCapacity("home-a", AS_OF, 3, 4, 0, 0, 1)
    assert (agency.commissioned_hours_7d, agency.commissioned_hours_not_planned) == (None, None)
    assert capacity(log, as_of=t(11, 21, 9))[1].commissioned_hours_7d == 10.0


def test_a_visit_whose_latest_cancellation_was_the_providers_is_still_planned():
    log = homecare() + [agency_profile(t(11, 1)),
                        make(ev.VisitCancelled, t(11, 20, 19), location_id="home-b", resident_id="client-1",
                             visit_id="v4", by_client_in_advance=False)]
    # v4 (21 Nov 08:00), cancelled by the client and then by the provider, joins v9, v1, v2, v3 (4 h before).
    assert capacity(log, as_of=t(11, 21, 9))[0].planned_hours_7d == 5.0
