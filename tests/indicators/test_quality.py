"""Pure indicator definitions (indicators/quality.py) as tables of (input, expected), compared whole.

Thresholds are cqc_domain.md §2.2 rows 1–11 and §2.1 minimum denominators; every expected value is
written out here, not read back from quality.toml, so a wrong number in the config fails these tests.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from indicators import quality as q
from indicators.quality import (
    CallResponse,
    Dose,
    DueObservation,
    EscalationTrigger,
    IndicatorValue,
    PlannedVisit,
    Rag,
    ResidentDay,
    ScoredSet,
    Stay,
    VisitOutcome,
)

RULES = q.load_rules()
LOC = "loc-a"
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
END = datetime(2026, 10, 29, tzinfo=timezone.utc)
G, A, R, I = Rag.GREEN, Rag.AMBER, Rag.RED, Rag.INSUFFICIENT_DATA


def expected(indicator_id: str, numerator: float, denominator: float, value: float | None, status: Rag,
             details: dict | None = None) -> IndicatorValue:
    return IndicatorValue(indicator_id, LOC, START, END, numerator, denominator, value, status,
                          "carepulse-quality.2", details or {})


def utc(day: int, hour: int = 0, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


@pytest.mark.parametrize("obd, falls, value, status", [
    (0, 0, None, I),          # zero denominator: no value
    (299, 0, 0.0, I),         # below 300 OBD (§2.1)
    (300, 0, 0.0, G),
    (1000, 4, 4.0, G),
    (1000, 5, 5.0, A),        # G < 5
    (1000, 8, 8.0, A),        # A 5–8
    (1000, 9, 9.0, R),        # R > 8
])
def test_falls_rate(obd, falls, value, status):
    assert q.falls_rate(LOC, START, END, occupied_bed_days=obd, confirmed_falls=falls, rules=RULES) == \
        expected("falls_rate", falls, obd, value, status)


@pytest.mark.parametrize("obd, harms, numerator, value, status, severe", [
    (0, [], 0, None, I, 0),
    (299, ["fatal"], 1, 1 / 299 * 1000, I, 1),            # a red event never colours insufficient data
    (1000, ["none", None], 0, 0.0, G, 0),                 # no harm and ungraded are not "with harm"
    (1000, ["low"], 1, 1.0, A, 0),                        # G < 1.0
    (2000, ["low"] * 5, 5, 2.5, A, 0),                    # A 1.0–2.5
    (2000, ["moderate"] * 6, 6, 3.0, R, 0),               # R > 2.5
    (2000, ["severe"], 1, 0.5, R, 1),                     # severe: red event at a green rate
])
def test_falls_with_harm_rate(obd, harms, numerator, value, status, severe):
    assert q.falls_with_harm_rate(LOC, START, END, occupied_bed_days=obd, harms=harms, rules=RULES) == \
        expected("falls_with_harm_rate", numerator, obd, value, status, {"severe_or_fatal_falls": severe})


def days(met: int, not_met: int) -> list[ResidentDay]:
    return ([ResidentDay("r1", date(2026, 10, 1), 1600, 2000, 1600)] * met
            + [ResidentDay("r1", date(2026, 10, 2), 1599, 1500, 1600)] * not_met)


@pytest.mark.parametrize("resident_days, met, total, value, status", [
    ([], 0, 0, None, I),
    (days(27, 0), 27, 27, 100.0, I),      # below 28 resident-days
    (days(80, 20), 80, 100, 80.0, G),     # G >= 80 (consumed == target meets it)
    (days(79, 21), 79, 100, 79.0, A),
    (days(60, 40), 60, 100, 60.0, A),
    (days(59, 41), 59, 100, 59.0, R),     # R < 60
])
def test_hydration_days_met(resident_days, met, total, value, status):
    assert q.hydration_days_met(LOC, START, END, resident_days=resident_days, rules=RULES) == \
        expected("hydration_days_met", met, total, value, status)


def drinks(consumed_ml: float, offered_ml: float, target_ml: int = 1600) -> list[ResidentDay]:
    return [ResidentDay("r1", date(2026, 10, 1), consumed_ml, offered_ml, target_ml)]


@pytest.mark.parametrize("resident_days, value, status, offered_below", [
    ([], None, I, 0),
    (drinks(1500, 1599), 1500 / 1599 * 100, I, 1),   # below one default target offered; offered < target
    (drinks(1600, 2000), 80.0, G, 0),
    (drinks(1580, 2000), 79.0, A, 0),
    (drinks(1200, 2000), 60.0, A, 0),
    (drinks(1180, 2000), 59.0, R, 0),
    (drinks(0, 2000, 2400), 0.0, R, 1),
])
def test_hydration_consumed_vs_offered(resident_days, value, status, offered_below):
    consumed_ml = sum(d.consumed_ml for d in resident_days)
    offered_ml = sum(d.offered_ml for d in resident_days)
    assert q.hydration_consumed_vs_offered(LOC, START, END, resident_days=resident_days, rules=RULES) == \
        expected("hydration_consumed_vs_offered", consumed_ml, offered_ml, value, status,
                 {"resident_days_offered_below_target": offered_below})


def summary(response_s: list[float]) -> dict:
    s = sorted(response_s)
    return {"calls": len(s), "within_target": sum(1 for r in s if r <= 300),
            "median_s": s[(len(s) + 1) // 2 - 1], "p90_s": s[-(-9 * len(s) // 10) - 1],
            "over_exception": sum(1 for r in s if r > 900)}


@pytest.mark.parametrize("response_s, status", [
    ([60] * 9, I),                                 # fewer than 10 calls
    ([60] * 9 + [300], G),                         # median 1 min, p90 1 min, 100 % within 5 min
    ([180] * 10, G),                               # median exactly 3 min
    ([181] * 10, A),                               # 100 % within 5 min but median > 3 min
    ([60] * 8 + [300] * 2, G),                     # p90 (9th of 10, nearest rank) exactly 5 min
    ([60] * 9 + [301], G),                         # 90 % within 5 min; p90 is still 60 s
    ([60] * 8 + [301] * 2, A),                     # 80 % within, p90 301 s > 5 min
    ([60] * 8 + [600] * 2, A),                     # p90 exactly 10 min
    ([60] * 8 + [601] * 2, R),                     # p90 > 10 min at 80 % within
    ([60] * 7 + [301] * 3, R),                     # 70 % < 80 %
    ([60] * 9 + [901], G),                         # an exception call (> 15 min) is reported, not a colour
])
def test_call_bell_response(response_s, status):
    calls = [CallResponse("routine", r) for r in response_s]
    s = summary(response_s)
    assert q.call_bell_response(LOC, START, END, calls=calls, unanswered_calls=2, rules=RULES) == expected(
        "call_bell_response", s["within_target"], len(response_s), s["within_target"] / len(response_s) * 100,
        status, {"median_s": s["median_s"], "p90_s": s["p90_s"], "calls_over_exception": s["over_exception"],
                 "unanswered_calls": 2, "by_priority": {"routine": s}})


def test_call_bell_response_by_priority_and_empty():
    calls = [CallResponse("emergency", 30), CallResponse("routine", 400), CallResponse("routine", 100)]
    assert q.call_bell_response(LOC, START, END, calls=calls, unanswered_calls=0, rules=RULES) == expected(
        "call_bell_response", 2, 3, 2 / 3 * 100, I,
        {"median_s": 100, "p90_s": 400, "calls_over_exception": 0, "unanswered_calls": 0, "by_priority": {
            "emergency": {"calls": 1, "within_target": 1, "median_s": 30, "p90_s": 30, "over_exception": 0},
            "routine": {"calls": 2, "within_target": 1, "median_s": 100, "p90_s": 400, "over_exception": 0}}})
    assert q.call_bell_response(LOC, START, END, calls=[], unanswered_calls=1, rules=RULES) == expected(
        "call_bell_response", 0, 0, None, I,
        {"median_s": None, "p90_s": None, "calls_over_exception": 0, "unanswered_calls": 1, "by_priority": {}})


@pytest.mark.parametrize("values, pct, result", [
    ([5], 50, 5), ([5], 90, 5), ([3, 1, 2], 50, 2), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 75, 3),
    (list(range(1, 11)), 90, 9), (list(range(1, 11)), 91, 10), (list(range(1, 11)), 100, 10),
    (list(range(1, 101)), 90, 90), ([4, 4, 1], 10, 1),
])
def test_percentile_nearest_rank(values, pct, result):
    assert q.percentile_nearest_rank(values, pct) == result


@pytest.mark.parametrize("values, pct, message", [
    ([], 50, "A percentile of no values is undefined."),
    ([1], 0, "A nearest-rank percentile must be above 0 and at most 100."),
    ([1], 101, "A nearest-rank percentile must be above 0 and at most 100."),
])
def test_percentile_refuses(values, pct, message):
    with pytest.raises(ValueError) as error:
        q.percentile_nearest_rank(values, pct)
    assert str(error.value) == message


def trigger(risk: str, ack_after_min: float | None, deadline_min: int = 60, raised: datetime | None = None
            ) -> EscalationTrigger:
    raised = raised or utc(10)
    return EscalationTrigger(risk, raised, raised + timedelta(minutes=deadline_min),
                             None if ack_after_min is None else raised + timedelta(minutes=ack_after_min))


@pytest.mark.parametrize("triggers, on_time, judged, status, pending, late_high", [
    ([], 0, 0, I, 0, 0),
    ([trigger("medium", 10)] * 4, 4, 4, I, 0, 0),                                    # fewer than 5
    ([trigger("medium", 60)] * 19 + [trigger("medium", 61)], 19, 20, G, 0, 0),      # 95 %; at the deadline is on time
    ([trigger("medium", 10)] * 18 + [trigger("medium", None)] * 2, 18, 20, A, 0, 0),  # 90 %
    ([trigger("medium", 10)] * 16 + [trigger("medium", None)] * 4, 16, 20, A, 0, 0),  # 80 %
    ([trigger("medium", 10)] * 15 + [trigger("medium", None)] * 5, 15, 20, R, 0, 0),  # 75 % < 80 %
    ([trigger("medium", 10)] * 19 + [trigger("high", 31, 30)], 19, 20, R, 0, 1),      # late high: red event
    ([trigger("medium", 10)] * 5 + [trigger("high", None, 30, END - timedelta(minutes=10))], 5, 5, G, 1, 0),
    ([trigger("medium", 10, raised=START - timedelta(minutes=1))] * 5, 0, 0, I, 0, 0),  # raised before window
])
def test_escalation_timeliness(triggers, on_time, judged, status, pending, late_high):
    assert q.escalation_timeliness(LOC, START, END, triggers=triggers, rules=RULES) == expected(
        "escalation_timeliness", on_time, judged, on_time / judged * 100 if judged else None, status,
        {"pending": pending, "late_high": late_high})


def due(on_time: int, late: int, missing: int = 0) -> list[DueObservation]:
    at = utc(10)
    return ([DueObservation(at, at)] * on_time + [DueObservation(at, at + timedelta(seconds=1))] * late
            + [DueObservation(at, None)] * missing)


@pytest.mark.parametrize("due_obs, on_time, counted, status", [
    ([], 0, 0, I),
    (due(4, 0), 4, 4, I),
    (due(9, 1), 9, 10, G),             # G >= 90 %; taken exactly at the due time is on time
    (due(8, 2), 8, 10, A),             # 80 %
    (due(15, 4, 1), 15, 20, A),        # 75 %
    (due(14, 6), 14, 20, R),           # 70 % < 75 %
    (due(9, 0) + [DueObservation(END, None)], 9, 9, G),   # due at window end: the next window's
])
def test_observation_compliance(due_obs, on_time, counted, status):
    assert q.observation_compliance(LOC, START, END, due=due_obs, complete_sets=3, all_sets=4, rules=RULES) == \
        expected("observation_compliance", on_time, counted, on_time / counted * 100 if counted else None, status,
                 {"complete_sets_pct": 75.0})


def visit(outcome: VisitOutcome, lateness_min: float | None = 0, time_critical: bool = False) -> PlannedVisit:
    return PlannedVisit("v", utc(10), outcome, time_critical, None if lateness_min is None else lateness_min * 60)


D, M, C, P = VisitOutcome.DELIVERED, VisitOutcome.MISSED, VisitOutcome.CANCELLED_BY_CLIENT, VisitOutcome.PENDING


@pytest.mark.parametrize("visits, missed, judged, status, details", [
    ([], 0, 0, I, (0, 0, 0)),
    ([visit(D)] * 4 + [visit(C), visit(P)], 0, 4, I, (1, 1, 0)),
    ([visit(D)] * 999 + [visit(M, None)], 1, 1000, G, (0, 0, 0)),         # G <= 0.1 %
    ([visit(D)] * 998 + [visit(M, None)] * 2, 2, 1000, A, (0, 0, 0)),
    ([visit(D)] * 995 + [visit(M, None)] * 5, 5, 1000, A, (0, 0, 0)),     # A up to 0.5 %
    ([visit(D)] * 994 + [visit(M, None)] * 6, 6, 1000, R, (0, 0, 0)),     # R > 0.5 %
    ([visit(D)] * 999 + [visit(M, None, True)], 1, 1000, R, (0, 0, 1)),   # missed time-critical: red event
])
def test_missed_visits(visits, missed, judged, status, details):
    cancelled, pending, time_critical = details
    assert q.missed_visits(LOC, START, END, visits=visits, rules=RULES) == expected(
        "missed_visits", missed, judged, missed / judged * 100 if judged else None, status,
        {"cancelled_by_client": cancelled, "pending": pending, "missed_time_critical": time_critical})


@pytest.mark.parametrize("visits, late, delivered, status, details", [
    ([], 0, 0, I, (0, 0, 0)),
    ([visit(D, 31)] * 4 + [visit(M, None)], 4, 4, I, (4, 0, 0)),
    ([visit(D, 30)] * 19 + [visit(D, 30.5)], 1, 20, A, (20, 0, 0)),      # 30 min exactly is not late; 5 %
    ([visit(D, 15)] * 20, 0, 20, G, (0, 0, 0)),                           # 15 min exactly is not delayed
    ([visit(D)] * 18 + [visit(D, 31)] * 2, 2, 20, A, (2, 0, 0)),          # 10 %
    ([visit(D)] * 17 + [visit(D, 31)] * 3, 3, 20, R, (3, 0, 0)),          # 15 % > 10 %
    ([visit(D)] * 19 + [visit(D, -31, True), visit(D, 30, True)], 0, 21, G, (1, 2, 1)),   # early counts for ±30
])
def test_late_visits(visits, late, delivered, status, details):
    over_15, time_critical, outside = details
    assert q.late_visits(LOC, START, END, visits=visits, rules=RULES) == expected(
        "late_visits", late, delivered, late / delivered * 100 if delivered else None, status,
        {"over_15_min": over_15, "time_critical_delivered": time_critical, "time_critical_outside_30_min": outside})


GIVEN, REFUSED, NOT_DONE = Dose(False, "done", 0), Dose(False, "refused", 0), Dose(False, "not_done", 0)


@pytest.mark.parametrize("doses, missed, status, red_events", [
    ([], 0, I, 0),
    ([GIVEN] * 3 + [NOT_DONE], 1, I, 0),
    ([GIVEN] * 199 + [NOT_DONE], 1, G, 0),                                     # G <= 0.5 %
    ([GIVEN] * 150 + [REFUSED] * 49 + [Dose(False, None, None)], 1, G, 0),    # reasons explain; no record is missed
    ([GIVEN] * 198 + [NOT_DONE] * 2, 2, A, 0),                                 # 1 %
    ([GIVEN] * 98 + [NOT_DONE] * 2, 2, A, 0),                                  # 2 %
    ([GIVEN] * 97 + [NOT_DONE] * 3, 3, R, 0),                                  # 3 % > 2 %
    ([GIVEN] * 99 + [Dose(True, "done", 3601)], 0, R, 1),                      # time-critical > 1 h late
    ([GIVEN] * 99 + [Dose(True, "done", 3600)], 0, G, 0),
    ([GIVEN] * 199 + [Dose(True, None, None)], 1, R, 1),                       # time-critical omitted
    ([GIVEN] * 99 + [Dose(True, "withheld_by_clinician", 0)], 0, G, 0),
])
def test_missed_medication_doses(doses, missed, status, red_events):
    assert q.missed_medication_doses(LOC, START, END, doses=doses, rules=RULES) == expected(
        "missed_medication_doses", missed, len(doses), missed / len(doses) * 100 if doses else None, status,
        {"time_critical_red_events": red_events})


# October 2026 is BST until the 25th: local midnight is 23:00 UTC the day before.
W_START, W_END = utc(1, 0), utc(4, 0)   # censuses 1 Oct 23:00, 2 Oct 23:00, 3 Oct 23:00 UTC


@pytest.mark.parametrize("stays, obd", [
    ([], 0),
    ([Stay("r1", utc(1, 9), utc(1, 17))], 0),                   # admitted and discharged the same day
    ([Stay("r1", utc(1, 21), utc(2, 8))], 1),                   # admitted 22:00 local, left next morning
    ([Stay("r1", utc(1, 9), utc(1, 23))], 0),                   # left exactly at the census
    ([Stay("r1", utc(1, 23), utc(2, 0))], 1),                   # arrived exactly at the census
    ([Stay("r1", utc(1, 9), None)], 3),
    ([Stay("r1", utc(1, 9), utc(2, 9)), Stay("r1", utc(2, 20), None)], 3),   # hospital by day only
    ([Stay("r1", utc(1, 9), utc(2, 9)), Stay("r1", utc(3, 9), None)], 2),    # in hospital at the 2 Oct census
    ([Stay("r1", utc(1, 9), None), Stay("r2", utc(3, 9), None)], 4),
    ([Stay("r1", utc(1, 12, month=9), utc(1, 12, month=12))], 3),            # covers the whole window
])
def test_occupied_bed_days(stays, obd):
    assert q.occupied_bed_days(stays, W_START, W_END) == obd


def test_census_across_clock_change():
    # 25 Oct 2026 BST ends: local midnights are 24 Oct 23:00 UTC, then 26 Oct 00:00 UTC.
    assert q.census_midnights(utc(24, 12), utc(26, 12)) == [utc(24, 23), utc(26, 0)]
    assert q.occupied_bed_days([Stay("r1", utc(24, 12), None)], utc(24, 12), utc(26, 12)) == 2


@pytest.mark.parametrize("changes, stays", [
    ([], []),
    ([(utc(1, 9), "admitted")], [Stay("r1", utc(1, 9), None)]),
    ([(utc(3, 9), "admitted"), (utc(1, 9), "admitted"), (utc(2, 9), "in_hospital")],   # out of order
     [Stay("r1", utc(1, 9), utc(2, 9)), Stay("r1", utc(3, 9), None)]),
    ([(utc(1, 9), "admitted"), (utc(1, 10), "admitted"), (utc(5, 9), "discharged")],   # repeated record
     [Stay("r1", utc(1, 9), utc(5, 9))]),
    ([(utc(1, 9), "in_hospital"), (utc(2, 9), "discharged")], []),
])
def test_stays_from_statuses(changes, stays):
    assert q.stays_from_statuses("r1", changes) == stays


@pytest.mark.parametrize("care_plan_ml, sex, target_ml", [
    (1200, "male", 1200), (None, "female", 1600), (None, "male", 2000), (None, None, None), (2500, None, 2500),
])
def test_daily_fluid_target_ml(care_plan_ml, sex, target_ml):
    assert q.daily_fluid_target_ml(care_plan_ml, sex, RULES) == target_ml


@pytest.mark.parametrize("planned, next_planned, deadline", [
    (utc(10, 8), None, utc(10, 22)),                       # 23:00 BST
    (utc(10, 8), utc(10, 12), utc(10, 12)),                # the next planned visit comes first
    (utc(10, 22, 30), None, utc(10, 23)),                  # planned after 23:00 local: until local midnight
    (utc(10, 8, month=12), None, utc(10, 23, month=12)),   # GMT
])
def test_visit_deadline(planned, next_planned, deadline):
    assert q.visit_deadline(planned, next_planned, 82800) == deadline


DEADLINE = utc(10, 22)


@pytest.mark.parametrize("checked_in_at, cancelled, by_client, as_of, outcome", [
    (utc(10, 9), False, False, utc(10, 10), D),
    (None, True, True, utc(11), C),                        # cancelled by the client in advance
    (None, True, False, utc(10, 1), M),                    # cancelled by the provider: missed at once
    (None, False, False, DEADLINE - timedelta(seconds=1), P),
    (None, False, False, DEADLINE, M),                     # no check-in by 23:00
    (DEADLINE, False, False, utc(11), M),                  # checked in at 23:00: not delivered before it
    (DEADLINE - timedelta(seconds=1), False, False, utc(11), D),
])
def test_classify_visit(checked_in_at, cancelled, by_client, as_of, outcome):
    assert q.classify_visit(deadline=DEADLINE, checked_in_at=checked_in_at, cancelled=cancelled,
                            cancelled_by_client_in_advance=by_client, as_of=as_of) is outcome


def at(hour: float) -> datetime:
    return utc(10) + timedelta(hours=hour)


def scored(hour: float, total: int | None, interval_min: int | None = 240, complete: bool = True) -> ScoredSet:
    return ScoredSet(at(hour), complete, total, interval_min)


@pytest.mark.parametrize("sets, due_obs", [
    ([], []),
    ([scored(0, 0, 720), scored(12, 0, 720)], []),                          # never in an episode
    ([scored(0, 2), scored(4, 1)], [DueObservation(at(4), at(4)), DueObservation(at(8), None)]),
    ([scored(4, 1), scored(0, 2)], [DueObservation(at(4), at(4)), DueObservation(at(8), None)]),   # any order
    ([scored(0, 2), scored(3, None, None, False), scored(5, 0, 720)],       # an incomplete set is not taken
     [DueObservation(at(4), at(5)), DueObservation(at(17), None)]),
    ([scored(0, 7, None), scored(1, 4)], [DueObservation(at(5), None)]),    # continuous monitoring: escalated
    ([scored(0, 1), scored(71, 0, 720), scored(72, 0, 720)],                # the episode closes 72 h after the 1
     [DueObservation(at(4), at(71)), DueObservation(at(83), at(72))]),
])
def test_due_observations(sets, due_obs):
    assert q.due_observations(sets, 259200) == due_obs


# --- issue 11: continuity of carers, travel between visits, urinalysis timeliness, capacity ------------------

def people(*carers: int, contacts: int = 14, setting_at: datetime | None = None) -> list[q.CarerContact]:
    """One person per entry, each with `contacts` contacts shared round that many distinct carers."""
    at = setting_at or utc(10)
    return [q.CarerContact(f"p{n}", f"carer-{k % count}", at + timedelta(hours=k))
            for n, count in enumerate(carers) for k in range(contacts)]


def continuity(numerator: int, denominator: int, status: Rag, median: int | None, below: int = 0,
               setting: str = "homecare") -> IndicatorValue:
    return expected("carer_continuity", numerator, denominator, numerator / denominator * 100 if denominator else None,
                    status, {"setting": setting, "more_than_carers": 8 if setting == "homecare" else 20,
                             "median_carers": median, "people_below_minimum_contacts": below})


@pytest.mark.parametrize("contacts, setting, result", [
    ([], "homecare", continuity(0, 0, I, None)),
    (people(1, 1, 1, 1), "homecare", continuity(0, 4, I, 1)),                    # fewer than 5 people
    (people(1, 2, 3, 4, 5), "homecare", continuity(0, 5, G, 3)),
    (people(*[8] * 10), "homecare", continuity(0, 10, G, 8)),                    # 8 is not more than 8
    (people(*[2] * 9, 9), "homecare", continuity(1, 10, G, 2)),                  # G <= 10 %
    (people(*[2] * 8, 9, 9), "homecare", continuity(2, 10, A, 2)),               # 20 %
    (people(*[2] * 12, 9, 9, 9, 14), "homecare", continuity(4, 16, A, 2)),       # 25 % is not red
    (people(*[2] * 11, 9, 9, 9, 9, 14), "homecare", continuity(5, 16, R, 2)),    # R > 25 %
    (people(*[1] * 5) + people(3, contacts=13)[:13], "homecare",                 # p0 again: 19 contacts, 3 carers
     continuity(0, 5, G, 1)),
    (people(*[1] * 5) + [q.CarerContact("solo", "carer-0", utc(10))] * 13, "homecare",   # 13 < 14 contacts
     continuity(0, 5, G, 1, below=1)),
    (people(*[9] * 5, setting_at=START - timedelta(hours=1)), "homecare",        # first contact before the window
     continuity(0, 0, I, None, below=5)),
    (people(*[9] * 5, setting_at=END - timedelta(hours=13)), "homecare",         # last contact at window end
     continuity(0, 0, I, None, below=5)),
    (people(*[20] * 5, contacts=20), "care_home", continuity(0, 5, G, 20, setting="care_home")),
    (people(*[21] * 4, 1, contacts=21), "care_home", continuity(4, 5, R, 21, setting="care_home")),
])
def test_carer_continuity(contacts, setting, result):
    assert q.carer_continuity(LOC, START, END, contacts=contacts, setting=setting, rules=RULES) == result


def test_carer_continuity_refuses_an_unknown_setting():
    with pytest.raises(ValueError) as error:
        q.carer_continuity(LOC, START, END, contacts=[], setting="hospital", rules=RULES)
    assert str(error.value) == "carer continuity: setting must be one of homecare, care_home, not 'hospital'."


def cv(visit_id: str, check_in: datetime, minutes: float | None = 30, carer: str = "c1") -> q.CarerVisit:
    return q.CarerVisit(carer, visit_id, check_in, None if minutes is None else check_in + timedelta(minutes=minutes))


def gap(from_id: str, to_id: str, arrived: datetime, gap_min: float, kind: q.GapKind, carer: str = "c1") -> q.VisitGap:
    return q.VisitGap(carer, from_id, to_id, arrived, gap_min * 60, kind)


TRAVEL, BREAK, OVERLAP = q.GapKind.TRAVEL, q.GapKind.BREAK, q.GapKind.OVERLAP


@pytest.mark.parametrize("visits, gaps", [
    ([], []),
    ([cv("a", utc(10, 8)), cv("b", utc(10, 8, 45))], [gap("a", "b", utc(10, 8, 45), 15, TRAVEL)]),
    ([cv("b", utc(10, 8, 45)), cv("a", utc(10, 8))], [gap("a", "b", utc(10, 8, 45), 15, TRAVEL)]),   # any order
    ([cv("a", utc(10, 8)), cv("b", utc(10, 8, 45), carer="c2")], []),                                 # two carers
    ([cv("a", utc(10, 8)), cv("b", utc(10, 9, 30))], [gap("a", "b", utc(10, 9, 30), 60, TRAVEL)]),   # at the cap
    ([cv("a", utc(10, 8)), cv("b", utc(10, 9, 31))], [gap("a", "b", utc(10, 9, 31), 61, BREAK)]),
    ([cv("a", utc(10, 8)), cv("b", utc(10, 8, 20))], [gap("a", "b", utc(10, 8, 20), -10, OVERLAP)]),
    ([cv("a", utc(10, 8), None), cv("b", utc(10, 8, 45))], []),                                      # no check-out
    ([cv("a", utc(10, 8)), cv("b", utc(10, 8, 45)), cv("c", utc(10, 9, 30))],
     [gap("a", "b", utc(10, 8, 45), 15, TRAVEL), gap("b", "c", utc(10, 9, 30), 15, TRAVEL)]),
    ([cv("a", utc(10, 22, 20)), cv("b", utc(10, 23, 10))], []),     # 23:50 BST out, 00:10 BST next day in
    ([cv("a", utc(10, 23, 20)), cv("b", utc(11, 0, 5))],            # 00:50 and 01:05 BST, one local day
     [gap("a", "b", utc(11, 0, 5), 15, TRAVEL)]),
    ([cv("a", utc(10, 23, 20, month=12)), cv("b", utc(11, 0, 10, month=12))], []),   # GMT: across midnight
    ([cv("a", utc(25, 0, 20)), cv("b", utc(25, 1, 10))],            # clocks go back: out 01:50 BST, in 01:10 GMT
     [gap("a", "b", utc(25, 1, 10), 20, TRAVEL)]),
])
def test_visit_gaps(visits, gaps):
    assert q.visit_gaps(visits, 3600) == gaps


def gaps_of(*minutes: float, kind: q.GapKind = TRAVEL, arrived: datetime | None = None) -> list[q.VisitGap]:
    return [gap("a", "b", arrived or utc(10), m, kind) for m in minutes]


@pytest.mark.parametrize("gaps, long, counted, status, median_min, breaks, overlaps", [
    ([], 0, 0, I, None, 0, 0),
    (gaps_of(30, 30, 30, 30), 4, 4, I, 30, 0, 0),                          # fewer than 5 gaps
    (gaps_of(*[20] * 10), 0, 10, G, 20, 0, 0),                              # 20 min is not long
    (gaps_of(*[10] * 9, 20.5), 1, 10, G, 10, 0, 0),                         # G <= 10 %
    (gaps_of(*[10] * 8, 21, 21), 2, 10, A, 10, 0, 0),
    (gaps_of(*[5] * 9, 25, 25, 25), 3, 12, A, 5, 0, 0),                     # 25 % is not red
    (gaps_of(*[5] * 7, 25, 25, 25), 3, 10, R, 5, 0, 0),                     # R > 25 %
    (gaps_of(4, 8, 12, 16, 30, 40), 2, 6, R, 12, 0, 0),                     # median: lower middle value
    (gaps_of(*[10] * 5) + gaps_of(90, kind=BREAK) + gaps_of(-5, -1, kind=OVERLAP), 0, 5, G, 10, 1, 2),
    (gaps_of(*[10] * 5) + gaps_of(*[30] * 5, arrived=END), 0, 5, G, 10, 0, 0),   # arrived at window end
])
def test_travel_time(gaps, long, counted, status, median_min, breaks, overlaps):
    assert q.travel_time(LOC, START, END, gaps=gaps, rules=RULES) == expected(
        "travel_time", long, counted, long / counted * 100 if counted else None, status,
        {"median_travel_min": median_min, "breaks": breaks, "overlaps": overlaps})


def episode(tested_after_h: float | None, upgraded_after_h: float | None = None,
            recommended_at: datetime | None = None) -> q.AmberEpisode:
    at = recommended_at or utc(10)
    def later(h: float | None) -> datetime | None:
        return None if h is None else at + timedelta(hours=h)
    return q.AmberEpisode("e", "r1", at, later(upgraded_after_h), later(tested_after_h))


SIX_H = 6


@pytest.mark.parametrize("episodes, on_time, judged, status, pending, upgraded", [
    ([], 0, 0, I, 0, 0),
    ([episode(1)] * 4, 4, 4, I, 0, 0),                                                   # fewer than 5
    ([episode(1)] * 9 + [episode(SIX_H)], 10, 10, G, 0, 0),                              # at the target is on time
    ([episode(1)] * 9 + [episode(SIX_H + 1 / 3600)], 9, 10, G, 0, 0),                    # 90 %
    ([episode(1)] * 8 + [episode(None)] * 2, 8, 10, A, 0, 0),
    ([episode(1)] * 7 + [episode(7)] * 3, 7, 10, A, 0, 0),                               # 70 % is not red
    ([episode(1)] * 6 + [episode(None)] * 4, 6, 10, R, 0, 0),                            # R < 70 %
    ([episode(1)] * 5 + [episode(None, 2), episode(3, 2)], 5, 5, G, 0, 2),               # high first: excluded
    ([episode(1)] * 5 + [episode(2, 3)], 6, 6, G, 0, 0),                                 # tested before the upgrade
    ([episode(1)] * 5 + [episode(None, 7)], 5, 6, A, 0, 0),                              # upgraded after the target
    ([episode(1)] * 5 + [episode(None, recommended_at=END - timedelta(hours=1))], 5, 5, G, 1, 0),   # pending
    ([episode(1)] * 5 + [episode(0.5, recommended_at=END - timedelta(hours=1))], 6, 6, G, 0, 0),
    ([episode(1)] * 5 + [episode(1, recommended_at=END - timedelta(hours=1))], 5, 5, G, 1, 0),  # tested at END
    ([episode(1)] * 5 + [episode(1, recommended_at=START - timedelta(seconds=1))], 5, 5, G, 0, 0),
])
def test_urinalysis_timeliness(episodes, on_time, judged, status, pending, upgraded):
    assert q.urinalysis_timeliness(LOC, START, END, episodes=episodes, rules=RULES) == expected(
        "urinalysis_timeliness", on_time, judged, on_time / judged * 100 if judged else None, status,
        {"pending": pending, "upgraded_to_high": upgraded})


@pytest.mark.parametrize("times, result", [
    ([], None), ([utc(9)], None), ([utc(10)], utc(10)), ([utc(12), utc(9), utc(11)], utc(11)),
])
def test_first_at_or_after(times, result):
    assert q.first_at_or_after(utc(10), times) == result


@pytest.mark.parametrize("changes, statuses", [
    ([], {}),
    ([("r1", utc(1), "admitted"), ("r1", utc(5), "in_hospital")], {"r1": "in_hospital"}),
    ([("r1", utc(5), "in_hospital"), ("r1", utc(1), "admitted")], {"r1": "in_hospital"}),   # any order
    ([("r1", utc(1), "admitted"), ("r1", utc(10), "discharged")], {"r1": "admitted"}),      # at `at`: not yet
    ([("r1", utc(1), "admitted"), ("r2", utc(11), "admitted")], {"r1": "admitted"}),
])
def test_latest_statuses(changes, statuses):
    assert q.latest_statuses(changes, utc(10)) == statuses


@pytest.mark.parametrize("statuses, max_beds, occupied, reserved, vacant, over", [
    ({}, 30, 0, 0, 30, 0),
    ({"r1": "admitted", "r2": "in_hospital", "r3": "discharged"}, 30, 1, 1, 28, 0),
    ({"r1": "admitted", "r2": "admitted", "r3": "in_hospital"}, 3, 2, 1, 0, 0),              # full
    ({"r1": "admitted", "r2": "admitted", "r3": "in_hospital"}, 2, 2, 1, 0, 1),              # more than registered
    ({}, 0, 0, 0, 0, 0),
])
def test_care_home_capacity(statuses, max_beds, occupied, reserved, vacant, over):
    assert q.care_home_capacity(LOC, utc(10), max_beds=max_beds, statuses=statuses) == q.CareHomeCapacity(
        LOC, utc(10), max_beds, occupied, reserved, vacant, over)


def rostered(person: str, start: datetime, minutes: int = 60, cancelled: bool = False) -> q.RosteredVisit:
    return q.RosteredVisit(person, start, start + timedelta(minutes=minutes), cancelled)


@pytest.mark.parametrize("visits, commissioned, people_n, planned_h, not_planned_h", [
    ([], None, 0, 0.0, None),
    ([], 10.0, 0, 0.0, 10.0),
    ([rostered("c1", utc(9)), rostered("c1", utc(8), 30), rostered("c2", utc(5), 45)], 10.0, 2, 2.25, 7.75),
    ([rostered("c1", utc(9)), rostered("c2", utc(9), cancelled=True)], 0.5, 1, 1.0, -0.5),   # client cancelled
    ([rostered("c1", utc(3)), rostered("c1", utc(10)), rostered("c1", utc(2, 23))], None, 1, 1.0, None),  # 7 days
])
def test_homecare_capacity(visits, commissioned, people_n, planned_h, not_planned_h):
    assert q.homecare_capacity(LOC, utc(10), visits=visits, commissioned_hours_per_week=commissioned) == \
        q.HomecareCapacity(LOC, utc(10), people_n, planned_h, commissioned, not_planned_h)
