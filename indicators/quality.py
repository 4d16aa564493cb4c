"""Care-quality indicators, pure: numerator, denominator, window and RAG for each indicator of cqc_domain.md §2.2.

Every window, minimum denominator, threshold and parameter lives in ``indicators/config/quality.toml`` next
to its source (S or P, cqc_domain.md §0 point 3); this module names the rules and applies them. It reads
that file once (``packaged_rules``), does no other I/O and reads no clock: windows are passed in.

Common rules (cqc_domain.md §2.1):

- Below an indicator's minimum denominator the status is ``insufficient_data``, never a colour, and a zero
  denominator has no value at all.
- Occupied bed days are midnight censuses in the home's local time (``CARE_TZ``); a day in hospital is not
  an occupied bed day.
- A "red event" (e.g. a severe fall, §2.2 row 2) turns a sufficient indicator red whatever its rate.

Three further indicators (issue 11) are defined here but streamed only once the worker is wired for them:
``EXTENSION_INDICATOR_IDS`` (continuity of carers, travel between visits, urinalysis timeliness);
``indicators.recompute`` computes them when asked. Live capacity (``care_home_capacity``,
``homecare_capacity``) is a pure function of the same inputs, not a RAG indicator.

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value at rank
ceil(p/100 · n) (1-based), so it is always an observed value; the median is the 50th percentile, i.e. the
lower middle value when n is even.
"""

from __future__ import annotations

import itertools
import math
import operator
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

#: Care homes and homecare agencies in England: censuses and "23:00 the same day" are local time.
CARE_TZ = ZoneInfo("Europe/London")

INDICATOR_IDS = (
    "falls_rate",
    "falls_with_harm_rate",
    "hydration_days_met",
    "hydration_consumed_vs_offered",
    "call_bell_response",
    "escalation_timeliness",
    "observation_compliance",
    "missed_visits",
    "late_visits",
    "missed_medication_doses",
)
#: Issue 11's indicators. The worker streams continuity and travel always and urinalysis timeliness only
#: with ``urinalysis_pathway.enabled`` (``streamed_indicator_ids``); the oracle computes
#: them on request (``recompute(indicator_ids=ALL_INDICATOR_IDS)``).
EXTENSION_INDICATOR_IDS = (
    "carer_continuity",
    "travel_time",
    "urinalysis_timeliness",
)
ALL_INDICATOR_IDS = INDICATOR_IDS + EXTENSION_INDICATOR_IDS

#: Parameters each indicator needs beyond its thresholds (names carry units).
REQUIRED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "call_bell_response": ("target_s", "green_median_s_at_most", "green_p90_s_at_most", "red_p90_s_above",
                           "exception_s"),
    "observation_compliance": ("episode_close_after_s",),
    "missed_visits": ("end_of_day_s",),
    "late_visits": ("late_s", "delayed_band_s"),
    "missed_medication_doses": ("time_critical_late_s",),
    "carer_continuity": ("homecare_more_than_carers", "care_home_more_than_carers", "minimum_contacts_per_person"),
    "travel_time": ("long_travel_s", "break_over_s"),
    "urinalysis_timeliness": ("target_s",),
}
#: The settings continuity of carers is judged in, each with its own limit (``<setting>_more_than_carers``).
CONTINUITY_SETTINGS = ("homecare", "care_home")
#: NEWS2 escalation risks the urinalysis pathway may be configured to act on (`events.EscalationRisk`).
ESCALATION_RISKS = ("low-medium", "medium", "high")

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
#: Which comparisons each colour may use, per improvement direction.
_DIRECTION_OPS = {
    "lower_is_better": ({"<", "<="}, {">", ">="}),
    "higher_is_better": ({">", ">="}, {"<", "<="}),
}
#: LFPSE harm levels counted as "with harm" (cqc_domain.md §2.2 row 2, [F5]) and those that are red events.
HARM_LEVELS = ("low", "moderate", "severe", "fatal")
RED_EVENT_HARM_LEVELS = ("severe", "fatal")
#: eMAR reason codes that explain a dose not given (cqc_domain.md §2.2 row 11, [M3]).
VALID_DOSE_REASONS = ("refused", "withheld_by_clinician", "not_required", "in_hospital")


class Rag(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class Threshold:
    op: str
    value: float
    source: str
    proposal: bool

    def met_by(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)


@dataclass(frozen=True)
class IndicatorRules:
    indicator_id: str
    title: str
    unit: str
    numerator: str
    denominator: str
    direction: str
    window_days: int
    minimum_denominator: float
    green: Threshold
    red: Threshold
    parameters: dict[str, float] = field(default_factory=dict)
    small_home_window_days: int | None = None
    small_home_beds_below: int | None = None

    def window_days_for(self, beds: int | None) -> int:
        """The window; the small-home window when the home has fewer beds than the limit (§2.1)."""
        if self.small_home_window_days is not None and beds is not None and beds < self.small_home_beds_below:
            return self.small_home_window_days
        return self.window_days


@dataclass(frozen=True)
class UrinalysisPathway:
    """Whether the stream publishes "urinalysis recommended" for amber NEWS2 episodes, and at which risks.

    Off by default: NICE and UKHSA advise against dipstick diagnosis of UTI in people over 65 (cqc_domain.md
    §2.2 row 13, [U3]); the pathway records Care City test-bed practice and needs a clinical safety
    officer's sign-off before it is switched on."""

    enabled: bool
    recommend_at_risks: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class QualityRules:
    version: str
    indicators: dict[str, IndicatorRules]
    default_target_ml: dict[str, int]
    urinalysis_pathway: UrinalysisPathway

    def __getitem__(self, indicator_id: str) -> IndicatorRules:
        return self.indicators[indicator_id]


def streamed_indicator_ids(rules: QualityRules) -> tuple[str, ...]:
    """The indicators the worker publishes, in this order: the ten core ones (``INDICATOR_IDS``),
    continuity of carers and travel between visits always, and urinalysis timeliness only while the rules
    switch the urinalysis pathway on (``urinalysis_pathway.enabled``, off by default: NICE and UKHSA advise
    against dipstick diagnosis of UTI over 65, cqc_domain.md §2.2 row 13, [U3]). The batch oracle computes
    urinalysis timeliness whenever it is asked, whatever the rules say."""
    extensions = tuple(i for i in EXTENSION_INDICATOR_IDS
                       if i != "urinalysis_timeliness" or rules.urinalysis_pathway.enabled)
    return INDICATOR_IDS + extensions


def _sourced(where: str, entry: object) -> dict:
    """Any setting: it must cite a source and say whether it is a carepulse proposal."""
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise ValueError(f"quality rules: {where} has no source; every threshold and setting must cite one.")
    if not isinstance(entry.get("proposal"), bool):
        raise ValueError(f"quality rules: {where} must say proposal = true or false.")
    return entry


def _setting(where: str, entry: object) -> dict:
    """A numeric setting: sourced, with a non-negative number as its value."""
    entry = _sourced(where, entry)
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"quality rules: {where} must have a non-negative number as its value.")
    return entry


def _threshold(where: str, entry: object) -> Threshold:
    entry = _setting(where, entry)
    if entry.get("op") not in _OPS:
        raise ValueError(f"quality rules: {where}.op must be one of {', '.join(_OPS)}.")
    return Threshold(op=entry["op"], value=float(entry["value"]), source=entry["source"], proposal=entry["proposal"])


def _indicator(indicator_id: str, table: object) -> IndicatorRules:
    if not isinstance(table, dict):
        raise ValueError(f"quality rules: indicator {indicator_id} is missing.")
    for text in ("title", "unit", "numerator", "denominator"):
        if not isinstance(table.get(text), str) or not table[text].strip():
            raise ValueError(f"quality rules: {indicator_id}.{text} must be a description.")
    direction = table.get("direction")
    if direction not in _DIRECTION_OPS:
        raise ValueError(f"quality rules: {indicator_id}.direction must be lower_is_better or higher_is_better.")
    window = _setting(f"{indicator_id}.window_days", table.get("window_days"))
    minimum = _setting(f"{indicator_id}.minimum_denominator", table.get("minimum_denominator"))
    green = _threshold(f"{indicator_id}.green", table.get("green"))
    red = _threshold(f"{indicator_id}.red", table.get("red"))
    green_ops, red_ops = _DIRECTION_OPS[direction]
    ordered = green.value <= red.value if direction == "lower_is_better" else green.value >= red.value
    if green.op not in green_ops or red.op not in red_ops or not ordered:
        raise ValueError(
            f"quality rules: {indicator_id} thresholds are not ordered for {direction}: "
            f"green is {green.op} {green.value:g} and red is {red.op} {red.value:g}.")
    parameters = {name: _setting(f"{indicator_id}.parameters.{name}", entry)["value"]
                  for name, entry in table.get("parameters", {}).items()}
    missing = [name for name in REQUIRED_PARAMETERS.get(indicator_id, ()) if name not in parameters]
    if missing:
        raise ValueError(f"quality rules: {indicator_id}.parameters is missing {', '.join(missing)}.")
    small_home = table.get("small_home_window_days")
    if small_home is not None:
        _setting(f"{indicator_id}.small_home_window_days", small_home)
        if not isinstance(small_home.get("beds_below"), int):
            raise ValueError(f"quality rules: {indicator_id}.small_home_window_days needs beds_below, a whole number.")
    return IndicatorRules(
        indicator_id=indicator_id,
        title=table["title"],
        unit=table["unit"],
        numerator=table["numerator"],
        denominator=table["denominator"],
        direction=direction,
        window_days=int(window["value"]),
        minimum_denominator=minimum["value"],
        green=green,
        red=red,
        parameters=parameters,
        small_home_window_days=int(small_home["value"]) if small_home else None,
        small_home_beds_below=small_home["beds_below"] if small_home else None,
    )


def _urinalysis_pathway(table: object) -> UrinalysisPathway:
    if not isinstance(table, dict):
        raise ValueError("quality rules: the urinalysis_pathway section is missing.")
    enabled = _sourced("urinalysis_pathway.enabled", table.get("enabled"))
    if not isinstance(enabled.get("value"), bool):
        raise ValueError("quality rules: urinalysis_pathway.enabled must be true or false.")
    risks = _sourced("urinalysis_pathway.recommend_at_risks", table.get("recommend_at_risks"))["value"]
    if not isinstance(risks, list) or not risks or any(r not in ESCALATION_RISKS for r in risks):
        raise ValueError("quality rules: urinalysis_pathway.recommend_at_risks must list escalation risks "
                         f"({', '.join(ESCALATION_RISKS)}).")
    return UrinalysisPathway(enabled=enabled["value"], recommend_at_risks=tuple(risks), source=enabled["source"])


def load_rules(path: Path | None = None) -> QualityRules:
    """The packaged rules, or another file with the same layout; a broken file is refused with a sentence."""
    text = path.read_text() if path else resources.files("indicators").joinpath("config/quality.toml").read_text()
    config = tomllib.loads(text)
    if not isinstance(config.get("rules_version"), str):
        raise ValueError("quality rules: rules_version is missing.")
    tables = config.get("indicators", {})
    unknown = sorted(set(tables) - set(ALL_INDICATOR_IDS))
    if unknown:
        raise ValueError(f"quality rules: unknown indicator {', '.join(unknown)}.")
    indicators = {indicator_id: _indicator(indicator_id, tables.get(indicator_id))
                  for indicator_id in ALL_INDICATOR_IDS}
    targets = tables["hydration_days_met"].get("default_target_ml", {})
    if set(targets) != {"female", "male"}:
        raise ValueError("quality rules: hydration_days_met.default_target_ml needs female and male.")
    default_target_ml = {sex: int(_setting(f"hydration_days_met.default_target_ml.{sex}", entry)["value"])
                         for sex, entry in targets.items()}
    return QualityRules(version=config["rules_version"], indicators=indicators, default_target_ml=default_target_ml,
                        urinalysis_pathway=_urinalysis_pathway(config.get("urinalysis_pathway")))


@cache
def packaged_rules() -> QualityRules:
    """The packaged rules, read once."""
    return load_rules()


@dataclass(frozen=True)
class IndicatorValue:
    indicator_id: str
    location_id: str
    window_start: datetime
    window_end: datetime
    numerator: float
    denominator: float
    value: float | None
    status: Rag
    rules_version: str
    details: dict = field(default_factory=dict)


def rag(value: float | None, denominator: float, indicator: IndicatorRules, *, red_events: int = 0) -> Rag:
    """The RAG status: insufficient data below the minimum denominator (§2.1), red on any red event."""
    if value is None or denominator < indicator.minimum_denominator:
        return Rag.INSUFFICIENT_DATA
    if red_events or indicator.red.met_by(value):
        return Rag.RED
    return Rag.GREEN if indicator.green.met_by(value) else Rag.AMBER


def _result(indicator_id: str, location_id: str, window_start: datetime, window_end: datetime,
            numerator: float, denominator: float, scale: float, rules: QualityRules, details: dict,
            red_events: int = 0) -> IndicatorValue:
    value = numerator / denominator * scale if denominator else None
    return IndicatorValue(
        indicator_id=indicator_id, location_id=location_id, window_start=window_start, window_end=window_end,
        numerator=numerator, denominator=denominator, value=value,
        status=rag(value, denominator, rules[indicator_id], red_events=red_events),
        rules_version=rules.version, details=details,
    )


# --- building blocks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stay:
    """A resident in a bed from `start` until `end` (None: still there); a hospital stay ends it (§2.1)."""

    resident_id: str
    start: datetime
    end: datetime | None


def stays_from_statuses(resident_id: str, changes: Iterable[tuple[datetime, str]]) -> list[Stay]:
    """Stays from a resident's status changes (admitted / in_hospital / discharged), in any order."""
    stays: list[Stay] = []
    start: datetime | None = None
    for at, status in sorted(changes):
        if status == "admitted" and start is None:
            start = at
        elif status != "admitted" and start is not None:
            stays.append(Stay(resident_id, start, at))
            start = None
    if start is not None:
        stays.append(Stay(resident_id, start, None))
    return stays


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=CARE_TZ)


def census_midnights(window_start: datetime, window_end: datetime) -> list[datetime]:
    """Local midnights t with window_start <= t < window_end (23- and 25-hour days included)."""
    day = window_start.astimezone(CARE_TZ).date()
    midnights = []
    while (t := local_midnight(day)) < window_end:
        if t >= window_start:
            midnights.append(t)
        day += timedelta(days=1)
    return midnights


def occupied_bed_days(stays: Iterable[Stay], window_start: datetime, window_end: datetime) -> int:
    """Occupied bed days: residents in a bed at each midnight census in the window (cqc_domain.md §2.1).

    A stay covers a census when start <= midnight < end: a resident admitted and discharged on the same
    day is never counted; one admitted at 23:00 and discharged the next morning is counted once.
    """
    midnights = census_midnights(window_start, window_end)
    return sum(1 for stay in stays for t in midnights if stay.start <= t and (stay.end is None or t < stay.end))


def percentile_nearest_rank(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (see module docstring); values need not be sorted."""
    if not values:
        raise ValueError("A percentile of no values is undefined.")
    if not 0 < pct <= 100:
        raise ValueError("A nearest-rank percentile must be above 0 and at most 100.")
    return sorted(values)[math.ceil(pct / 100 * len(values)) - 1]


def daily_fluid_target_ml(care_plan_target_ml: int | None, sex: str | None, rules: QualityRules) -> int | None:
    """The care-plan target, else the ESPEN default for the resident's sex [H1–H3]; None when neither is known."""
    if care_plan_target_ml is not None:
        return care_plan_target_ml
    return rules.default_target_ml.get(sex) if sex else None


@dataclass(frozen=True)
class ResidentDay:
    """One resident's drinks on one local day spent wholly in a bed (cqc_domain.md §2.2 rows 4–5)."""

    resident_id: str
    day: date
    consumed_ml: float
    offered_ml: float
    target_ml: int


def resident_days_meeting_target(days: Iterable[ResidentDay]) -> tuple[int, int]:
    """(resident-days with consumed >= target, resident-days) — §2.2 row 4."""
    days = list(days)
    return sum(1 for d in days if d.consumed_ml >= d.target_ml), len(days)


class VisitOutcome(StrEnum):
    DELIVERED = "delivered"
    MISSED = "missed"
    CANCELLED_BY_CLIENT = "cancelled_by_client"
    PENDING = "pending"


def visit_deadline(planned_start: datetime, next_planned_start: datetime | None, end_of_day_s: float) -> datetime:
    """When an undelivered visit becomes missed: 23:00 local that day, or the next planned visit if sooner
    (cqc_domain.md §2.2 row 9, [V3]). A visit planned after 23:00 has until the end of its day."""
    day = planned_start.astimezone(CARE_TZ).date()
    deadline = local_midnight(day) + timedelta(seconds=end_of_day_s)
    if deadline <= planned_start:
        deadline = local_midnight(day + timedelta(days=1))
    return min(deadline, next_planned_start) if next_planned_start else deadline


def classify_visit(*, deadline: datetime, checked_in_at: datetime | None, cancelled: bool,
                   cancelled_by_client_in_advance: bool, as_of: datetime) -> VisitOutcome:
    """NICE QS123 missed visit (cqc_domain.md §2.2 row 9, [V1][V3]): not checked in before its deadline and
    not cancelled by the client in advance; a provider cancellation is a missed visit."""
    if cancelled and cancelled_by_client_in_advance:
        return VisitOutcome.CANCELLED_BY_CLIENT
    if checked_in_at is not None and checked_in_at < deadline:
        return VisitOutcome.DELIVERED
    if checked_in_at is not None or cancelled or as_of >= deadline:
        return VisitOutcome.MISSED
    return VisitOutcome.PENDING


@dataclass(frozen=True)
class ScoredSet:
    """A NEWS2 result: when, whether complete, its total and the monitoring interval it sets [N1]."""

    at: datetime
    complete: bool
    total: int | None
    interval_min: int | None


@dataclass(frozen=True)
class DueObservation:
    due_at: datetime
    taken_at: datetime | None


def due_observations(scored: Sequence[ScoredSet], episode_close_after_s: float) -> list[DueObservation]:
    """Repeat observations due during an active monitoring episode (cqc_domain.md §2.2 row 8).

    A complete set with NEWS2 >= 1 opens or continues the episode; a 0 continues it until
    `episode_close_after_s` after the last score >= 1. Each complete set in an episode makes the next one
    due `interval_min` later; a set with no interval (NEWS2 >= 7, continuous monitoring) is treated as
    escalated and makes none due. `taken_at` is the next complete set, whenever it came.
    """
    # Sets at the same instant are ordered by their content, so the result never depends on input order.
    complete = sorted((s for s in scored if s.complete),
                      key=lambda s: (s.at, s.total, -1 if s.interval_min is None else s.interval_min))
    due: list[DueObservation] = []
    last_raised_at: datetime | None = None
    for i, s in enumerate(complete):
        if s.total:
            last_raised_at = s.at
        in_episode = last_raised_at is not None and (s.at - last_raised_at).total_seconds() < episode_close_after_s
        if in_episode and s.interval_min is not None:
            taken_at = complete[i + 1].at if i + 1 < len(complete) else None
            due.append(DueObservation(s.at + timedelta(minutes=s.interval_min), taken_at))
    return due


@dataclass(frozen=True)
class EscalationTrigger:
    """One escalation band (raised or upgraded) with its deadline and acknowledgement (§2.2 row 7)."""

    risk: str
    raised_at: datetime
    deadline_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class PlannedVisit:
    """A roster visit as judged at window end; `lateness_s` is check-in minus planned start."""

    visit_id: str
    planned_start: datetime
    outcome: VisitOutcome
    time_critical: bool
    lateness_s: float | None


@dataclass(frozen=True)
class Dose:
    """A scheduled medication task: `outcome` is its eMAR code, or None when nothing was recorded."""

    time_critical: bool
    outcome: str | None
    lateness_s: float | None


def scheduled_doses(medication_tasks: Sequence[tuple[str, bool]], *, outcome: VisitOutcome,
                    recorded: dict[str, str] | None, deadline: datetime, as_of: datetime,
                    lateness_s: float | None) -> list[Dose]:
    """The doses a judged visit scheduled (cqc_domain.md §2.2 row 11, [M3]): one per medication task
    (task id, time critical), with the eMAR outcome recorded at check-out (`recorded`: None when the visit
    has no check-out yet). A missed visit, or a delivered one with no check-out by its deadline, leaves its
    doses with no administration record. Pending visits, client cancellations and visits still inside their
    deadline without a check-out have no doses yet."""
    if outcome in (VisitOutcome.CANCELLED_BY_CLIENT, VisitOutcome.PENDING):
        return []
    if outcome is VisitOutcome.DELIVERED and recorded is None and as_of < deadline:
        return []
    outcomes = recorded or {}
    return [Dose(time_critical, outcomes.get(task_id) if outcome is VisitOutcome.DELIVERED else None, lateness_s)
            for task_id, time_critical in medication_tasks]


@dataclass(frozen=True)
class CallResponse:
    priority: str
    response_s: float


# --- indicators ---------------------------------------------------------------------------------------------

def falls_rate(location_id: str, window_start: datetime, window_end: datetime, *, occupied_bed_days: int,
               confirmed_falls: int, rules: QualityRules) -> IndicatorValue:
    """Staff-confirmed falls per 1,000 OBD (cqc_domain.md §2.2 row 1; §2.1 confirmation rule [F7])."""
    return _result("falls_rate", location_id, window_start, window_end, confirmed_falls, occupied_bed_days,
                   1000, rules, {})


def falls_with_harm_rate(location_id: str, window_start: datetime, window_end: datetime, *, occupied_bed_days: int,
                         harms: Sequence[str | None], rules: QualityRules) -> IndicatorValue:
    """Confirmed falls with LFPSE harm low or worse per 1,000 OBD; severe or fatal is a red event (row 2, [F5]).

    `harms` has one entry per confirmed fall (None: not yet graded, counted as no harm)."""
    with_harm = sum(1 for h in harms if h in HARM_LEVELS)
    severe_or_fatal = sum(1 for h in harms if h in RED_EVENT_HARM_LEVELS)
    return _result("falls_with_harm_rate", location_id, window_start, window_end, with_harm, occupied_bed_days,
                   1000, rules, {"severe_or_fatal_falls": severe_or_fatal}, red_events=severe_or_fatal)


def hydration_days_met(location_id: str, window_start: datetime, window_end: datetime, *,
                       resident_days: Sequence[ResidentDay], rules: QualityRules) -> IndicatorValue:
    """% of resident-days with drinks consumed >= target (cqc_domain.md §2.2 row 4, targets [H1–H3])."""
    met, total = resident_days_meeting_target(resident_days)
    return _result("hydration_days_met", location_id, window_start, window_end, met, total, 100, rules, {})


def hydration_consumed_vs_offered(location_id: str, window_start: datetime, window_end: datetime, *,
                                  resident_days: Sequence[ResidentDay], rules: QualityRules) -> IndicatorValue:
    """Consumed ÷ offered, mL, as % (row 5); also counts resident-days offered less than the target, a
    provider failure rather than a resident's [H2]."""
    # Exactly rounded sums: the total must not depend on the order the days are listed in.
    consumed_ml = math.fsum(d.consumed_ml for d in resident_days)
    offered_ml = math.fsum(d.offered_ml for d in resident_days)
    offered_below_target = sum(1 for d in resident_days if d.offered_ml < d.target_ml)
    return _result("hydration_consumed_vs_offered", location_id, window_start, window_end, consumed_ml, offered_ml,
                   100, rules, {"resident_days_offered_below_target": offered_below_target})


def _response_summary(response_s: Sequence[float], target_s: float, exception_s: float) -> dict:
    return {
        "calls": len(response_s),
        "within_target": sum(1 for r in response_s if r <= target_s),
        "median_s": percentile_nearest_rank(response_s, 50) if response_s else None,
        "p90_s": percentile_nearest_rank(response_s, 90) if response_s else None,
        "over_exception": sum(1 for r in response_s if r > exception_s),
    }


def call_bell_response(location_id: str, window_start: datetime, window_end: datetime, *,
                       calls: Sequence[CallResponse], unanswered_calls: int,
                       rules: QualityRules) -> IndicatorValue:
    """% of answered calls within 5 min, with median and p90 overall and by priority (cqc_domain.md §2.2 row 6).

    Green also needs median <= 3 min and p90 <= 5 min; a p90 over 10 min is red. Test calls are excluded
    by the caller. Unanswered calls have no response time and are reported, not counted (open question).
    """
    params = rules["call_bell_response"].parameters
    def summarise(response_s: list[float]) -> dict:
        return _response_summary(response_s, params["target_s"], params["exception_s"])

    overall = summarise([c.response_s for c in calls])
    by_priority = {p: summarise([c.response_s for c in calls if c.priority == p])
                   for p in sorted({c.priority for c in calls})}
    result = _result("call_bell_response", location_id, window_start, window_end, overall["within_target"],
                     overall["calls"], 100, rules,
                     {"median_s": overall["median_s"], "p90_s": overall["p90_s"],
                      "calls_over_exception": overall["over_exception"], "unanswered_calls": unanswered_calls,
                      "by_priority": by_priority})
    if result.status is Rag.INSUFFICIENT_DATA:
        return result
    if overall["p90_s"] > params["red_p90_s_above"]:
        status = Rag.RED
    elif result.status is Rag.GREEN and (overall["median_s"] > params["green_median_s_at_most"]
                                         or overall["p90_s"] > params["green_p90_s_at_most"]):
        status = Rag.AMBER
    else:
        status = result.status
    return replace(result, status=status)


def escalation_timeliness(location_id: str, window_start: datetime, window_end: datetime, *,
                          triggers: Sequence[EscalationTrigger], rules: QualityRules) -> IndicatorValue:
    """% of escalations raised in the window acknowledged by their deadline (cqc_domain.md §2.2 row 7).

    A trigger still inside its deadline and unacknowledged at window end is pending, not counted; a late
    high-risk trigger is a red event."""
    judged = [t for t in triggers if window_start <= t.raised_at < window_end
              and (t.acknowledged_at is not None or t.deadline_at <= window_end)]
    late = [t for t in judged if t.acknowledged_at is None or t.acknowledged_at > t.deadline_at]
    late_high = sum(1 for t in late if t.risk == "high")
    pending = sum(1 for t in triggers if window_start <= t.raised_at < window_end) - len(judged)
    return _result("escalation_timeliness", location_id, window_start, window_end, len(judged) - len(late),
                   len(judged), 100,
                   rules, {"pending": pending, "late_high": late_high}, red_events=late_high)


def observation_compliance(location_id: str, window_start: datetime, window_end: datetime, *,
                           due: Sequence[DueObservation], complete_sets: int, all_sets: int,
                           rules: QualityRules) -> IndicatorValue:
    """% of repeat observations due in the window taken by their due time (cqc_domain.md §2.2 row 8, [N1]);
    also reports the % of sets in the window that were complete."""
    counted = [d for d in due if window_start <= d.due_at < window_end]
    on_time = sum(1 for d in counted if d.taken_at is not None and d.taken_at <= d.due_at)
    complete_pct = complete_sets / all_sets * 100 if all_sets else None
    return _result("observation_compliance", location_id, window_start, window_end, on_time, len(counted), 100,
                   rules, {"complete_sets_pct": complete_pct})


def missed_visits(location_id: str, window_start: datetime, window_end: datetime, *,
                  visits: Sequence[PlannedVisit], rules: QualityRules) -> IndicatorValue:
    """% of planned visits missed (NICE QS123 [V1], cqc_domain.md §2.2 row 9); client cancellations and
    visits still pending leave the denominator; a missed time-critical visit is a red event."""
    judged = [v for v in visits if v.outcome in (VisitOutcome.DELIVERED, VisitOutcome.MISSED)]
    missed = [v for v in judged if v.outcome is VisitOutcome.MISSED]
    missed_time_critical = sum(1 for v in missed if v.time_critical)
    return _result("missed_visits", location_id, window_start, window_end, len(missed), len(judged), 100, rules,
                   {"cancelled_by_client": sum(1 for v in visits if v.outcome is VisitOutcome.CANCELLED_BY_CLIENT),
                    "pending": sum(1 for v in visits if v.outcome is VisitOutcome.PENDING),
                    "missed_time_critical": missed_time_critical},
                   red_events=missed_time_critical)


def late_visits(location_id: str, window_start: datetime, window_end: datetime, *,
                visits: Sequence[PlannedVisit], rules: QualityRules) -> IndicatorValue:
    """% of delivered visits checked in > 30 min after the planned start (cqc_domain.md §2.2 row 10, [V5]);
    the > 15 min "delayed" band [V4] and time-critical visits outside ±30 min [V3] are reported."""
    params = rules["late_visits"].parameters
    delivered = [v for v in visits if v.outcome is VisitOutcome.DELIVERED]
    late = sum(1 for v in delivered if v.lateness_s > params["late_s"])
    time_critical = [v for v in delivered if v.time_critical]
    return _result("late_visits", location_id, window_start, window_end, late, len(delivered), 100, rules,
                   {"over_15_min": sum(1 for v in delivered if v.lateness_s > params["delayed_band_s"]),
                    "time_critical_delivered": len(time_critical),
                    "time_critical_outside_30_min": sum(1 for v in time_critical
                                                         if abs(v.lateness_s) > params["late_s"])})


def missed_medication_doses(location_id: str, window_start: datetime, window_end: datetime, *,
                            doses: Sequence[Dose], rules: QualityRules) -> IndicatorValue:
    """% of scheduled doses with no administration record and no valid reason (cqc_domain.md §2.2 row 11,
    [M3]); a missed or > 1 h late time-critical dose is a red event [M1]."""
    late_s = rules["missed_medication_doses"].parameters["time_critical_late_s"]
    def is_missed(dose: Dose) -> bool:
        return dose.outcome != "done" and dose.outcome not in VALID_DOSE_REASONS

    missed = sum(1 for d in doses if is_missed(d))
    red_events = sum(1 for d in doses if d.time_critical and (
        is_missed(d) or (d.outcome == "done" and d.lateness_s is not None and d.lateness_s > late_s)))
    return _result("missed_medication_doses", location_id, window_start, window_end, missed, len(doses), 100,
                   rules, {"time_critical_red_events": red_events}, red_events=red_events)


# --- issue 11: continuity of carers, travel between visits, urinalysis timeliness, live capacity -------------

@dataclass(frozen=True)
class CarerContact:
    """One carer delivering care to one person: a homecare check-in, or a drink a care-home carer logged.
    Carer and person ids are pseudonymous (cqc_domain.md §5)."""

    person_id: str
    carer_id: str
    at: datetime


def carer_continuity(location_id: str, window_start: datetime, window_end: datetime, *,
                     contacts: Sequence[CarerContact], setting: str, rules: QualityRules) -> IndicatorValue:
    """% of people who saw more than the setting's limit of distinct carers in the window (continuity of
    carer, cqc_domain.md §1.3 Responsive), with the median distinct carers per person.

    A person counts when they had at least `minimum_contacts_per_person` contacts in the window: a person
    seen three times cannot show poor continuity. `setting` (homecare or care_home) picks the limit, since a
    care home's shift pattern puts more carers round a resident than a homecare run does.
    """
    if setting not in CONTINUITY_SETTINGS:
        raise ValueError(f"carer continuity: setting must be one of {', '.join(CONTINUITY_SETTINGS)}, "
                         f"not {setting!r}.")
    params = rules["carer_continuity"].parameters
    limit = params[f"{setting}_more_than_carers"]
    seen: dict[str, list[str]] = {}
    for c in contacts:
        if window_start <= c.at < window_end:
            seen.setdefault(c.person_id, []).append(c.carer_id)
    carers = [len(set(ids)) for ids in seen.values() if len(ids) >= params["minimum_contacts_per_person"]]
    return _result("carer_continuity", location_id, window_start, window_end, sum(1 for n in carers if n > limit),
                   len(carers), 100, rules,
                   {"setting": setting, "more_than_carers": limit,
                    "median_carers": percentile_nearest_rank(carers, 50) if carers else None,
                    "people_below_minimum_contacts": len(seen) - len(carers)})


@dataclass(frozen=True)
class CarerVisit:
    """A delivered visit as electronic call monitoring saw it: the carer's check-in and check-out."""

    carer_id: str
    visit_id: str
    checked_in_at: datetime
    checked_out_at: datetime | None


class GapKind(StrEnum):
    TRAVEL = "travel"
    BREAK = "break"
    OVERLAP = "overlap"


@dataclass(frozen=True)
class VisitGap:
    """The time between a carer's check-out and their next check-in the same local day, in seconds."""

    carer_id: str
    from_visit_id: str
    to_visit_id: str
    arrived_at: datetime
    gap_s: float
    kind: GapKind


def visit_gaps(visits: Sequence[CarerVisit], break_over_s: float) -> list[VisitGap]:
    """Each carer's gaps between consecutive visits (by check-in), in any input order.

    ECM records when a carer leaves and arrives, not how they spent the time between, so a gap is travel
    plus any unpaid wait. Gaps are measured in elapsed time (a night the clocks change counts its real
    hour) between visits on the same local day (``CARE_TZ``): the first visit of a day has none. A gap
    longer than `break_over_s` is a break (a lunch break, time off between runs), not travel; a check-in
    before the previous check-out is an overlap (a late check-out, or two visits at once) and has no travel.
    A visit with no check-out leaves the next gap unknown.
    """
    by_carer: dict[str, list[CarerVisit]] = {}
    for v in visits:
        by_carer.setdefault(v.carer_id, []).append(v)
    gaps = []
    for carer_id in sorted(by_carer):
        ordered = sorted(by_carer[carer_id], key=lambda v: (v.checked_in_at, v.visit_id))
        for left, arrived in itertools.pairwise(ordered):
            if left.checked_out_at is None or (left.checked_out_at.astimezone(CARE_TZ).date()
                                               != arrived.checked_in_at.astimezone(CARE_TZ).date()):
                continue
            gap_s = (arrived.checked_in_at - left.checked_out_at).total_seconds()
            kind = GapKind.OVERLAP if gap_s < 0 else GapKind.BREAK if gap_s > break_over_s else GapKind.TRAVEL
            gaps.append(VisitGap(carer_id, left.visit_id, arrived.visit_id, arrived.checked_in_at, gap_s, kind))
    return gaps


def travel_time(location_id: str, window_start: datetime, window_end: datetime, *, gaps: Sequence[VisitGap],
                rules: QualityRules) -> IndicatorValue:
    """% of travel gaps between homecare visits longer than `long_travel_s`, with the median travel minutes
    before a visit (gaps ending in the window; breaks and overlaps are reported, not counted)."""
    long_travel_s = rules["travel_time"].parameters["long_travel_s"]
    in_window = [g for g in gaps if window_start <= g.arrived_at < window_end]
    travel_s = [g.gap_s for g in in_window if g.kind is GapKind.TRAVEL]
    return _result("travel_time", location_id, window_start, window_end,
                   sum(1 for s in travel_s if s > long_travel_s), len(travel_s), 100, rules,
                   {"median_travel_min": percentile_nearest_rank(travel_s, 50) / 60 if travel_s else None,
                    "breaks": sum(1 for g in in_window if g.kind is GapKind.BREAK),
                    "overlaps": sum(1 for g in in_window if g.kind is GapKind.OVERLAP)})


@dataclass(frozen=True)
class AmberEpisode:
    """A NEWS2 escalation episode that reached a risk the urinalysis pathway acts on.

    `recommended_at` is when it first did (when the stream would publish "urinalysis recommended");
    `upgraded_to_high_at` the first high band after that; `urinalysis_at` the first of the resident's
    urinalysis results (``events.UrinalysisResult``; the dipstick grades do not enter the indicator) at or
    after the recommendation that names this episode or none: a result naming another episode answers
    that one only."""

    episode_id: str
    resident_id: str
    recommended_at: datetime
    upgraded_to_high_at: datetime | None
    urinalysis_at: datetime | None


def first_at_or_after(at: datetime, times: Iterable[datetime]) -> datetime | None:
    return min((t for t in times if t >= at), default=None)


def urinalysis_timeliness(location_id: str, window_start: datetime, window_end: datetime, *,
                          episodes: Sequence[AmberEpisode], rules: QualityRules) -> IndicatorValue:
    """% of amber NEWS2 episodes recommended in the window with a urinalysis within `target_s` (issue 11).

    Clinical caveat: NICE and UKHSA advise against using a dipstick to diagnose UTI in people over 65
    (cqc_domain.md §2.2 row 13, [U3]). This records the practice of the Care City test bed's pathway; it is
    not a UTI measure and needs a clinical safety officer's sign-off before use.

    An episode upgraded to high before its target and before any urinalysis leaves the denominator (the
    response is then an emergency call, not a urine test); one whose target has not passed at window end
    without a urinalysis is pending. A urinalysis at or after window end is not yet known."""
    target_s = rules["urinalysis_timeliness"].parameters["target_s"]
    on_time = late = pending = upgraded = 0
    for e in episodes:
        if not window_start <= e.recommended_at < window_end:
            continue
        deadline = e.recommended_at + timedelta(seconds=target_s)
        tested_at, upgraded_at = (t if t is not None and t < window_end else None
                                  for t in (e.urinalysis_at, e.upgraded_to_high_at))
        if tested_at is not None and tested_at <= deadline and (upgraded_at is None or tested_at <= upgraded_at):
            on_time += 1
        elif upgraded_at is not None and upgraded_at <= deadline:
            upgraded += 1
        elif deadline > window_end and tested_at is None:
            pending += 1
        else:
            late += 1
    return _result("urinalysis_timeliness", location_id, window_start, window_end, on_time, on_time + late, 100,
                   rules, {"pending": pending, "upgraded_to_high": upgraded})


def latest_statuses(changes: Iterable[tuple[str, datetime, str]], at: datetime) -> dict[str, str]:
    """Each person's last status (admitted / in_hospital / discharged) recorded before `at`."""
    latest: dict[str, str] = {}
    for person_id, _, status in sorted(c for c in changes if c[1] < at):
        latest[person_id] = status
    return latest


@dataclass(frozen=True)
class CareHomeCapacity:
    """A care home's beds at an instant, named after the DHSC Capacity Tracker bed fields (cqc_domain.md
    §1.5 and §4.4, [C24]: maximum, occupied, reserved). "Accepting admissions" is the home's decision and
    is not derived here."""

    location_id: str
    at: datetime
    max_beds: int
    occupied_beds: int
    reserved_beds: int
    vacant_beds: int
    over_max_beds: int


def care_home_capacity(location_id: str, at: datetime, *, max_beds: int,
                       statuses: dict[str, str]) -> CareHomeCapacity:
    """Beds at `at` from residents' latest statuses (``latest_statuses``) and the registered beds.

    Occupied: residents in a bed (admitted), as the midnight census counts them (§2.1). Reserved: beds held
    for residents in hospital, who are not occupying them (§2.1); that Capacity Tracker counts a held bed as
    "reserved" is our reading (P). Vacant = max − occupied − reserved, never below 0; any excess is
    `over_max_beds`, a sign of a missing discharge record or a wrong bed count."""
    occupied = sum(1 for s in statuses.values() if s == "admitted")
    reserved = sum(1 for s in statuses.values() if s == "in_hospital")
    return CareHomeCapacity(location_id, at, max_beds, occupied, reserved, max(0, max_beds - occupied - reserved),
                            max(0, occupied + reserved - max_beds))


@dataclass(frozen=True)
class RosteredVisit:
    """A planned homecare visit (the latest roster version) and whether the client cancelled it in advance."""

    person_id: str
    planned_start: datetime
    planned_end: datetime
    cancelled_by_client: bool


@dataclass(frozen=True)
class HomecareCapacity:
    """A homecare agency's load at an instant, over the 7 days before it. The Capacity Tracker fields of
    cqc_domain.md [C24] are care-home beds; these names are ours (P)."""

    location_id: str
    at: datetime
    people_receiving_care: int
    planned_hours_7d: float
    commissioned_hours_7d: float | None
    commissioned_hours_not_planned: float | None


def homecare_capacity(location_id: str, at: datetime, *, visits: Sequence[RosteredVisit],
                      commissioned_hours_per_week: float | None) -> HomecareCapacity:
    """People with a planned visit in the 7 days before `at`, the hours planned for them and, when the
    commissioned hours are given, how many of those the roster did not plan (negative: planned beyond them).

    Visits the client cancelled in advance are not planned care; a provider cancellation still is (the
    agency planned the hours and did not deliver them: a missed visit, §2.2 row 9)."""
    since = at - timedelta(days=7)
    planned = [v for v in visits if since <= v.planned_start < at and not v.cancelled_by_client]
    planned_hours = math.fsum((v.planned_end - v.planned_start).total_seconds() for v in planned) / 3600
    return HomecareCapacity(
        location_id, at, len({v.person_id for v in planned}), planned_hours, commissioned_hours_per_week,
        None if commissioned_hours_per_week is None else commissioned_hours_per_week - planned_hours)
