"""Each location's care-quality indicators, kept incrementally: (store, event) -> store; (store, as_of) -> values.

The Faust location agent applies every care event, resident record, NEWS2 result, escalation, urinalysis
result and profile of a location to a key-value store (its changelog-backed table) and evaluates the
indicators and the live capacity from it; tests drive this module with a plain dict. The indicator
definitions are the pure ones in ``indicators.quality``; everything here is how the streaming side keeps
what they need. It is deliberately *not* the batch oracle's code path (``indicators.recompute``): the two
are written separately and an end-to-end test checks that they agree on the same log.

The store holds, per location:

- a directory, key ``<location>``: the resident records (admissions, hospital stays, discharges, sex and
  fluid target), the location's profiles (setting, registered beds, commissioned hours; the newest before
  the evaluated instant counts) and which day buckets exist;
- day buckets, key ``<location>|<local date>|<resident or ->``: what happened to one resident (or, for call
  bells, at the location) on one local day, each entry keyed by its natural identity — a fall by its alert,
  a call by its call id, a visit by its visit id, a drink or a urinalysis result by its event id — with what
  continuity of carers and travel between visits need (who logged a drink, who checked in) — and merged
  with an operation that ignores repetition and order (earliest, latest by event time, worst harm).
  Duplicated and reordered delivery therefore changes nothing, and a late event simply lands in its own
  day's bucket: the next evaluation corrects every window it falls in.

Buckets are small (one resident-day) so each event rewrites little of the changelog. Days older than the
longest window plus `RETENTION_MARGIN` are pruned, and so are profiles replaced before then; events that
old are refused as too late to affect any window. Times are stored as integer microseconds since the epoch
(exact, and ordered like the instants).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

from carepulse import events as ev
from carepulse.topics import ALERTS, CAPACITY, INDICATORS, INDICATORS_HISTORY, TopicSpec
from carepulse.topics import indicator_history_key as history_key
from carepulse.topics import indicator_key as topics_key
from indicators import quality as q
from streams import alerts

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_HARM_ORDER = (None, "none", *q.HARM_LEVELS)
#: Days kept beyond the longest window. They cover what an evaluation reads from before a window's start:
#: the 72 h NEWS2 monitoring episode plus the 12 h longest monitoring interval (cqc_domain.md §2.2 row 8,
#: [N1]) before the first due observation, and visits cancelled by the client up to a week ahead.
RETENTION_MARGIN = timedelta(days=8)
#: The bucket of events that belong to the location rather than a resident (call bells).
LOCATION_WIDE = "-"


def micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def local_day(at: datetime) -> date:
    return at.astimezone(q.CARE_TZ).date()


def retention(rules: q.QualityRules) -> timedelta:
    """How far back an event may lie behind the location's newest event and still change an indicator."""
    longest_days = max(max(r.window_days, r.small_home_window_days or 0) for r in rules.indicators.values())
    return timedelta(days=longest_days) + RETENTION_MARGIN


class TooLate(ValueError):
    """The event lies before everything the location still keeps: no window it could change is evaluated."""


# --- applying events ------------------------------------------------------------------------------------

def _earliest(current: list | None, candidate: list) -> list:
    return candidate if current is None or candidate < current else current


class LocationStore:
    """A location-keyed view of a key-value store (a Faust table in the worker, a dict in tests).

    Values are plain JSON-able dicts and lists; every change is written back with ``store[key] = value``
    (a Faust table records a change only on assignment).
    """

    def __init__(self, store: MutableMapping, rules: q.QualityRules | None = None) -> None:
        self.store = store
        self.rules = rules or q.packaged_rules()
        self.retention = retention(self.rules)

    def directory(self, location_id: str) -> dict:
        return self.store.get(location_id) or {"latest": None, "buckets": [], "records": {}, "profiles": {}}

    def locations(self) -> list[str]:
        return [key for key in list(self.store.keys()) if "|" not in key]

    def clock(self, location_id: str) -> datetime | None:
        """The location's event time: the newest event applied so far."""
        latest = self.directory(location_id)["latest"]
        return instant(latest) if latest is not None else None

    def apply(self, event: ev.Event) -> None:
        """Fold one event into its location's store. Repeating an event, or reordering events, changes
        nothing. Raises `TooLate` for an event (other than a resident record or a profile) older than the
        location keeps (`retention`)."""
        location_id = event.location_id
        directory = self.directory(location_id)
        at = micros(event.occurred_at)
        # A resident record is never too late: an admission long ago is what makes a bed occupied today; nor
        # is a profile: the beds registered long ago are the beds today.
        too_old = directory["latest"] is not None and at < directory["latest"] - self.retention // timedelta(microseconds=1)
        if too_old and not isinstance(event, (ev.ResidentRecord, ev.LocationProfile)):
            raise TooLate(f"it occurred {event.occurred_at.isoformat()}, more than {self.retention.days} days "
                          "before the location's newest event, beyond every indicator window")
        if directory["latest"] is None or at > directory["latest"]:
            directory["latest"] = at
            self.store[location_id] = directory
        eid = str(event.event_id)
        day = local_day(event.occurred_at)
        match event:
            case ev.ResidentRecord():
                directory["records"].setdefault(event.resident_id, {})[eid] = [
                    at, eid, event.status, event.sex, event.fluid_target_ml]
                self.store[location_id] = directory
            case ev.LocationProfile():
                directory.setdefault("profiles", {})[eid] = [at, event.setting, event.registered_beds,
                                                            event.commissioned_hours_per_week]
                self.store[location_id] = directory
            case ev.FluidIntake():
                # The carer who logged a drink was with the resident (continuity of carers); a smart cup was not.
                carer = event.recorded_by if event.method == "carer" else None
                self._put(location_id, day, event.resident_id, ("fluids", eid),
                          [at, event.consumed_ml, event.offered_ml, carer])
            case ev.Fall(confirmed=True):
                # A device alert and its staff confirmation share the alert id: one fall (cqc_domain.md §2.1).
                self._put(location_id, day, event.resident_id, ("falls", event.alert_id or eid, eid), [at, event.harm])
            case ev.Fall():
                pass  # an unconfirmed device alert is not a fall (cqc_domain.md §2.1, [F7])
            case ev.CallBell():
                part = "test" if event.call_type == "test" else event.phase
                self._put(location_id, day, LOCATION_WIDE, ("calls", event.call_id, part, eid), [at, event.priority])
            case ev.VisitPlanned():
                # In the bucket of the visit's own day, whenever the roster was published.
                self._put(location_id, local_day(event.planned_start), event.resident_id,
                          ("visits", event.visit_id, "planned", eid),
                          [at, micros(event.planned_start), event.time_critical,
                           [[t.task_id, t.time_critical] for t in event.tasks if t.kind == "medication"],
                           event.resident_id, micros(event.planned_end)])
            case ev.VisitCheckIn():
                self._put(location_id, day, event.resident_id, ("visits", event.visit_id, "check_in", eid),
                          [at, event.carer_id, event.resident_id])
            case ev.VisitCheckOut():
                self._put(location_id, day, event.resident_id, ("visits", event.visit_id, "check_out", eid),
                          [at, {t.task_id: t.outcome for t in event.task_outcomes}])
            case ev.VisitCancelled():
                self._put(location_id, day, event.resident_id, ("visits", event.visit_id, "cancelled", eid),
                          [at, event.by_client_in_advance])
            case ev.News2Scored():
                self._put(location_id, day, event.resident_id, ("scores", str(event.observation_set_id), eid),
                          [at, event.complete, event.total, event.monitoring_interval_minutes])
            case ev.Escalation():
                band = f"{event.episode_id}|{micros(event.raised_at or event.occurred_at)}"
                if event.status in ("raised", "upgraded"):
                    # Bands with no deadline are no trigger (escalation timeliness) but may be amber episodes.
                    self._put(location_id, day, event.resident_id, ("bands", band, "raised", eid),
                              [at, event.risk, micros(event.deadline_at) if event.deadline_at else None])
                elif event.status == "acknowledged":
                    self._put(location_id, day, event.resident_id, ("bands", band, "acknowledged", eid),
                              [at, micros(event.acknowledged_at or event.occurred_at)])
            case ev.UrinalysisResult():
                self._put(location_id, day, event.resident_id, ("urinalysis", eid),
                          [at, str(event.episode_id) if event.episode_id else None])
            case _:
                raise ValueError(f"a {event.event_type} event does not feed any care-quality indicator")

    def _put(self, location_id: str, day: date, who: str, path: tuple[str, ...], entry: list) -> None:
        """Set `entry` at `path` in a day bucket: an entry is keyed by its event id, so a repeat overwrites
        itself. Which entry counts (the earliest, the latest roster version ...) is decided on evaluation,
        among the entries that occurred before the evaluated instant."""
        key = f"{location_id}|{day.isoformat()}|{who}"
        bucket = self.store.get(key) or {}
        node = bucket
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = entry
        self.store[key] = bucket
        directory = self.directory(location_id)
        # The bucket keys are kept sorted (by day, then resident), so finding one and pruning are bisections.
        buckets = directory["buckets"]
        at = bisect.bisect_left(buckets, key)
        if at == len(buckets) or buckets[at] != key:
            buckets.insert(at, key)
            self.store[location_id] = directory

    def prune(self, location_id: str) -> int:
        """Drop day buckets older than `retention` behind the location's clock, and the profiles replaced
        before then (the newest older one still holds at that horizon); returns how many buckets went."""
        clock = self.clock(location_id)
        if clock is None:
            return 0
        oldest_kept = local_day(clock - self.retention).isoformat()
        directory = self.directory(location_id)
        stale = bisect.bisect_left(directory["buckets"], f"{location_id}|{oldest_kept}")
        for key in directory["buckets"][:stale]:
            self.store.pop(key, None)
        if stale:
            del directory["buckets"][:stale]
            self.store[location_id] = directory
        profiles = directory.get("profiles", {})
        horizon = micros(clock - self.retention)
        replaced = sorted([entry[0], eid] for eid, entry in profiles.items() if entry[0] < horizon)[:-1]
        if replaced:
            for _, eid in replaced:
                del profiles[eid]
            self.store[location_id] = directory
        return stale

    def evaluate(self, location_id: str, as_of: datetime,
                 indicator_ids: Sequence[str] | None = None) -> list[q.IndicatorValue]:
        """The indicators `indicator_ids` (default: those the worker streams,
        ``quality.streamed_indicator_ids``) of the location over windows ending `as_of`, in that order. Only
        what occurred before `as_of` counts (the definitions' windows are half-open)."""
        indicator_ids = indicator_ids or q.streamed_indicator_ids(self.rules)
        return _Evaluation(self, location_id, as_of).indicators(indicator_ids)

    def capacity(self, location_id: str, at: datetime) -> q.CareHomeCapacity | q.HomecareCapacity | None:
        """The location's live capacity at `at` as its newest profile before then says; None without one."""
        return _Evaluation(self, location_id, at).capacity()


# --- evaluating ------------------------------------------------------------------------------------------

def _first(entries: dict[str, list]) -> list | None:
    """The earliest of some entries keyed by event id: by event time, then event id (as `sorted` would)."""
    if len(entries) < 2:  # most have one entry or none: no ordering to do
        return next(iter(entries.values()), None)
    return min(([entry[0], eid, entry] for eid, entry in entries.items()))[2]


def _last(entries: dict[str, list]) -> list | None:
    if len(entries) < 2:
        return next(iter(entries.values()), None)
    return max(([entry[0], eid, entry] for eid, entry in entries.items()))[2]


class _Evaluation:
    """The location's buckets gathered once (entries from before `as_of` only), then each indicator."""

    def __init__(self, store: LocationStore, location_id: str, as_of: datetime) -> None:
        self.rules = store.rules
        self.location_id = location_id
        self.as_of = as_of
        before = micros(as_of)
        self.gathered: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
        directory = store.directory(location_id)
        self.records = {resident: sorted(r for r in entries.values() if r[0] < before)
                        for resident, entries in directory["records"].items()}
        #: The newest profile before `as_of`: (time, event id, [time, setting, beds, commissioned hours]).
        self.profile = max(((entry[0], eid, entry) for eid, entry in directory.get("profiles", {}).items()
                            if entry[0] < before), default=None)
        volumes: dict[tuple[str, date], list[tuple[float, float]]] = defaultdict(list)
        # Only the contacts continuity of carers can count: a care home may log thousands of drinks a month.
        contacts_from = micros(self._window("carer_continuity")[0])
        self.drink_contacts: list[q.CarerContact] = []
        #: (time, event id, resident, band key, risk) of every raised or upgraded escalation band.
        self.bands_raised: list[tuple[int, str, str, str, str]] = []
        self.urinalysis: dict[str, list[tuple[datetime, str | None]]] = defaultdict(list)
        for key in directory["buckets"]:
            _, day, who = key.split("|")
            bucket = store.store.get(key) or {}
            drinks = [entry for entry in bucket.get("fluids", {}).values() if entry[0] < before]
            volumes[(who, date.fromisoformat(day))] += [(consumed, offered) for _, consumed, offered, _ in drinks]
            self.drink_contacts += [q.CarerContact(who, carer, instant(at)) for at, _, _, carer in drinks
                                    if carer is not None and at >= contacts_from]
            self.urinalysis[who] += [(instant(at), episode_id)
                                     for at, episode_id in bucket.get("urinalysis", {}).values() if at < before]
            self.bands_raised += [(entry[0], eid, who, band, entry[1])
                                  for band, parts in bucket.get("bands", {}).items()
                                  for eid, entry in parts.get("raised", {}).items() if entry[0] < before]
            # The other kinds: entries by event id under (kind, identity[, part]), merged across days.
            for kind in ("falls", "calls", "visits", "scores", "bands"):
                for identity, node in bucket.get(kind, {}).items():
                    target = self.gathered[kind][(who, identity) if kind in ("falls", "scores") else identity]
                    if kind in ("falls", "scores"):
                        target[""].update({eid: e for eid, e in node.items() if e[0] < before})
                    else:
                        for part, entries in node.items():
                            target[part].update({eid: e for eid, e in entries.items() if e[0] < before})

        # Exactly rounded, so a day's total does not depend on the order its drinks arrived in.
        self.fluids = {key: (math.fsum(c for c, _ in pairs), math.fsum(o for _, o in pairs))
                       for key, pairs in volumes.items()}

    def _window(self, indicator_id: str, beds: int | None = None) -> tuple[datetime, datetime]:
        return self.as_of - timedelta(days=self.rules[indicator_id].window_days_for(beds)), self.as_of

    def indicators(self, indicator_ids: Sequence[str]) -> list[q.IndicatorValue]:
        """The indicators `indicator_ids`, in that order; only the groups asked for are computed."""
        values: dict[str, q.IndicatorValue] = {}
        if set(indicator_ids) & set(q.INDICATOR_IDS):
            values.update((v.indicator_id, v) for v in self._core())
        if "carer_continuity" in indicator_ids:
            values["carer_continuity"] = self._carer_continuity()
        if "travel_time" in indicator_ids:
            start, end = self._window("travel_time")
            gaps = q.visit_gaps(self._carer_visits(), self.rules["travel_time"].parameters["break_over_s"])
            values["travel_time"] = q.travel_time(self.location_id, start, end, gaps=gaps, rules=self.rules)
        if "urinalysis_timeliness" in indicator_ids:
            start, end = self._window("urinalysis_timeliness")
            values["urinalysis_timeliness"] = q.urinalysis_timeliness(
                self.location_id, start, end, episodes=self._amber_episodes(), rules=self.rules)
        return [values[indicator_id] for indicator_id in indicator_ids]

    def _core(self) -> list[q.IndicatorValue]:
        """The ten core indicators (``quality.INDICATOR_IDS``); the profile's beds pick the falls window."""
        rules, loc = self.rules, self.location_id
        beds = self.profile[2][2] if self.profile else None
        stays = [stay for resident, records in self.records.items()
                 for stay in q.stays_from_statuses(resident, [(instant(r[0]), r[2]) for r in records])]
        falls = self._falls()
        results = []
        start, end = self._window("falls_rate", beds)
        results.append(q.falls_rate(loc, start, end, occupied_bed_days=q.occupied_bed_days(stays, start, end),
                                    confirmed_falls=sum(1 for at, _ in falls if start <= at < end), rules=rules))
        start, end = self._window("falls_with_harm_rate")
        results.append(q.falls_with_harm_rate(loc, start, end, occupied_bed_days=q.occupied_bed_days(stays, start, end),
                                              harms=[harm for at, harm in falls if start <= at < end], rules=rules))
        for indicator in (q.hydration_days_met, q.hydration_consumed_vs_offered):
            start, end = self._window(indicator.__name__)
            results.append(indicator(loc, start, end, resident_days=self._resident_days(stays, start, end),
                                     rules=rules))
        start, end = self._window("call_bell_response")
        calls, unanswered = self._calls(start, end)
        results.append(q.call_bell_response(loc, start, end, calls=calls, unanswered_calls=unanswered, rules=rules))
        start, end = self._window("escalation_timeliness")
        results.append(q.escalation_timeliness(loc, start, end, triggers=self._triggers(), rules=rules))
        start, end = self._window("observation_compliance")
        results.append(self._observation_compliance(start, end))
        visits = self._visits()
        for indicator in (q.missed_visits, q.late_visits):
            start, end = self._window(indicator.__name__)
            results.append(indicator(loc, start, end, visits=[v for v, _ in visits if start <= v.planned_start < end],
                                     rules=rules))
        start, end = self._window("missed_medication_doses")
        results.append(q.missed_medication_doses(
            loc, start, end, doses=[d for v, doses in visits if start <= v.planned_start < end for d in doses],
            rules=rules))
        return results

    @cached_property
    def _check_ins(self) -> dict[str, list]:
        """Each checked-in visit's first check-in, [time, carer, resident], by visit id."""
        return {visit_id: first for visit_id, parts in self.gathered["visits"].items()
                if (first := _first(parts["check_in"])) is not None}

    def _carer_continuity(self) -> q.IndicatorValue:
        """Judged in the profile's setting: a homecare agency's contacts are its check-ins (one per visit), a
        care home's the drinks its carers logged. A location with no profile counts as a homecare agency
        when it has check-ins, else as a care home."""
        check_ins = self._check_ins
        setting = self.profile[2][1] if self.profile else "homecare" if check_ins else "care_home"
        if setting == "homecare":
            contacts = [q.CarerContact(resident, carer, instant(at)) for at, carer, resident in check_ins.values()]
        else:
            contacts = self.drink_contacts
        start, end = self._window("carer_continuity")
        return q.carer_continuity(self.location_id, start, end, contacts=contacts, setting=setting,
                                  rules=self.rules)

    def _carer_visits(self) -> list[q.CarerVisit]:
        visits = []
        for visit_id, (at, carer, _) in self._check_ins.items():
            check_out = _first(self.gathered["visits"][visit_id]["check_out"])
            visits.append(q.CarerVisit(carer, visit_id, instant(at), instant(check_out[0]) if check_out else None))
        return visits

    def _amber_episodes(self) -> list[q.AmberEpisode]:
        """Episodes with a band at a risk the urinalysis pathway acts on, each with the first urinalysis of its
        resident (that of its first band) at or after the recommendation naming that episode or none."""
        amber = set(self.rules.urinalysis_pathway.recommend_at_risks)
        by_episode: dict[str, list[tuple[int, str, str, int, str]]] = defaultdict(list)
        for at, eid, resident, band, risk in self.bands_raised:
            episode_id, raised_at = band.split("|")
            by_episode[episode_id].append((at, eid, resident, int(raised_at), risk))
        episodes = []
        for episode_id, bands in by_episode.items():
            recommended = min((raised_at for *_, raised_at, risk in bands if risk in amber), default=None)
            if recommended is None:
                continue
            high = min((raised_at for *_, raised_at, risk in bands if risk == "high" and raised_at >= recommended),
                       default=None)
            resident = min(bands)[2]
            recommended_at = instant(recommended)
            answering = [at for at, named in self.urinalysis[resident] if named is None or named == episode_id]
            episodes.append(q.AmberEpisode(episode_id, resident, recommended_at,
                                           instant(high) if high is not None else None,
                                           q.first_at_or_after(recommended_at, answering)))
        return episodes

    def capacity(self) -> q.CareHomeCapacity | q.HomecareCapacity | None:
        """Live capacity at `as_of` from the newest profile before it (None without one): a care home's beds
        from its residents' latest statuses, a homecare agency's roster (each visit's latest version; those
        whose latest cancellation was the client's in advance are not planned care)."""
        if self.profile is None:
            return None
        _, setting, beds, commissioned_hours = self.profile[2]
        if setting == "care_home":
            changes = [(resident, instant(r[0]), r[2])
                       for resident, records in self.records.items() for r in records]
            return q.care_home_capacity(self.location_id, self.as_of, max_beds=beds,
                                        statuses=q.latest_statuses(changes, self.as_of))
        since = micros(self.as_of - timedelta(days=7))  # homecare_capacity counts the 7 days before `as_of`
        visits = []
        for plan, parts in self._plans.values():
            if plan[1] >= since:
                cancel = _last(parts["cancelled"])
                visits.append(q.RosteredVisit(plan[4], instant(plan[1]), instant(plan[5]),
                                              bool(cancel and cancel[1])))
        return q.homecare_capacity(self.location_id, self.as_of, visits=visits,
                                   commissioned_hours_per_week=commissioned_hours)

    def _falls(self) -> list[tuple[datetime, str | None]]:
        """(first report, worst harm) per confirmed fall."""
        falls = []
        for parts in self.gathered["falls"].values():
            entries = parts[""].values()
            if entries:
                falls.append((instant(min(e[0] for e in entries)),
                              max((e[1] for e in entries), key=_HARM_ORDER.index)))
        return falls

    def _resident_days(self, stays: list[q.Stay], start: datetime, end: datetime) -> list[q.ResidentDay]:
        """Local days wholly in the window spent wholly in a bed, for residents with a known fluid target
        (the care plan's as recorded by the end of the day, else the default for their sex; §2.2 row 4)."""
        midnights = q.census_midnights(start, end)
        days = []
        for day_start, day_end in zip(midnights, midnights[1:]):
            day = local_day(day_start)
            for stay in stays:
                if stay.start > day_start or (stay.end is not None and stay.end < day_end):
                    continue
                known = [r for r in self.records[stay.resident_id] if instant(r[0]) < day_end]
                target_ml = q.daily_fluid_target_ml(known[-1][4], known[-1][3], self.rules)
                if target_ml is not None:
                    consumed_ml, offered_ml = self.fluids.get((stay.resident_id, day), (0.0, 0.0))
                    days.append(q.ResidentDay(stay.resident_id, day, consumed_ml, offered_ml, target_ml))
        return days

    def _calls(self, start: datetime, end: datetime) -> tuple[list[q.CallResponse], int]:
        calls, unanswered = [], 0
        for parts in self.gathered["calls"].values():
            raised = _first(parts["raised"])
            if parts["test"] or raised is None or not start <= instant(raised[0]) < end:
                continue
            answered = _first(parts["answered"])
            if answered is None:
                unanswered += 1
            else:
                calls.append(q.CallResponse(raised[1], (answered[0] - raised[0]) / 1e6))
        return calls, unanswered

    def _triggers(self) -> list[q.EscalationTrigger]:
        triggers = []
        for band_key, parts in self.gathered["bands"].items():
            raised = _first({eid: entry for eid, entry in parts["raised"].items() if entry[2] is not None})
            if raised is None:
                continue
            acknowledged = _first(parts["acknowledged"])
            triggers.append(q.EscalationTrigger(
                raised[1], instant(int(band_key.split("|")[1])), instant(raised[2]),
                instant(acknowledged[1]) if acknowledged else None))
        return triggers

    def _observation_compliance(self, start: datetime, end: datetime) -> q.IndicatorValue:
        close_s = self.rules["observation_compliance"].parameters["episode_close_after_s"]
        per_resident: dict[str, list[q.ScoredSet]] = defaultdict(list)
        for (resident, _), parts in self.gathered["scores"].items():
            first = _first(parts[""])
            if first is not None:
                at, complete, total, interval = first
                per_resident[resident].append(q.ScoredSet(instant(at), complete, total, interval))
        in_window = [s for sets in per_resident.values() for s in sets if start <= s.at < end]
        return q.observation_compliance(
            self.location_id, start, end,
            due=[d for sets in per_resident.values() for d in q.due_observations(sets, close_s)],
            complete_sets=sum(1 for s in in_window if s.complete), all_sets=len(in_window), rules=self.rules)

    @cached_property
    def _plans(self) -> dict[str, tuple[list, dict]]:
        """Each visit on the roster: its latest version and all its entries (check-ins, cancellations ...)."""
        return {visit_id: (_last(parts["planned"]), parts) for visit_id, parts in self.gathered["visits"].items()
                if parts["planned"]}

    def _visits(self) -> list[tuple[q.PlannedVisit, list[q.Dose]]]:
        """Each visit on the roster (its latest version) judged as of `as_of`, with its scheduled doses."""
        plans = self._plans
        # The next planned start of the same person bounds a visit's deadline ([V3]).
        starts: dict[str, list[int]] = defaultdict(list)
        for plan, _ in plans.values():
            starts[plan[4]].append(plan[1])
        for person_starts in starts.values():
            person_starts.sort()
        end_of_day_s = self.rules["missed_visits"].parameters["end_of_day_s"]
        judged = []
        for visit_id, (plan, parts) in plans.items():
            planned_start = instant(plan[1])
            person_starts = starts[plan[4]]
            later = bisect.bisect_right(person_starts, plan[1])
            deadline = q.visit_deadline(planned_start, instant(person_starts[later]) if later < len(person_starts)
                                        else None, end_of_day_s)
            check_in = _first(parts["check_in"])
            checked_in_at = instant(check_in[0]) if check_in else None
            cancel = _last(parts["cancelled"])
            outcome = q.classify_visit(deadline=deadline, checked_in_at=checked_in_at, cancelled=cancel is not None,
                                       cancelled_by_client_in_advance=bool(cancel and cancel[1]), as_of=self.as_of)
            lateness_s = (checked_in_at - planned_start).total_seconds() if checked_in_at else None
            check_out = _first(parts["check_out"])
            doses = q.scheduled_doses([tuple(task) for task in plan[3]], outcome=outcome,
                                      recorded=check_out[1] if check_out else None, deadline=deadline,
                                      as_of=self.as_of, lateness_s=lateness_s)
            judged.append((q.PlannedVisit(visit_id, planned_start, outcome, plan[2], lateness_s), doses))
        return judged


# --- publishing ------------------------------------------------------------------------------------------

def _floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def evaluation_instant(clock: datetime | None, now: datetime, wall_clock_lag: timedelta) -> datetime:
    """When a location's indicators are evaluated: the minute after its newest event (so that event is in
    the half-open windows), or, when it has been quiet, the wall clock minus `wall_clock_lag` — windows
    slide and deadlines pass (a visit becomes missed at 23:00) even when nothing happens."""
    by_wall = _floor_minute(now - wall_clock_lag)
    if clock is None:
        return by_wall
    return max(_floor_minute(clock) + timedelta(minutes=1), by_wall)


def last_midnight(at: datetime) -> datetime:
    """The latest local midnight at or before `at`: the instant of the day's snapshot."""
    return q.local_midnight(local_day(at))


def indicator_update(value: q.IndicatorValue, rules: q.QualityRules, *, kind: str, worker_id: str,
                     now: datetime) -> ev.IndicatorUpdate:
    indicator = rules[value.indicator_id]

    def threshold(t: q.Threshold) -> ev.ThresholdInfo:
        return ev.ThresholdInfo(op=t.op, value=t.value, source=t.source, proposal=t.proposal)

    content = dict(
        location_id=value.location_id, indicator_id=value.indicator_id, title=indicator.title, unit=indicator.unit,
        kind=kind, window_start=value.window_start, window_end=value.window_end, numerator=value.numerator,
        denominator=value.denominator, value=value.value, status=value.status.value,
        minimum_denominator=indicator.minimum_denominator, direction=indicator.direction,
        green=threshold(indicator.green), red=threshold(indicator.red), details=value.details,
        rules_version=value.rules_version,
    )
    # The same value of the same window always gets the same id, so a re-publication is recognisable.
    identity = json.dumps([value.location_id, value.indicator_id, kind, value.window_start.isoformat(),
                           value.window_end.isoformat(), value.numerator, value.denominator, value.value,
                           value.status.value, value.details, value.rules_version], sort_keys=True, default=str)
    return ev.IndicatorUpdate(event_id=ev.derived_event_id("indicator", identity), occurred_at=value.window_end,
                              received_at=now, source=ev.Source(gateway_id=worker_id), **content)


def capacity_update(capacity: q.CareHomeCapacity | q.HomecareCapacity, profile_event_id: str, *, worker_id: str,
                    now: datetime) -> ev.LocationCapacity:
    """The ``capacity`` topic's form of a location's live capacity; the same figures at the same instant always
    get the same id."""
    if isinstance(capacity, q.CareHomeCapacity):
        figures = dict(setting="care_home", max_beds=capacity.max_beds, occupied_beds=capacity.occupied_beds,
                       reserved_beds=capacity.reserved_beds, vacant_beds=capacity.vacant_beds,
                       over_max_beds=capacity.over_max_beds)
    else:
        figures = dict(setting="homecare", people_receiving_care=capacity.people_receiving_care,
                       planned_hours_7d=capacity.planned_hours_7d,
                       commissioned_hours_7d=capacity.commissioned_hours_7d,
                       commissioned_hours_not_planned=capacity.commissioned_hours_not_planned)
    identity = json.dumps([capacity.location_id, capacity.at.isoformat(), profile_event_id, figures],
                          sort_keys=True)
    return ev.LocationCapacity(event_id=ev.derived_event_id("capacity", identity), occurred_at=capacity.at,
                               received_at=now, source=ev.Source(gateway_id=worker_id),
                               location_id=capacity.location_id, profile_event_id=profile_event_id, **figures)


class IndicatorBoard:
    """What a worker has published for each location it owns, and what it must publish next: the indicators
    of ``quality.streamed_indicator_ids`` and, for a location with a profile, its live capacity whenever it
    changes.

    Memory only: after a restart or a rebalance everything is evaluated and published once more (same
    values, same event ids), which a compacted topic and idempotent consumers absorb.
    """

    def __init__(self, store: LocationStore, *, worker_id: str, wall_clock_lag: timedelta,
                 refresh: timedelta = timedelta(0)) -> None:
        self.store = store
        self.worker_id = worker_id
        self.wall_clock_lag = wall_clock_lag
        #: A location is evaluated at most once per `refresh` (wall clock): evaluating reads its whole window,
        #: and a busy location must not take the worker's time from the escalations of its residents.
        self.refresh = refresh
        self._last_run: dict[str, datetime] = {}
        self._published: dict[str, tuple] = {}
        self._capacity: dict[str, tuple] = {}
        self.indicator_ids = q.streamed_indicator_ids(store.rules)
        self._evaluated_at: dict[str, datetime] = {}
        self._snapshot_at: dict[str, datetime] = {}
        #: Per location with new events since its last evaluation: the earliest of their event times.
        self._changed_since: dict[str, datetime] = {}
        #: The locations in the store, kept as events arrive (scanning the store's keys reads every bucket);
        #: None until read from the store once, and again after `forget`.
        self._locations: set[str] | None = None

    def locations(self) -> list[str]:
        if self._locations is None:
            self._locations = set(self.store.locations())
        return sorted(self._locations)

    def applied(self, event: ev.Event) -> None:
        if self._locations is not None:
            self._locations.add(event.location_id)
        current = self._changed_since.get(event.location_id)
        self._changed_since[event.location_id] = min(current, event.occurred_at) if current else event.occurred_at

    def forget(self) -> None:
        """Evaluate and publish everything again (after a rebalance or table recovery)."""
        self._published.clear()
        self._capacity.clear()
        self._evaluated_at.clear()
        self._snapshot_at.clear()
        self._last_run.clear()
        self._locations = None

    def due(self, location_id: str, now: datetime) -> bool:
        """Whether the location may be evaluated at `now`: not evaluated within the last `refresh`."""
        last = self._last_run.get(location_id)
        return last is None or now - last >= self.refresh

    def updates(self, location_id: str, now: datetime) -> list[tuple[TopicSpec, str, ev.Event]]:
        """(topic, key, event) for each indicator whose published form changed — the current values, and the
        snapshot at the last local midnight when that midnight is new or an event before it arrived — an
        alert for each current indicator that turned red, and the live capacity when it changed. Capacity is
        evaluated at the same instant as the current values: a homecare agency's planned hours move with
        time even when nothing happens."""
        if not self.due(location_id, now):
            return []
        as_of = evaluation_instant(self.store.clock(location_id), now, self.wall_clock_lag)
        changed_since = self._changed_since.pop(location_id, None)
        results: list[tuple[TopicSpec, str, ev.Event]] = []
        if changed_since is not None or self._evaluated_at.get(location_id) != as_of:
            self._evaluated_at[location_id] = as_of
            self._last_run[location_id] = now
            evaluation = _Evaluation(self.store, location_id, as_of)
            for value in evaluation.indicators(self.indicator_ids):
                results += self._if_changed(topics_key(value.location_id, value.indicator_id), value, "current", now)
            results += self._if_capacity_changed(evaluation, now)
        midnight = last_midnight(as_of)
        if self._snapshot_at.get(location_id) != midnight or (changed_since is not None and changed_since < midnight):
            self._snapshot_at[location_id] = midnight
            day = local_day(midnight).isoformat()
            for value in self.store.evaluate(location_id, midnight, self.indicator_ids):
                results += self._if_changed(history_key(value.location_id, value.indicator_id, day), value,
                                            "daily_snapshot", now)
        return results

    def _if_changed(self, key: str, value: q.IndicatorValue, kind: str, now: datetime
                    ) -> list[tuple[TopicSpec, str, ev.Event]]:
        content = (value.window_start, value.window_end, value.numerator, value.denominator, value.value,
                   value.status, value.details, value.rules_version)
        before = self._published.get(key)
        if before == content:
            return []
        self._published[key] = content
        update = indicator_update(value, self.store.rules, kind=kind, worker_id=self.worker_id, now=now)
        if kind == "daily_snapshot":
            return [(INDICATORS_HISTORY, key, update)]
        results: list[tuple[TopicSpec, str, ev.Event]] = [(INDICATORS, key, update)]
        if value.status is q.Rag.RED and (before is None or before[5] is not q.Rag.RED):
            results.append((ALERTS, value.location_id, alerts.indicator_turned_red(update, now, self.worker_id)))
        return results

    def _if_capacity_changed(self, evaluation: _Evaluation, now: datetime) -> list[tuple[TopicSpec, str, ev.Event]]:
        capacity = evaluation.capacity()
        if capacity is None:
            return []
        profile_event_id = evaluation.profile[1]
        content = (profile_event_id, replace(capacity, at=None))
        if self._capacity.get(capacity.location_id) == content:
            return []
        self._capacity[capacity.location_id] = content
        return [(CAPACITY, capacity.location_id,
                 capacity_update(capacity, profile_event_id, worker_id=self.worker_id, now=now))]
