"""The batch recomputation oracle: every indicator of cqc_domain.md §2.2 recomputed from an event log.

A plain function over events, independent of the streaming code: it shares only the pure definitions in
``indicators.quality`` and the event contracts in ``carepulse.events``. Events are deduplicated on
``event_id`` (at-least-once delivery) and ordered by event time, so duplicates and out-of-order arrival
change nothing. Events that occurred after ``as_of`` are ignored: the result is the log as of that instant.
Each indicator's window is ``[as_of - window_days, as_of)``.

By default it computes the ten core indicators (``quality.INDICATOR_IDS``); issue 11's
(``quality.EXTENSION_INDICATOR_IDS``) come when asked for through `indicator_ids`, whatever the rules say
about streaming them. A location's ``LocationProfile`` (the newest before ``as_of``) gives its registered
beds (the small-home falls window, cqc_domain.md §2.1) and its setting (continuity of carers); live
capacity is not an indicator and has its own function, ``capacity``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta

from carepulse import events as ev
from indicators import quality as q


def _dedupe(log: Iterable[ev.Event], as_of: datetime) -> list[ev.Event]:
    unique: dict[str, ev.Event] = {}
    for event in log:
        if event.location_id is not None and event.occurred_at < as_of:
            unique.setdefault(str(event.event_id), event)
    return sorted(unique.values(), key=lambda e: (e.occurred_at, str(e.event_id)))


def _window(indicator: q.IndicatorRules, as_of: datetime, beds: int | None = None) -> tuple[datetime, datetime]:
    return as_of - timedelta(days=indicator.window_days_for(beds)), as_of


def _of(events: list[ev.Event], model: type) -> list:
    return [e for e in events if isinstance(e, model)]


def _confirmed_falls(events: list[ev.Event]) -> list[tuple[datetime, str | None]]:
    """(time, worst harm) per confirmed fall; a device alert and its confirmation share `alert_id` (§2.1)."""
    order = (None, "none", *q.HARM_LEVELS)
    falls: dict[tuple[str, str], tuple[datetime, str | None]] = {}
    for fall in _of(events, ev.Fall):
        if not fall.confirmed:
            continue
        key = (fall.resident_id, fall.alert_id or str(fall.event_id))
        at, harm = falls.get(key, (fall.occurred_at, None))
        falls[key] = (min(at, fall.occurred_at), max(harm, fall.harm, key=order.index))
    return list(falls.values())


def _resident_days(events: list[ev.Event], stays: list[q.Stay], window_start: datetime, window_end: datetime,
                   rules: q.QualityRules) -> list[q.ResidentDay]:
    """Local days wholly inside the window that a resident spent wholly in a bed with a known target."""
    volumes: dict[tuple[str, date], list[tuple[float, float]]] = defaultdict(list)
    for intake in _of(events, ev.FluidIntake):
        volumes[(intake.resident_id, intake.occurred_at.astimezone(q.CARE_TZ).date())].append(
            (intake.consumed_ml, intake.offered_ml))
    # Exactly rounded sums, so a day's total does not depend on the order its drinks are added in.
    drinks = {key: (math.fsum(c for c, _ in pairs), math.fsum(o for _, o in pairs)) for key, pairs in volumes.items()}
    records = _of(events, ev.ResidentRecord)
    midnights = q.census_midnights(window_start, window_end)
    days = []
    for day_start, day_end in zip(midnights, midnights[1:]):
        day = day_start.astimezone(q.CARE_TZ).date()
        for stay in stays:
            if not (stay.start <= day_start and (stay.end is None or stay.end >= day_end)):
                continue
            known = [r for r in records if r.resident_id == stay.resident_id and r.occurred_at < day_end]
            target_ml = q.daily_fluid_target_ml(known[-1].fluid_target_ml, known[-1].sex, rules)
            if target_ml is not None:
                consumed_ml, offered_ml = drinks.get((stay.resident_id, day), (0.0, 0.0))
                days.append(q.ResidentDay(stay.resident_id, day, consumed_ml, offered_ml, target_ml))
    return days


def _call_responses(events: list[ev.Event], window_start: datetime, window_end: datetime
                    ) -> tuple[list[q.CallResponse], int]:
    raised: dict[str, ev.CallBell] = {}
    answered: dict[str, datetime] = {}
    tests: set[str] = set()
    for bell in _of(events, ev.CallBell):
        if bell.call_type == "test":
            tests.add(bell.call_id)
        elif bell.phase == "raised":
            raised.setdefault(bell.call_id, bell)
        else:
            answered.setdefault(bell.call_id, bell.occurred_at)
    calls, unanswered = [], 0
    for call_id, bell in raised.items():
        if call_id in tests or not window_start <= bell.occurred_at < window_end:
            continue
        if call_id in answered:
            calls.append(q.CallResponse(bell.priority, (answered[call_id] - bell.occurred_at).total_seconds()))
        else:
            unanswered += 1
    return calls, unanswered


def _triggers(events: list[ev.Event]) -> list[q.EscalationTrigger]:
    """One trigger per raised or upgraded band; an acknowledgement carries the band's `raised_at`."""
    bands: dict[tuple[str, datetime], ev.Escalation] = {}
    acknowledged: dict[tuple[str, datetime], datetime] = {}
    for e in _of(events, ev.Escalation):
        key = (str(e.episode_id), e.raised_at or e.occurred_at)
        if e.status in ("raised", "upgraded") and e.deadline_at is not None:
            bands.setdefault(key, e)
        elif e.status == "acknowledged":
            acknowledged.setdefault(key, e.acknowledged_at or e.occurred_at)
    return [q.EscalationTrigger(e.risk, raised_at, e.deadline_at, acknowledged.get((episode_id, raised_at)))
            for (episode_id, raised_at), e in bands.items()]


def _visits(events: list[ev.Event], as_of: datetime, rules: q.QualityRules
            ) -> list[tuple[q.PlannedVisit, list[q.Dose]]]:
    """Each planned visit (latest roster version) judged as of `as_of`, with its scheduled doses."""
    planned = {v.visit_id: v for v in _of(events, ev.VisitPlanned)}
    check_in = {}
    for e in _of(events, ev.VisitCheckIn):
        check_in.setdefault(e.visit_id, e.occurred_at)
    check_out = {}
    for e in _of(events, ev.VisitCheckOut):
        check_out.setdefault(e.visit_id, e)
    cancelled = {e.visit_id: e for e in _of(events, ev.VisitCancelled)}
    starts_by_resident = defaultdict(list)
    for v in planned.values():
        starts_by_resident[v.resident_id].append(v.planned_start)
    end_of_day_s = rules["missed_visits"].parameters["end_of_day_s"]
    result = []
    for visit_id, v in planned.items():
        later = [s for s in starts_by_resident[v.resident_id] if s > v.planned_start]
        deadline = q.visit_deadline(v.planned_start, min(later, default=None), end_of_day_s)
        checked_in_at = check_in.get(visit_id)
        cancel = cancelled.get(visit_id)
        outcome = q.classify_visit(deadline=deadline, checked_in_at=checked_in_at, cancelled=cancel is not None,
                                   cancelled_by_client_in_advance=bool(cancel and cancel.by_client_in_advance),
                                   as_of=as_of)
        lateness_s = (checked_in_at - v.planned_start).total_seconds() if checked_in_at else None
        visit = q.PlannedVisit(visit_id, v.planned_start, outcome, v.time_critical, lateness_s)
        out = check_out.get(visit_id)
        doses = q.scheduled_doses([(t.task_id, t.time_critical) for t in v.tasks if t.kind == "medication"],
                                  outcome=outcome, deadline=deadline, as_of=as_of, lateness_s=lateness_s,
                                  recorded={t.task_id: t.outcome for t in out.task_outcomes} if out else None)
        result.append((visit, doses))
    return result


def _scored_sets(events: list[ev.Event]) -> dict[str, list[q.ScoredSet]]:
    """NEWS2 results per resident, one per observation set (a re-emitted score is the same set)."""
    by_set: dict[str, ev.News2Scored] = {}
    for s in _of(events, ev.News2Scored):
        by_set.setdefault(str(s.observation_set_id), s)
    per_resident: dict[str, list[q.ScoredSet]] = defaultdict(list)
    for s in by_set.values():
        per_resident[s.resident_id].append(q.ScoredSet(s.occurred_at, s.complete, s.total,
                                                       s.monitoring_interval_minutes))
    return per_resident


def _core(location_id: str, events: list[ev.Event], as_of: datetime, beds: int | None,
          rules: q.QualityRules) -> list[q.IndicatorValue]:
    """The indicators the worker streams (``quality.INDICATOR_IDS``), in that order."""
    statuses: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for r in _of(events, ev.ResidentRecord):
        statuses[r.resident_id].append((r.occurred_at, r.status))
    stays = [stay for resident_id, changes in statuses.items() for stay in q.stays_from_statuses(resident_id, changes)]
    falls = _confirmed_falls(events)
    visits = _visits(events, as_of, rules)
    results = []

    start, end = _window(rules["falls_rate"], as_of, beds)
    results.append(q.falls_rate(location_id, start, end, occupied_bed_days=q.occupied_bed_days(stays, start, end),
                                confirmed_falls=sum(1 for at, _ in falls if start <= at < end), rules=rules))
    start, end = _window(rules["falls_with_harm_rate"], as_of)
    results.append(q.falls_with_harm_rate(location_id, start, end,
                                          occupied_bed_days=q.occupied_bed_days(stays, start, end),
                                          harms=[harm for at, harm in falls if start <= at < end], rules=rules))
    for indicator in (q.hydration_days_met, q.hydration_consumed_vs_offered):
        start, end = _window(rules[indicator.__name__], as_of)
        results.append(indicator(location_id, start, end, resident_days=_resident_days(events, stays, start, end, rules),
                                 rules=rules))
    start, end = _window(rules["call_bell_response"], as_of)
    calls, unanswered = _call_responses(events, start, end)
    results.append(q.call_bell_response(location_id, start, end, calls=calls, unanswered_calls=unanswered,
                                        rules=rules))
    start, end = _window(rules["escalation_timeliness"], as_of)
    results.append(q.escalation_timeliness(location_id, start, end, triggers=_triggers(events), rules=rules))
    start, end = _window(rules["observation_compliance"], as_of)
    close_s = rules["observation_compliance"].parameters["episode_close_after_s"]
    scored = _scored_sets(events)
    in_window = [s for sets in scored.values() for s in sets if start <= s.at < end]
    results.append(q.observation_compliance(
        location_id, start, end, due=[d for sets in scored.values() for d in q.due_observations(sets, close_s)],
        complete_sets=sum(1 for s in in_window if s.complete), all_sets=len(in_window), rules=rules))
    for indicator in (q.missed_visits, q.late_visits):
        start, end = _window(rules[indicator.__name__], as_of)
        results.append(indicator(location_id, start, end,
                                 visits=[v for v, _ in visits if start <= v.planned_start < end], rules=rules))
    start, end = _window(rules["missed_medication_doses"], as_of)
    results.append(q.missed_medication_doses(
        location_id, start, end, doses=[d for v, doses in visits if start <= v.planned_start < end for d in doses],
        rules=rules))
    return results


def _profile(events: list[ev.Event]) -> ev.LocationProfile | None:
    """The location's newest profile in the log (events are in time order, ties by event id)."""
    profiles = _of(events, ev.LocationProfile)
    return profiles[-1] if profiles else None


def _carer_contacts(events: list[ev.Event], setting: str | None) -> tuple[str, list[q.CarerContact]]:
    """(setting, contacts): a homecare agency's contacts are its visit check-ins (one per visit), a care
    home's the drinks its carers logged. The setting is the profile's; a location with no profile is taken
    for a homecare agency when it has visit check-ins, else for a care home."""
    check_ins: dict[str, ev.VisitCheckIn] = {}
    for e in _of(events, ev.VisitCheckIn):
        check_ins.setdefault(e.visit_id, e)
    if (setting or ("homecare" if check_ins else "care_home")) == "homecare":
        return "homecare", [q.CarerContact(e.resident_id, e.carer_id, e.occurred_at) for e in check_ins.values()]
    return "care_home", [q.CarerContact(e.resident_id, e.recorded_by, e.occurred_at)
                         for e in _of(events, ev.FluidIntake) if e.method == "carer"]


def _carer_visits(events: list[ev.Event]) -> list[q.CarerVisit]:
    """Each checked-in visit with the checking-in carer and its first check-out, if any."""
    check_ins: dict[str, ev.VisitCheckIn] = {}
    for e in _of(events, ev.VisitCheckIn):
        check_ins.setdefault(e.visit_id, e)
    check_outs: dict[str, datetime] = {}
    for e in _of(events, ev.VisitCheckOut):
        check_outs.setdefault(e.visit_id, e.occurred_at)
    return [q.CarerVisit(e.carer_id, visit_id, e.occurred_at, check_outs.get(visit_id))
            for visit_id, e in check_ins.items()]


def _amber_episodes(events: list[ev.Event], rules: q.QualityRules) -> list[q.AmberEpisode]:
    """Escalation episodes that reached a risk the urinalysis pathway acts on, each matched to the first
    urinalysis result of its resident at or after the recommendation that names that episode or none."""
    amber = set(rules.urinalysis_pathway.recommend_at_risks)
    bands: dict[str, list[ev.Escalation]] = defaultdict(list)
    for e in _of(events, ev.Escalation):
        if e.status in ("raised", "upgraded"):
            bands[str(e.episode_id)].append(e)
    results: dict[str, list[ev.UrinalysisResult]] = defaultdict(list)
    for u in _of(events, ev.UrinalysisResult):
        results[u.resident_id].append(u)
    episodes = []
    for episode_id, episode in bands.items():
        recommended_at = min((e.raised_at or e.occurred_at for e in episode if e.risk in amber), default=None)
        if recommended_at is None:
            continue
        high_at = min((e.raised_at or e.occurred_at for e in episode
                       if e.risk == "high" and (e.raised_at or e.occurred_at) >= recommended_at), default=None)
        resident_id = episode[0].resident_id
        answering = [u.occurred_at for u in results[resident_id]
                     if u.episode_id is None or str(u.episode_id) == episode_id]
        episodes.append(q.AmberEpisode(episode_id, resident_id, recommended_at, high_at,
                                       q.first_at_or_after(recommended_at, answering)))
    return episodes


def _extensions(location_id: str, events: list[ev.Event], as_of: datetime, setting: str | None,
                rules: q.QualityRules) -> list[q.IndicatorValue]:
    """Issue 11's indicators (``quality.EXTENSION_INDICATOR_IDS``), in that order."""
    start, end = _window(rules["carer_continuity"], as_of)
    setting, contacts = _carer_contacts(events, setting)
    results = [q.carer_continuity(location_id, start, end, contacts=contacts, setting=setting, rules=rules)]
    start, end = _window(rules["travel_time"], as_of)
    gaps = q.visit_gaps(_carer_visits(events), rules["travel_time"].parameters["break_over_s"])
    results.append(q.travel_time(location_id, start, end, gaps=gaps, rules=rules))
    start, end = _window(rules["urinalysis_timeliness"], as_of)
    results.append(q.urinalysis_timeliness(location_id, start, end, episodes=_amber_episodes(events, rules),
                                           rules=rules))
    return results


def _location(location_id: str, events: list[ev.Event], as_of: datetime, beds: int | None,
              indicator_ids: Sequence[str], rules: q.QualityRules) -> list[q.IndicatorValue]:
    profile = _profile(events)
    if beds is None and profile is not None:
        beds = profile.registered_beds
    values: dict[str, q.IndicatorValue] = {}
    if set(indicator_ids) & set(q.INDICATOR_IDS):
        values.update((v.indicator_id, v) for v in _core(location_id, events, as_of, beds, rules))
    if set(indicator_ids) & set(q.EXTENSION_INDICATOR_IDS):
        values.update((v.indicator_id, v) for v in _extensions(location_id, events, as_of,
                                                                 profile.setting if profile else None, rules))
    return [values[indicator_id] for indicator_id in indicator_ids]


def _by_location(log: Iterable[ev.Event], as_of: datetime) -> dict[str, list[ev.Event]]:
    by_location: dict[str, list[ev.Event]] = defaultdict(list)
    for event in _dedupe(log, as_of):
        by_location[event.location_id].append(event)
    return by_location


def recompute(events: Iterable[ev.Event], *, as_of: datetime, bed_counts: Mapping[str, int] | None = None,
              rules: q.QualityRules | None = None,
              indicator_ids: Sequence[str] = q.INDICATOR_IDS) -> list[q.IndicatorValue]:
    """The indicators `indicator_ids` (default: the ten core ones) for every location in the log, over
    windows ending `as_of`, ordered by location then as `indicator_ids` lists them.

    A location's registered beds select the small-home falls window (§2.1): those of its newest
    ``LocationProfile`` before `as_of`, unless `bed_counts` gives them (an audit of a log exported without
    the ``location-profiles`` topic); a home with neither gets the standard window."""
    rules = rules or q.packaged_rules()
    unknown = [i for i in indicator_ids if i not in q.ALL_INDICATOR_IDS]
    if unknown:
        raise ValueError(f"No indicator {', '.join(unknown)}; known: {', '.join(q.ALL_INDICATOR_IDS)}.")
    by_location = _by_location(events, as_of)
    return [value for location_id in sorted(by_location)
            for value in _location(location_id, by_location[location_id], as_of,
                                   (bed_counts or {}).get(location_id), indicator_ids, rules)]


def capacity(events: Iterable[ev.Event], *, as_of: datetime) -> list[q.CareHomeCapacity | q.HomecareCapacity]:
    """Live capacity at `as_of` for every location with a ``LocationProfile`` before it, by location, as its
    newest profile says: a care home's beds from its registered beds and its residents' latest statuses; a
    homecare agency's load from its roster (each visit's latest version, less those whose latest
    cancellation was the client's in advance) and its commissioned hours."""
    result: list[q.CareHomeCapacity | q.HomecareCapacity] = []
    for location_id, events_here in sorted(_by_location(events, as_of).items()):
        profile = _profile(events_here)
        if profile is None:
            continue
        if profile.setting == "care_home":
            changes = [(r.resident_id, r.occurred_at, r.status) for r in _of(events_here, ev.ResidentRecord)]
            result.append(q.care_home_capacity(location_id, as_of, max_beds=profile.registered_beds,
                                               statuses=q.latest_statuses(changes, as_of)))
        else:
            planned = {v.visit_id: v for v in _of(events_here, ev.VisitPlanned)}
            cancelled = {e.visit_id: e.by_client_in_advance for e in _of(events_here, ev.VisitCancelled)}
            visits = [q.RosteredVisit(v.resident_id, v.planned_start, v.planned_end,
                                      cancelled_by_client=cancelled.get(visit_id, False))
                      for visit_id, v in planned.items()]
            result.append(q.homecare_capacity(location_id, as_of, visits=visits,
                                              commissioned_hours_per_week=profile.commissioned_hours_per_week))
    return result
