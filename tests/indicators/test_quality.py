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
                          "carepulse-quality.1", details or {})


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
