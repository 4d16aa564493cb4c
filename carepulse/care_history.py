"""Seeded, deterministic care activity for several locations: weeks of history for end-to-end tests and demo.

Pure: `CareActivity.advance(until)` returns the events that happened before `until` and sends nothing. The
activity is generated in fixed simulated steps of `STEP`; each step of each location draws from its own random
source, seeded by (seed, location, step), and from the state that earlier steps left, so the same seed gives
the same events however the calls to `advance` split time. Event ids are deterministic UUIDs.

What each location produces, with the rates of its `LocationProfile` (cqc_domain.md §2.2 gives the indicators
these feed, and the anchors the default rates come from):

- every person on the books gets a ``ResidentRecord``: care-home residents are admitted at the start, go to
  hospital after a serious deterioration or a severe fall and come back days later (or die there), and are
  sometimes discharged, the empty bed being filled after a few days; homecare clients are admitted once;
- care homes: drinks at the drink rounds (carer-logged or smart cup, offered and consumed), falls (seen by
  staff, or a fall detector's alert that staff confirm with the same ``alert_id``, or a false alert never
  confirmed), call bells raised and answered, NEWS2 observation sets at the frequency the last score asks for
  [N1], a minority of residents deteriorating for a while, and the staff's acknowledgements of the escalations
  those sets raise (episodes modelled with the pure ``indicators.escalation`` core, so an acknowledgement is
  only sent while an escalation is open and unacknowledged);
- homecare: each day's roster published as ``VisitPlanned`` the evening before, then check-ins (at the actual
  arrival), check-outs with the tasks' eMAR outcomes, cancellations and missed visits. Carers have
  pseudonymous ids (``carer-<location>-<nn>``); each client has a small regular team, and the day's visits
  go, in arrival order, to a free regular carer, else to any free carer of the agency, else to cover staff,
  a carer being free once their last visit ended and they travelled to the next (continuity of carers and
  travel between visits, issue 11). Carers are drawn from a random source of their own, so the rostering
  settings change who visits, never what happens at a visit;
- every location publishes what it is registered or commissioned for (``events.LocationProfile``: a care
  home's registered beds, an agency's commissioned hours a week) at the start, and again when a care home
  registers more beds (``BedRegistration``), whose new beds are then filled from a waiting list: with the
  admissions, hospital stays and discharges this moves the live capacity (issue 11);
- care homes that follow the Care City test-bed pathway [R8] (``urinalysis_share`` above 0) take a urine
  dipstick test for a share of the NEWS2 escalation episodes that reach a risk the quality rules'
  ``urinalysis_pathway`` acts on (amber: low-medium or medium), after a lognormal delay, so some results
  come within the ``urinalysis_timeliness`` target, some after it and some never. NICE and UKHSA advise
  against dipstick diagnosis of UTI in people over 65 (cqc_domain.md §2.2 row 13, [U3]), so by default no
  location does.

Features added after the first (profiles, urinalysis) draw from random sources of their own and number
their events in series of their own (`_Step.emit`'s `stream`), so adding them to a location leaves the
other events of the same seed as they were, until they change who is in a bed.

The live vital-signs simulator (`carepulse.simulation.CareHome`) names residents the same way (`person_id`),
so the demo's live residents res-oakwood-001 to 005 are admitted residents of the oakwood history.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from carepulse import events, topics
from indicators import escalation, news2, quality
from indicators.quality import CARE_TZ

#: The simulated step: every location's activity is drawn 15 minutes at a time.
STEP = timedelta(minutes=15)
_STEPS_PER_DAY = timedelta(days=1) / STEP

#: Namespace of the generated event ids (uuid5 of seed, location, step and serial within the step).
HISTORY_EVENT_NAMESPACE = uuid.UUID("0b9d3f6e-4c1a-5e8b-9a27-6d5c3e1f8a40")

#: Relative call-bell and fall activity by local hour (mean 1): busiest around getting up and going to bed,
#: quietest at night. An illustrative shape, not a published one.
_HOURLY_WEIGHTS = (0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.9, 1.5, 1.6, 1.4, 1.1, 1.0,
                   1.1, 1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 1.4, 1.5, 1.3, 1.0, 0.7)
_ACTIVITY_BY_HOUR = tuple(w * 24 / sum(_HOURLY_WEIGHTS) for w in _HOURLY_WEIGHTS)

#: Drink rounds in a care home, local time: breakfast, mid-morning, lunch, afternoon tea, supper, bedtime.
_DRINK_ROUNDS = (time(7, 30), time(10, 0), time(12, 30), time(15, 0), time(17, 30), time(20, 0))
#: How long a drink round takes to reach every resident; each resident has their place in the round.
_ROUND_TAKES_MIN = 40
#: When the next day's homecare roster is published (local time).
_ROSTER_PUBLISHED_AT = time(18, 0)
#: Homecare visit patterns by visits a day: (local start, minutes, position in the day).
_VISIT_PATTERNS: dict[int, tuple[tuple[time, int, str], ...]] = {
    1: ((time(9, 0), 45, "morning"),),
    2: ((time(8, 0), 45, "morning"), (time(18, 0), 30, "evening")),
    3: ((time(8, 0), 45, "morning"), (time(12, 30), 30, "lunch"), (time(18, 0), 30, "evening")),
    4: ((time(7, 30), 45, "morning"), (time(12, 0), 30, "lunch"), (time(16, 30), 30, "tea"),
        (time(20, 30), 30, "evening")),
}
_TASKS_BY_VISIT = {"morning": ("personal_care", "meal"), "lunch": ("meal",), "tea": ("meal",),
                   "evening": ("personal_care",)}
#: Personal care and meals left undone (the carer ran out of time, the client declined).
_OTHER_TASK_NOT_DONE_SHARE = 0.02
#: Visits where a client on routine medicines has a dose (morning and evening rounds).
_ROUTINE_DOSE_VISITS = ("morning", "evening")

#: How each kind of deterioration changes the usual vital signs at its worst, and the ACVPU it brings.
#: Low-medium: new confusion with a slight fever, e.g. delirium with a urinary infection (a single 3);
#: medium: a chest infection (NEWS2 about 5); high: a sepsis-like course (NEWS2 12 or more) [N1].
_PEAK_CHANGE: dict[str, tuple[dict[str, float], str]] = {
    "low-medium": ({"temperature": 1.4}, "C"),
    "medium": ({"respiration_rate": 6.5, "spo2": -3.5, "pulse": 30, "temperature": 1.7}, "A"),
    "high": ({"respiration_rate": 11, "spo2": -7, "systolic_bp": -38, "pulse": 45, "temperature": 2.4}, "C"),
}
#: How often staff repeat observations while a resident shows soft signs of getting worse.
_WATCHFUL_INTERVAL_MIN = 120
#: The share of the way to its worst at which a deterioration's altered consciousness shows.
_CONSCIOUSNESS_CHANGES_AT = 0.5
_ACTIONS = {
    news2.Risk.LOW_MEDIUM: "Called the GP surgery: urine sample sent, observations hourly.",
    news2.Risk.MEDIUM: "Called NHS 111; GP visit arranged, observations hourly.",
    news2.Risk.HIGH: "Called 999: ambulance requested, resident monitored until it arrived.",
}
#: Urine dipstick grades of the residents tested: mostly negative. Illustrative shares, not published ones
#: (a positive leukocyte or nitrite pad is common without infection in older people, one reason dipsticks
#: are not advised over 65 [U3]).
_DIPSTICK_GRADE_SHARES: dict[str, tuple[tuple[str, float], ...]] = {
    "leukocytes": (("negative", 0.6), ("trace", 0.14), ("+", 0.12), ("++", 0.09), ("+++", 0.05)),
    "blood": (("negative", 0.78), ("trace", 0.1), ("+", 0.07), ("++", 0.04), ("+++", 0.01)),
    "protein": (("negative", 0.72), ("trace", 0.15), ("+", 0.09), ("++", 0.03), ("+++", 0.01)),
}
_NITRITE_POSITIVE_SHARE = 0.12


@dataclass(frozen=True)
class BedRegistration:
    """A care home registers more beds `after` the start of the activity (its profile is published again);
    each new bed is taken by a resident from the waiting list a draw of `filled_within` after it."""

    after: timedelta
    registered_beds: int
    filled_within: tuple[timedelta, timedelta] = (timedelta(days=1), timedelta(days=14))


@dataclass(frozen=True)
class LocationProfile:
    """One location and how its care goes: the rates and shares the activity is drawn from.

    Defaults are typical of English care (cqc_domain.md §2.2 anchors, cited per field); the demo and test
    profiles move them to make a location good or poor on chosen indicators. Rates "per 1,000 days" are per
    resident-day in a bed; shares are probabilities per event of their kind.
    """

    location_id: str
    kind: Literal["care_home", "homecare"]
    people: int  # beds (care home) or clients (homecare agency)
    gateway_id: str = "gw-demo-1"
    #: The first people never leave (no discharge, no hospital): the live demo simulates their vital signs.
    permanent_people: int = 0
    #: The name in the location's published profile.
    name: str | None = None

    # Capacity (issue 11), published as the location's `events.LocationProfile`: a care home is registered
    # for `people` beds, then for those of each registration in turn; an agency states its commissioned hours.
    bed_registrations: tuple[BedRegistration, ...] = ()
    commissioned_hours_per_week: float | None = None

    # Occupancy (care homes)
    discharges_per_1000_days: float = 1.5
    vacancy_days: tuple[float, float] = (2.0, 10.0)
    hospital_days: tuple[float, float] = (2.0, 10.0)
    hospital_death_share: float = 0.15

    # Falls: 7.14 per 1,000 resident-days, 2.65 of them injurious [F1]; LFPSE harm levels [F5].
    falls_per_1000_days: float = 7.0
    fall_detector_share: float = 0.4
    false_fall_alerts_per_1000_days: float = 3.0
    fall_harm_shares: tuple[tuple[str, float], ...] = (("none", 0.63), ("low", 0.27), ("moderate", 0.08),
                                                        ("severe", 0.02))

    # Hydration: targets 1.6 L (women) and 2.0 L (men) unless a care plan says otherwise [H1-H3]; about 55 %
    # of resident-days meet them in UK homes [H4]. Daily consumption is drawn as a multiple of the target.
    care_plan_fluid_target_share: float = 0.15
    fluid_offered_vs_target: float = 1.3
    fluid_consumed_vs_target: float = 1.03
    fluid_consumed_vs_target_sd: float = 0.2
    smart_cup_share: float = 0.5

    # Call bells: practitioner target 3 min [B2], vendor average 8 min [B1]; lognormal response times.
    calls_per_resident_day: float = 1.5
    call_response_median_s: float = 150.0
    call_response_spread: float = 0.6
    #: Calls left 10-25 min (short staffing), on top of the usual spread.
    call_long_wait_share: float = 0.02
    call_emergency_share: float = 0.05
    call_unanswered_share: float = 0.002
    test_calls_per_week: int = 2

    # NEWS2 [N1]: residents whose usual SpO2 of 94-95 % scores 1 are monitored 6-hourly, others 12-hourly.
    low_baseline_spo2_share: float = 0.15
    deteriorations_per_1000_days: float = 8.0
    deterioration_risk_shares: tuple[tuple[str, float], ...] = (("low-medium", 0.3), ("medium", 0.4),
                                                                 ("high", 0.3))
    #: Of high-risk deteriorations: the 999 call ends in a hospital admission.
    hospital_transfer_share: float = 0.7
    observation_late_share: float = 0.05
    acknowledgement_late_share: float = 0.05

    # Urinalysis (issue 11): of the episodes reaching a risk the quality rules' urinalysis_pathway acts on,
    # the share tested (the rest never are), the test's delay after the episode reached that risk (lognormal:
    # median and spread, as call responses), and the share read by a smartphone reader rather than by eye.
    # 0 by default: dipstick tests are not advised over 65 (cqc_domain.md §2.2 row 13, [U3]).
    urinalysis_share: float = 0.0
    urinalysis_delay_median_h: float = 2.0
    urinalysis_delay_spread: float = 0.8
    smartphone_reader_share: float = 0.6

    # Homecare: 1 in 10 visits start more than 30 min late [V5]; NICE QS123 missed visits [V1].
    visits_per_client_day: tuple[int, ...] = (2, 3, 3, 4)
    medication_client_share: float = 0.7
    #: Clients on time-critical medicines (e.g. Parkinson's) have a time-critical dose at every visit [M1].
    time_critical_client_share: float = 0.1
    late_visit_share: float = 0.1
    missed_visit_share: float = 0.002
    provider_cancellation_share: float = 0.001
    client_cancellation_share: float = 0.02
    dose_refused_share: float = 0.02
    dose_not_done_share: float = 0.003
    forced_check_in_share: float = 0.03
    #: The agency's carers, each client's regular team, the share of visits that go to a regular carer when
    #: one is free, and the travel (minutes) a carer needs between two visits.
    carers: int = 15
    regular_carers_per_client: int = 3
    regular_carer_share: float = 0.9
    travel_min: tuple[float, float] = (5.0, 15.0)

    def __post_init__(self) -> None:
        if self.kind not in ("care_home", "homecare"):
            raise ValueError(f"{self.location_id}: kind must be care_home or homecare, not {self.kind!r}.")
        if not 0 <= self.permanent_people <= self.people:
            raise ValueError(f"{self.location_id}: permanent_people must be between 0 and people "
                             f"({self.people}).")
        for name in ("fall_harm_shares", "deterioration_risk_shares"):
            if not math.isclose(sum(share for _, share in getattr(self, name)), 1.0):
                raise ValueError(f"{self.location_id}: the shares in {name} must add up to 1.")
        if any(n not in _VISIT_PATTERNS for n in self.visits_per_client_day):
            raise ValueError(f"{self.location_id}: visits_per_client_day may only hold 1 to 4.")
        if not 1 <= self.regular_carers_per_client <= self.carers:
            raise ValueError(f"{self.location_id}: regular_carers_per_client must be between 1 and carers "
                             f"({self.carers}).")
        if self.kind == "homecare" and self.bed_registrations:
            raise ValueError(f"{self.location_id}: a homecare agency registers no beds.")
        if self.kind == "care_home" and self.commissioned_hours_per_week is not None:
            raise ValueError(f"{self.location_id}: commissioned_hours_per_week is for homecare agencies.")
        beds, after = self.people, timedelta(0)
        for registration in self.bed_registrations:
            if registration.registered_beds <= beds or registration.after <= after:
                raise ValueError(f"{self.location_id}: each bed registration must come later than the last and "
                                 f"add beds (to more than {beds}).")
            if not timedelta(0) <= registration.filled_within[0] <= registration.filled_within[1]:
                raise ValueError(f"{self.location_id}: filled_within must be (earliest, latest), from 0.")
            beds, after = registration.registered_beds, registration.after
        for name in ("urinalysis_share", "smartphone_reader_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{self.location_id}: {name} must be between 0 and 1.")
        if self.urinalysis_delay_median_h <= 0 or self.urinalysis_delay_spread < 0:
            raise ValueError(f"{self.location_id}: the urinalysis delay needs a median above 0 and a spread "
                             "of 0 or more.")


def person_id(location_id: str, serial: int) -> str:
    """A person's pseudonymous id, as `carepulse.simulation.CareHome` names its residents."""
    return f"res-{location_id[-7:]}-{serial:03d}"


#: The care history the demo publishes before it goes live: the 28-day regulator-facing windows
#: (cqc_domain.md §2.1) plus a week.
DEMO_HISTORY = timedelta(days=35)


def demo_profiles() -> list[LocationProfile]:
    """The demo's five locations, each designed to show particular colours (cqc_domain.md §2.2 thresholds)
    and capacity, over `DEMO_HISTORY` and then live.

    - oakwood: a good care home, mostly green; res-oakwood-001..005 stay (the live simulator's residents);
      nearly every amber NEWS2 episode has its urinalysis within the target;
    - willows: a care home red on falls (16 per 1,000 OBD against red > 8) and hydration (about a third of
      resident-days meet the target, red < 60 %); it registers 4 more beds a minute after the history
      ends, which residents from its waiting list take within minutes, so its capacity moves live;
    - larches: a small home (22 beds, under the 40 of §2.1) red on call bells (median 5.5 min, p90 over 10),
      and on urinalysis (a test for 70 % of amber episodes, a median of 4.5 h after the recommendation);
      it registers 2 more beds on the 12th day, filled within a week;
    - careway: a homecare agency red on missed visits, late visits and missed medication doses, and on
      continuity of carers (teams of 6 from 20 carers, half the visits to whoever is free: nearly every
      client sees more than 8 carers in 28 days) and travel (15-35 min between visits, a rural patch);
      commissioned for barely more hours than it plans, so it is nearly at capacity;
    - meadows: a small homecare agency, good on missed and late visits, with hours to spare.
    """
    return [
        LocationProfile(
            "loc-demo-oakwood", "care_home", 36, permanent_people=5, name="Oakwood House",
            falls_per_1000_days=3.0,
            fall_harm_shares=(("none", 0.72), ("low", 0.25), ("moderate", 0.025), ("severe", 0.005)),
            fluid_consumed_vs_target=1.2, fluid_consumed_vs_target_sd=0.13, call_response_median_s=95,
            call_long_wait_share=0.005, observation_late_share=0.03, acknowledgement_late_share=0.0,
            urinalysis_share=0.93, urinalysis_delay_median_h=2.0, urinalysis_delay_spread=0.6,
        ),
        LocationProfile(
            "loc-demo-willows", "care_home", 40, name="The Willows", falls_per_1000_days=16.0,
            fluid_offered_vs_target=1.35, fluid_consumed_vs_target=0.92, fluid_consumed_vs_target_sd=0.16,
            call_response_median_s=150, observation_late_share=0.12, acknowledgement_late_share=0.1,
            bed_registrations=(BedRegistration(DEMO_HISTORY + timedelta(minutes=1), 44,
                                               filled_within=(timedelta(minutes=1), timedelta(minutes=10))),),
            urinalysis_share=0.85, urinalysis_delay_median_h=3.0,
        ),
        LocationProfile(
            "loc-demo-larches", "care_home", 22, name="Larches Lodge", falls_per_1000_days=6.0,
            calls_per_resident_day=2.0, call_response_median_s=330, call_long_wait_share=0.05,
            deteriorations_per_1000_days=16.0, observation_late_share=0.2, acknowledgement_late_share=0.2,
            bed_registrations=(BedRegistration(timedelta(days=12), 24,
                                               filled_within=(timedelta(days=1), timedelta(days=7))),),
            urinalysis_share=0.7, urinalysis_delay_median_h=4.5, urinalysis_delay_spread=0.9,
        ),
        LocationProfile(
            "loc-demo-careway", "homecare", 36, name="Careway Homecare", late_visit_share=0.16,
            missed_visit_share=0.01, provider_cancellation_share=0.004, dose_not_done_share=0.02, carers=20,
            regular_carers_per_client=6, regular_carer_share=0.5, travel_min=(15.0, 35.0),
            # Its rosters plan about 440-446 hours a week.
            commissioned_hours_per_week=460.0,
        ),
        LocationProfile(
            "loc-demo-meadows", "homecare", 16, name="Meadows Care at Home", late_visit_share=0.03,
            missed_visit_share=0.0003, provider_cancellation_share=0.0003, carers=10, regular_carer_share=0.95,
            travel_min=(5.0, 12.0),
            # Its rosters plan about 180-185 hours a week.
            commissioned_hours_per_week=240.0,
        ),
    ]


def replay_profiles() -> list[LocationProfile]:
    """Three small locations for a 21-day end-to-end log: a good and a poor care home (18 and 17 beds, so
    each passes the 300 occupied bed days of §2.1 within 21 days) and a homecare agency of 10 clients with
    good continuity of carers (regular teams of 3 take 95 % of visits when free).

    Their residents are frailer than usual (20 deteriorations per 1,000 resident-days) so that escalation
    timeliness reaches its minimum of 5 triggers (§2.1) within 21 days."""
    return [
        LocationProfile(
            "loc-test-birches", "care_home", 18, gateway_id="gw-test-1", falls_per_1000_days=4.0,
            fluid_consumed_vs_target=1.2, fluid_consumed_vs_target_sd=0.13, call_response_median_s=100,
            call_long_wait_share=0.005, deteriorations_per_1000_days=20.0, observation_late_share=0.03,
            acknowledgement_late_share=0.0,
        ),
        LocationProfile(
            "loc-test-hollies", "care_home", 17, gateway_id="gw-test-1", falls_per_1000_days=15.0,
            fluid_consumed_vs_target=0.95, call_response_median_s=300, deteriorations_per_1000_days=20.0,
            observation_late_share=0.2, acknowledgement_late_share=0.25,
        ),
        LocationProfile("loc-test-homeway", "homecare", 10, gateway_id="gw-test-2", late_visit_share=0.06,
                        carers=12, regular_carer_share=0.95, travel_min=(3.0, 10.0)),
    ]


def bed_counts(profiles: Sequence[LocationProfile]) -> dict[str, int]:
    """Beds per care home, as `indicators.recompute.recompute` takes them (the small-home window of §2.1):
    the last registered."""
    return {p.location_id: p.bed_registrations[-1].registered_beds if p.bed_registrations else p.people
            for p in profiles if p.kind == "care_home"}


#: The topics carepulse is fed on, in the order they are tried.
_INPUT_TOPICS = (topics.RESIDENTS, topics.OBSERVATION_SETS, topics.CLINICAL_ACTIONS, topics.CARE_EVENTS,
                 topics.READINGS, topics.LOCATION_PROFILES)


def topic_and_key(event: events.Event) -> tuple[topics.TopicSpec, str]:
    """Where an input event is published and its message key (the field the topic is keyed by)."""
    for spec in _INPUT_TOPICS:
        if type(event) in spec.value_models:
            return spec, getattr(event, spec.key)
    raise ValueError(f"{type(event).__name__} is not an input event: the worker derives it from others, "
                     "so nothing publishes it from care activity.")


def delivery_with_faults(
    log: Sequence[events.Event], *, seed: int, duplicate_share: float = 0.03, late_share: float = 0.05,
    max_delay: timedelta = timedelta(hours=2),
) -> list[events.Event]:
    """The order a flaky network would deliver `log` in.

    Each event is delivered at its event time, except a `late_share` of them, held back by up to `max_delay`
    (so they arrive out of order, after later events); a `duplicate_share` are delivered a second time (the
    same event, same ``event_id``), never more than `max_delay` after their event time either. Seeded.
    """
    rng = random.Random(f"{seed}/delivery")
    max_delay_s = max_delay.total_seconds()
    deliveries: list[tuple[datetime, int, events.Event]] = []
    for index, event in enumerate(log):
        delay_s = rng.uniform(0, max_delay_s) if rng.random() < late_share else 0.0
        deliveries.append((event.occurred_at + timedelta(seconds=delay_s), index, event))
        if rng.random() < duplicate_share:
            again_s = rng.uniform(delay_s, max_delay_s)
            deliveries.append((event.occurred_at + timedelta(seconds=again_s), index, event))
    deliveries.sort(key=lambda delivery: (delivery[0], delivery[1]))
    return [event for _, _, event in deliveries]


# --- one step of one location ------------------------------------------------------------------------------

class _Step:
    """One simulated step of one location: its interval, its random source and the events it makes."""

    def __init__(self, seed: int, profile: LocationProfile, index: int, start: datetime) -> None:
        self.index = index
        self.start = start
        self.end = start + STEP
        self._profile = profile
        self._seed_name = f"{seed}/{profile.location_id}/{index}"
        self.rng = random.Random(self._seed_name)
        #: Who does each homecare visit is drawn apart, so rostering never shifts the other draws.
        self.carer_rng = self.rng_for("carers")
        self.events: list[events.Event] = []
        self._serials: Counter[str] = Counter()

    @functools.cached_property
    def urinalysis_rng(self) -> random.Random:
        """Urine tests are drawn apart too, so a location's urinalysis settings change nothing else."""
        return self.rng_for("urinalysis")

    def rng_for(self, stream: str) -> random.Random:
        """A random source of this step for one kind of draw, independent of `rng`."""
        return random.Random(f"{self._seed_name}/{stream}")

    def offsets_due(self, offsets: Sequence[timedelta]) -> list[tuple[int, datetime]]:
        """(position, instant) of the offsets from the activity's start that fall in this step."""
        activity_start = self.start - self.index * STEP
        return [(n, at) for n, offset in enumerate(offsets)
                if self.start <= (at := activity_start + offset) < self.end]

    def emit(self, model: type[events.Event], occurred_at: datetime, *, device_id: str | None = None,
             stream: str = "", **fields: object) -> None:
        """Make an event of this step. Its id is the next of its `stream`'s series: the events of features
        added later (``"profile"``, ``"urinalysis"``) are numbered apart, so they shift no other event's id."""
        serial, self._serials[stream] = self._serials[stream], self._serials[stream] + 1
        name = f"{self._seed_name}/{stream}/{serial}" if stream else f"{self._seed_name}/{serial}"
        event_id = uuid.uuid5(HISTORY_EVENT_NAMESPACE, name)
        self.events.append(model(
            event_id=event_id, occurred_at=occurred_at, received_at=occurred_at,
            source=events.Source(gateway_id=self._profile.gateway_id, device_id=device_id),
            location_id=self._profile.location_id, **fields,
        ))

    def moment(self, not_before: datetime | None = None) -> datetime:
        """A whole second within the step, not before `not_before`."""
        earliest = max(self.start, not_before) if not_before else self.start
        seconds_left = int((self.end - earliest).total_seconds())
        return earliest + timedelta(seconds=self.rng.randrange(max(1, seconds_left)))

    def local_times(self, clock: time) -> list[datetime]:
        """The instants in this step at which local clocks show `clock`."""
        return _local_times(self.start, self.end, clock)

    def poisson(self, mean: float) -> int:
        """A Poisson count (Knuth's method; the means here are small)."""
        limit, count, product = math.exp(-mean), 0, self.rng.random()
        while product > limit:
            count += 1
            product *= self.rng.random()
        return count

    def pick(self, shares: tuple[tuple[str, float], ...]) -> str:
        return _pick(self.rng, shares)

    def chance(self, share: float) -> bool:
        return self.rng.random() < share

    def activity(self) -> float:
        """How busy this hour of the day is, relative to the daily mean."""
        return _ACTIVITY_BY_HOUR[self.start.astimezone(CARE_TZ).hour]


def _pick(rng: random.Random, shares: tuple[tuple[str, float], ...]) -> str:
    """One of the names, drawn with its share."""
    names, weights = zip(*shares)
    return rng.choices(names, weights)[0]


def _publish_profile(step: _Step, profile: LocationProfile, at: datetime, *, registered_beds: int | None = None
                     ) -> None:
    """What the location is registered or commissioned for as of `at` (its provider's `events.LocationProfile`)."""
    step.emit(events.LocationProfile, at, stream="profile", setting=profile.kind, name=profile.name,
              registered_beds=registered_beds, commissioned_hours_per_week=profile.commissioned_hours_per_week)


# --- care homes -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Deterioration:
    """An illness: vital signs move from usual to worst between `onset_at` and `worst_at`, stay there until
    `recovery_from` and are back to usual at `recovered_at`."""

    risk: str
    onset_at: datetime
    worst_at: datetime
    recovery_from: datetime
    recovered_at: datetime

    def progress(self, at: datetime) -> float:
        if at < self.worst_at:
            return max(0.0, (at - self.onset_at) / (self.worst_at - self.onset_at))
        if at < self.recovery_from:
            return 1.0
        return max(0.0, (self.recovered_at - at) / (self.recovered_at - self.recovery_from))


@dataclass(eq=False)
class _Resident:
    resident_id: str
    room: int
    sex: str
    fluid_target_ml: int | None
    permanent: bool
    usual_vitals: dict[str, float]
    smart_cup: bool
    drink_delay_min: int
    intake_bias: float
    in_bed_since: datetime
    status: str = "admitted"
    intake_vs_target_today: float = 1.0
    deterioration: _Deterioration | None = None
    episode: escalation.Episode | None = None
    # The resident's agenda: what happens next, and when.
    observe_at: datetime | None = None
    acknowledge_at: datetime | None = None
    transfer_at: datetime | None = None
    return_at: datetime | None = None
    discharge_at: datetime | None = None
    urinalysis_at: datetime | None = None
    #: The episode the test at `urinalysis_at` answers.
    urinalysis_for: str | None = None
    #: The last episode the urinalysis pathway acted on (tested or not), and so will not act on again.
    urinalysis_episode_id: str | None = None


class _CareHome:
    def __init__(self, profile: LocationProfile, rules: escalation.EscalationRules,
                 urinalysis_risks: Sequence[str]) -> None:
        self.profile = profile
        self.rules = rules
        self.urinalysis_risks = frozenset(urinalysis_risks)
        self.short = profile.location_id[-7:]
        self.residents: list[_Resident] = []
        self.next_serial = 1
        self.admissions_at: list[tuple[datetime, int]] = []  # (when, room) of beds waiting for a new resident
        # What each entry of a resident's agenda does when its time comes.
        self._agenda: dict[str, Callable[[_Step, _Resident, datetime], None]] = {
            "observe_at": self._observe, "acknowledge_at": self._acknowledge, "transfer_at": self._transfer,
            "return_at": self._return, "discharge_at": self._discharge, "urinalysis_at": self._test_urine,
        }

    def run(self, step: _Step) -> None:
        if step.index == 0:
            _publish_profile(step, self.profile, step.start, registered_beds=self.profile.people)
            for room in range(1, self.profile.people + 1):
                self._admit(step, step.start, room)
        self._register_beds(step)
        for at, room in sorted(a for a in self.admissions_at if a[0] < step.end):
            self.admissions_at.remove((at, room))
            self._admit(step, at, room)
        if step.local_times(time(0)):
            for resident in self.residents:
                self._plan_drinking(step, resident)
        for resident in self._in_bed():
            self._maybe_fall_ill(step, resident)
            self._maybe_leave(step, resident)
        for resident in list(self.residents):
            self._run_agenda(step, resident)
        self._drinks(step)
        self._call_bells(step)
        self._falls(step)

    def _in_bed(self) -> list[_Resident]:
        return [r for r in self.residents if r.status == "admitted"]

    def _register_beds(self, step: _Step) -> None:
        """The bed registrations due in this step: the profile again, and a resident from the waiting list
        for each new bed."""
        registrations = self.profile.bed_registrations
        due = step.offsets_due([r.after for r in registrations])
        if not due:
            return
        rng = step.rng_for("profile")
        for n, at in due:
            registration = registrations[n]
            _publish_profile(step, self.profile, at, registered_beds=registration.registered_beds)
            earliest, latest = (bound.total_seconds() for bound in registration.filled_within)
            first_new_room = registrations[n - 1].registered_beds + 1 if n else self.profile.people + 1
            for room in range(first_new_room, registration.registered_beds + 1):
                self.admissions_at.append((at + timedelta(seconds=round(rng.uniform(earliest, latest))), room))

    def _carer(self, step: _Step) -> str:
        return f"carer-{self.short}-{step.rng.randint(1, 12):02d}"

    def _record(self, step: _Step, resident: _Resident, at: datetime, status: str) -> None:
        resident.status = status
        step.emit(events.ResidentRecord, at, resident_id=resident.resident_id, status=status,
                  sex=resident.sex, fluid_target_ml=resident.fluid_target_ml)

    # -- people coming and going ----------------------------------------------------------------------------
    def _admit(self, step: _Step, at: datetime, room: int) -> None:
        rng = step.rng
        serial, self.next_serial = self.next_serial, self.next_serial + 1
        usual_vitals = {
            "respiration_rate": rng.uniform(14, 18),
            "spo2": rng.uniform(94.6, 95.4) if rng.random() < self.profile.low_baseline_spo2_share
            else rng.uniform(97, 99),
            "systolic_bp": rng.uniform(120, 150),
            "pulse": rng.uniform(62, 82),
            "temperature": rng.uniform(36.4, 37.2),
        }
        care_plan = rng.random() < self.profile.care_plan_fluid_target_share
        resident = _Resident(
            resident_id=person_id(self.profile.location_id, serial), room=room,
            sex="female" if rng.random() < 0.7 else "male",
            fluid_target_ml=rng.choice((1200, 1500, 1800)) if care_plan else None,
            permanent=serial <= self.profile.permanent_people, usual_vitals=usual_vitals,
            smart_cup=rng.random() < self.profile.smart_cup_share,
            drink_delay_min=rng.randrange(0, _ROUND_TAKES_MIN, 5),
            intake_bias=rng.gauss(0, self.profile.fluid_consumed_vs_target_sd / 2), in_bed_since=at,
            observe_at=at + timedelta(minutes=rng.uniform(10, 720)),
        )
        self.residents.append(resident)
        self._plan_drinking(step, resident)
        self._record(step, resident, at, "admitted")

    def _plan_drinking(self, step: _Step, resident: _Resident) -> None:
        """How much of their target the resident will drink today."""
        drawn = step.rng.gauss(self.profile.fluid_consumed_vs_target + resident.intake_bias,
                               self.profile.fluid_consumed_vs_target_sd)
        resident.intake_vs_target_today = max(0.2, drawn)

    def _maybe_leave(self, step: _Step, resident: _Resident) -> None:
        if resident.permanent or resident.discharge_at:
            return
        if step.chance(self.profile.discharges_per_1000_days / 1000 / _STEPS_PER_DAY):
            resident.discharge_at = step.moment(resident.in_bed_since)

    def _discharge(self, step: _Step, resident: _Resident, at: datetime) -> None:
        self._record(step, resident, at, "discharged")
        self.residents.remove(resident)
        empty_for = timedelta(days=step.rng.uniform(*self.profile.vacancy_days))
        self.admissions_at.append((at + empty_for, resident.room))

    def _transfer(self, step: _Step, resident: _Resident, at: datetime) -> None:
        resident.observe_at = resident.deterioration = resident.discharge_at = resident.urinalysis_at = None
        self._record(step, resident, at, "in_hospital")
        resident.return_at = at + timedelta(days=step.rng.uniform(*self.profile.hospital_days))

    def _return(self, step: _Step, resident: _Resident, at: datetime) -> None:
        resident.return_at = None
        if step.chance(self.profile.hospital_death_share):
            self._discharge(step, resident, at)
            return
        self._record(step, resident, at, "admitted")
        resident.in_bed_since = at
        resident.observe_at = at + timedelta(minutes=step.rng.uniform(30, 180))

    # -- NEWS2: illness, observations and escalations ------------------------------------------------------
    def _maybe_fall_ill(self, step: _Step, resident: _Resident) -> None:
        if resident.deterioration or not step.chance(
                self.profile.deteriorations_per_1000_days / 1000 / _STEPS_PER_DAY):
            return
        rng = step.rng
        onset_at = step.moment(resident.in_bed_since)
        worst_at = onset_at + timedelta(hours=rng.uniform(4, 16))
        recovery_from = worst_at + timedelta(hours=rng.uniform(4, 24))
        resident.deterioration = _Deterioration(
            risk=step.pick(self.profile.deterioration_risk_shares), onset_at=onset_at, worst_at=worst_at,
            recovery_from=recovery_from, recovered_at=recovery_from + timedelta(hours=rng.uniform(24, 72)),
        )
        # Soft signs (RESTORE2 [N4]) prompt a set before the next one is due.
        noticed_at = onset_at + (worst_at - onset_at) * rng.uniform(0.5, 0.8)
        resident.observe_at = min(resident.observe_at or noticed_at, noticed_at)

    def _observe(self, step: _Step, resident: _Resident, at: datetime) -> None:
        rng = step.rng
        illness = resident.deterioration
        progress = illness.progress(at) if illness else 0.0
        change, consciousness = _PEAK_CHANGE[illness.risk] if illness else ({}, "A")
        vitals = {name: usual + change.get(name, 0.0) * progress
                  for name, usual in resident.usual_vitals.items()}
        observed = dict(
            respiration_rate=round(vitals["respiration_rate"] + rng.uniform(-1, 1)),
            spo2=min(100, round(vitals["spo2"] + rng.uniform(-0.6, 0.6))),
            spo2_scale=1,
            on_oxygen=False,
            systolic_bp=round(vitals["systolic_bp"] + rng.uniform(-6, 6)),
            pulse=round(vitals["pulse"] + rng.uniform(-4, 4)),
            consciousness=consciousness if progress >= _CONSCIOUSNESS_CHANGES_AT else "A",
            temperature=round(vitals["temperature"] + rng.uniform(-0.2, 0.2), 1),
        )
        step.emit(events.ObservationSet, at, device_id=f"obs-tablet-{self.short}",
                  resident_id=resident.resident_id, **observed)
        result = news2.score(news2.ObservationSet(**observed))
        set_id = str(step.events[-1].event_id)
        facts = escalation.ScoreFacts(risk=result.risk, total=result.total, any_single_3=result.any_single_3,
                                      occurred_at=at, score_event_id=set_id, complete=True)
        # The episode is named as the worker names the one a complete set raises, so a urinalysis result can
        # name the episode it answers, as the tablet shows it.
        episode_id = str(events.episode_id_raised_by(events.news2_score_id(set_id)))
        resident.episode, transitions = escalation.on_score(resident.episode, facts, self.rules, episode_id)
        for transition in transitions:
            self._plan_urinalysis(step, resident, transition)
            if transition.status == "resolved":
                resident.acknowledge_at = None
            else:  # raised or upgraded: the band needs its own acknowledgement by its deadline
                deadline_s = self.rules.deadline_s[transition.episode.risk]
                late = step.chance(self.profile.acknowledgement_late_share)
                # In time is well before the deadline, and before the next hourly set could upgrade the band
                # (an acknowledgement made after an upgrade answers only the worse band).
                delay_s = deadline_s * (rng.uniform(1.1, 2.5) if late else rng.uniform(0.1, 0.6))
                resident.acknowledge_at = at + timedelta(seconds=round(delay_s))
        if illness and at >= illness.recovered_at:
            resident.deterioration = None
        watchful = illness is not None and progress > 0 and at < illness.recovery_from
        resident.observe_at = at + self._until_next_set(step, result.monitoring_interval_minutes, watchful)

    def _until_next_set(self, step: _Step, interval_min: int | None, watchful: bool) -> timedelta:
        """When the next set is taken: before the interval the score set [N1], or after it for a late share.
        Continuous monitoring (NEWS2 >= 7) is approximated by a set every 15-30 minutes; while a resident
        shows soft signs of getting worse, staff repeat the set within 2 hours (RESTORE2 [N4])."""
        rng = step.rng
        if interval_min is None:
            return timedelta(minutes=rng.uniform(15, 30))
        if watchful and interval_min > _WATCHFUL_INTERVAL_MIN:
            return timedelta(minutes=_WATCHFUL_INTERVAL_MIN * rng.uniform(0.5, 1.0))
        late = step.chance(self.profile.observation_late_share)
        return timedelta(minutes=interval_min * (rng.uniform(1.05, 1.5) if late else rng.uniform(0.7, 0.98)))

    def _acknowledge(self, step: _Step, resident: _Resident, at: datetime) -> None:
        resident.acknowledge_at = None
        nurse = f"nurse-{self.short}-{step.rng.randint(1, 4)}"
        resident.episode, transitions = escalation.on_acknowledgement(resident.episode, at, nurse)
        if not transitions:
            return
        risk = resident.episode.risk
        step.emit(events.EscalationAcknowledgement, at, device_id=f"obs-tablet-{self.short}",
                  resident_id=resident.resident_id, acknowledged_by=nurse, action=_ACTIONS[risk])
        if (risk is news2.Risk.HIGH and resident.status == "admitted" and not resident.permanent
                and step.chance(self.profile.hospital_transfer_share)):
            resident.transfer_at = at + timedelta(minutes=step.rng.uniform(40, 120))

    def _plan_urinalysis(self, step: _Step, resident: _Resident, transition: escalation.Transition) -> None:
        """When an episode first reaches a risk the urinalysis pathway acts on (the quality rules'
        ``recommend_at_risks``), staff test the resident's urine for `urinalysis_share` of such episodes, after
        a lognormal delay; an upgrade to high risk replaces the test with the emergency response."""
        episode, p = transition.episode, self.profile
        if transition.status == "resolved" or not p.urinalysis_share:
            return
        if episode.risk is news2.Risk.HIGH:
            resident.urinalysis_at = None
            return
        if episode.risk.value not in self.urinalysis_risks or resident.urinalysis_episode_id == episode.episode_id:
            return
        resident.urinalysis_episode_id = episode.episode_id
        rng = step.urinalysis_rng
        if rng.random() < p.urinalysis_share:
            delay_h = rng.lognormvariate(math.log(p.urinalysis_delay_median_h), p.urinalysis_delay_spread)
            resident.urinalysis_at = transition.at + timedelta(seconds=round(delay_h * 3600))
            resident.urinalysis_for = episode.episode_id

    def _test_urine(self, step: _Step, resident: _Resident, at: datetime) -> None:
        """A urine dipstick read by a smartphone reader (whose app is opened from the recommendation, so the
        result names its episode) or by eye and typed in (the worker links it to the open recommendation)."""
        rng = step.urinalysis_rng
        grades = {pad: _pick(rng, shares) for pad, shares in _DIPSTICK_GRADE_SHARES.items()}
        by_reader = rng.random() < self.profile.smartphone_reader_share
        step.emit(events.UrinalysisResult, at, stream="urinalysis",
                  device_id=f"dipstick-reader-{self.short}" if by_reader else f"tablet-{self.short}",
                  resident_id=resident.resident_id, recorded_by=f"carer-{self.short}-{rng.randint(1, 12):02d}",
                  reader="smartphone_reader" if by_reader else "visual",
                  nitrites="positive" if rng.random() < _NITRITE_POSITIVE_SHARE else "negative",
                  episode_id=uuid.UUID(resident.urinalysis_for) if by_reader else None, **grades)

    def _run_agenda(self, step: _Step, resident: _Resident) -> None:
        """Everything due for the resident before the step ends, in time order."""
        while resident in self.residents:
            due = [(at, name) for name in self._agenda
                   if (at := getattr(resident, name)) is not None and at < step.end]
            if not due:
                return
            at, name = min(due)
            setattr(resident, name, None)
            self._agenda[name](step, resident, at)

    # -- drinks, call bells, falls ------------------------------------------------------------------------
    def _drinks(self, step: _Step) -> None:
        """A drink per resident per round, consumed as the day's plan says (offered the same every day)."""
        p = self.profile
        rounds = _rounds_reaching(step)
        for resident in self._in_bed() if rounds else ():
            for round_at in rounds:
                reaches_at = round_at + timedelta(minutes=resident.drink_delay_min)
                if not step.start <= reaches_at < step.end:
                    continue
                at = step.moment(max(reaches_at, resident.in_bed_since))
                target_ml = resident.fluid_target_ml or (1600 if resident.sex == "female" else 2000)
                offered_ml = round(target_ml * p.fluid_offered_vs_target / len(_DRINK_ROUNDS)
                                   * step.rng.uniform(0.85, 1.15), -1)
                share_drunk = (resident.intake_vs_target_today / p.fluid_offered_vs_target
                               * step.rng.uniform(0.8, 1.2))
                consumed_ml = round(offered_ml * min(1.0, share_drunk) / 5) * 5
                if resident.smart_cup:
                    cup = f"cup-{self.short}-{resident.room:02d}"
                    device, method, recorded_by = cup, "smart_cup", cup
                else:
                    device, method, recorded_by = f"tablet-{self.short}", "carer", self._carer(step)
                step.emit(events.FluidIntake, at, device_id=device, resident_id=resident.resident_id,
                          offered_ml=offered_ml, consumed_ml=consumed_ml, method=method,
                          recorded_by=recorded_by)

    def _response_s(self, step: _Step, priority: str) -> int:
        p = self.profile
        if step.chance(p.call_long_wait_share):
            return step.rng.randint(600, 1500)
        median_s = p.call_response_median_s * (0.5 if priority == "emergency" else 1.0)
        return max(5, round(step.rng.lognormvariate(math.log(median_s), p.call_response_spread)))

    def _call(self, step: _Step, raised_at: datetime, call_id: str, *, resident: _Resident | None,
              priority: str, call_type: str, response_s: int | None) -> None:
        common = dict(call_id=call_id, priority=priority, call_type=call_type,
                      resident_id=resident.resident_id if resident else None)
        device = f"bell-{self.short}-{resident.room:02d}" if resident else f"bell-{self.short}-test"
        step.emit(events.CallBell, raised_at, device_id=device, phase="raised", **common)
        if response_s is not None:
            step.emit(events.CallBell, raised_at + timedelta(seconds=response_s), device_id=device,
                      phase="answered", answered_by=self._carer(step), **common)

    def _call_bells(self, step: _Step) -> None:
        p = self.profile
        in_bed = self._in_bed()
        count = step.poisson(len(in_bed) * p.calls_per_resident_day / _STEPS_PER_DAY * step.activity())
        for n in range(count if in_bed else 0):
            resident = step.rng.choice(in_bed)
            priority = "emergency" if step.chance(p.call_emergency_share) else "routine"
            call_type = "pull_cord" if priority == "emergency" else step.rng.choice(("call_point", "pendant"))
            unanswered = step.chance(p.call_unanswered_share)
            self._call(step, step.moment(resident.in_bed_since), f"call-{self.short}-{step.index}-{n}",
                       resident=resident, priority=priority, call_type=call_type,
                       response_s=None if unanswered else self._response_s(step, priority))
        # The weekly test of the system: a few call points on Monday morning, answered by maintenance.
        mondays_at_ten = [t for t in step.local_times(time(10, 0)) if t.weekday() == 0]
        for at in mondays_at_ten:
            for n in range(p.test_calls_per_week):
                self._call(step, at + timedelta(minutes=2 * n), f"test-{self.short}-{step.index}-{n}",
                           resident=None, priority="routine", call_type="test",
                           response_s=step.rng.randint(20, 90))

    def _falls(self, step: _Step) -> None:
        p = self.profile
        in_bed = self._in_bed()
        per_step = len(in_bed) / 1000 / _STEPS_PER_DAY * step.activity()
        falls = step.poisson(per_step * p.falls_per_1000_days)
        false_alerts = step.poisson(per_step * p.false_fall_alerts_per_1000_days)
        for n in range(falls + false_alerts if in_bed else 0):
            resident = step.rng.choice(in_bed)
            at = step.moment(resident.in_bed_since)
            harm = step.pick(p.fall_harm_shares)
            carer = self._carer(step)
            if n >= falls or step.chance(p.fall_detector_share):
                alert_id = f"alert-{self.short}-{step.index}-{n}"
                detector = f"falldet-{self.short}-{resident.room:02d}"
                step.emit(events.Fall, at, device_id=detector, resident_id=resident.resident_id,
                          detected_by="device", confirmed=False, alert_id=alert_id, recorded_by=detector)
                response_s = self._response_s(step, "emergency")
                self._call(step, at, f"fall-{self.short}-{step.index}-{n}", resident=resident,
                           priority="emergency", call_type="fall_detector", response_s=response_s)
                if n >= falls:
                    continue  # a false alert: staff find the resident has not fallen
                confirmed_at = at + timedelta(seconds=response_s + step.rng.randint(60, 300))
                step.emit(events.Fall, confirmed_at, device_id=f"tablet-{self.short}",
                          resident_id=resident.resident_id, detected_by="device", confirmed=True, harm=harm,
                          alert_id=alert_id, recorded_by=carer)
            else:
                step.emit(events.Fall, at, device_id=f"tablet-{self.short}", resident_id=resident.resident_id,
                          detected_by="staff", confirmed=True, harm=harm, recorded_by=carer)
            if harm in ("severe", "fatal") and not resident.permanent and resident.transfer_at is None:
                resident.transfer_at = at + timedelta(minutes=step.rng.uniform(60, 180))


def _local_times(start: datetime, end: datetime, clock: time) -> list[datetime]:
    """The instants in [start, end) at which local clocks show `clock`, in UTC."""
    days = {_local_date(start), _local_date(end)}
    return sorted(t for day in days if start <= (t := _instant(day, clock)) < end)


def _local_date(at: datetime) -> date:
    return at.astimezone(CARE_TZ).date()


def _instant(day: date, clock: time) -> datetime:
    """The UTC instant of a local date and time. Generated times stay in UTC: arithmetic on datetimes in a
    zone with summer time is wall-clock arithmetic, wrong across the clock changes."""
    return datetime.combine(day, clock, tzinfo=CARE_TZ).astimezone(timezone.utc)


def _rounds_reaching(step: _Step) -> list[datetime]:
    """The drink rounds that may reach a resident in this step (rounds take up to `_ROUND_TAKES_MIN`)."""
    since = step.start - timedelta(minutes=_ROUND_TAKES_MIN)
    return [t for clock in _DRINK_ROUNDS for t in _local_times(since, step.end, clock)]


# --- homecare ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _VisitSlot:
    clock: time
    minutes: int
    tasks: tuple[str, ...]
    time_critical: bool


@dataclass(frozen=True)
class _Client:
    resident_id: str
    serial: int
    slots: tuple[_VisitSlot, ...]
    regular_carers: tuple[str, ...]


@dataclass(frozen=True)
class _Delivery:
    """A visit that took place, waiting for its carer (the day's visits are given carers in arrival order)."""

    client: _Client
    visit_id: str
    arrived_at: datetime
    left_at: datetime
    verification: str
    outcomes: tuple[events.TaskOutcome, ...]


@dataclass
class _Homecare:
    profile: LocationProfile
    clients: list[_Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.short = self.profile.location_id[-7:]

    def run(self, step: _Step) -> None:
        if step.index == 0:
            _publish_profile(step, self.profile, step.start)
            for serial in range(1, self.profile.people + 1):
                self._take_on(step, serial)
        for published_at, day in self._rosters_due(step):
            deliveries = [delivery for client in self.clients for number, slot in enumerate(client.slots)
                          if (delivery := self._visit(step, client, number, slot, day, published_at))]
            self._deliver(step, deliveries)

    def _carer_id(self, number: int) -> str:
        return f"carer-{self.short}-{number:02d}"

    def _take_on(self, step: _Step, serial: int) -> None:
        p, rng = self.profile, step.rng
        on_medicines = rng.random() < p.medication_client_share
        time_critical = on_medicines and rng.random() < p.time_critical_client_share
        shift = timedelta(minutes=rng.choice((-30, -15, 0, 15, 30)))
        slots = []
        for clock, minutes, when in _VISIT_PATTERNS[rng.choice(p.visits_per_client_day)]:
            dose = time_critical or (on_medicines and when in _ROUTINE_DOSE_VISITS)
            clock = (datetime.combine(date.min, clock) + shift).time()  # a time of day moved by `shift`
            slots.append(_VisitSlot(clock, minutes, _TASKS_BY_VISIT[when] + (("medication",) if dose else ()),
                                    time_critical))
        team = step.carer_rng.sample(range(1, p.carers + 1), p.regular_carers_per_client)
        client = _Client(person_id(p.location_id, serial), serial, tuple(slots),
                         tuple(self._carer_id(n) for n in sorted(team)))
        self.clients.append(client)
        # No sex and no fluid target: an agency does not record the drinks of the people it visits, so no
        # daily fluid target applies (cqc_domain.md §2.2 row 4 counts care-home resident-days).
        step.emit(events.ResidentRecord, step.start, resident_id=client.resident_id, status="admitted")

    def _rosters_due(self, step: _Step) -> list[tuple[datetime, date]]:
        """(publication time, day) of the rosters published in this step: each evening for the next day, and
        at the very start for the day under way (and the next, if its evening publication has passed)."""
        due = [(at + timedelta(minutes=step.rng.uniform(0, 14)), _local_date(at) + timedelta(days=1))
               for at in step.local_times(_ROSTER_PUBLISHED_AT)]
        if step.index == 0:
            today = _local_date(step.start)
            due.insert(0, (step.start, today))
            if step.start.astimezone(CARE_TZ).time() > _ROSTER_PUBLISHED_AT:
                due.insert(1, (step.start, today + timedelta(days=1)))
        return due

    def _visit(self, step: _Step, client: _Client, number: int, slot: _VisitSlot, day: date,
               published_at: datetime) -> _Delivery | None:
        """One rostered visit and everything that becomes of it; a delivered visit is returned for its carer."""
        p, rng = self.profile, step.rng
        planned_start = _instant(day, slot.clock)
        if planned_start < published_at + timedelta(minutes=30):
            return None  # already under way when the history starts
        visit_id = f"visit-{self.short}-{day:%Y%m%d}-{client.serial:03d}-{number}"
        tasks = [events.VisitTask(task_id=f"{visit_id}-{kind}", kind=kind,
                                  time_critical=slot.time_critical and kind == "medication")
                 for kind in slot.tasks]
        person = dict(resident_id=client.resident_id, visit_id=visit_id)
        step.emit(events.VisitPlanned, published_at, planned_start=planned_start,
                  planned_end=planned_start + timedelta(minutes=slot.minutes),
                  time_critical=slot.time_critical, tasks=tasks, **person)
        fate = rng.random()
        if fate < p.client_cancellation_share:
            cancelled_at = published_at + (planned_start - published_at) * rng.uniform(0.2, 0.8)
            step.emit(events.VisitCancelled, cancelled_at, by_client_in_advance=True, **person)
            return None
        fate -= p.client_cancellation_share
        if fate < p.provider_cancellation_share:
            cancelled_at = max(published_at, planned_start - timedelta(minutes=rng.uniform(30, 120)))
            step.emit(events.VisitCancelled, cancelled_at, by_client_in_advance=False, **person)
            return None
        fate -= p.provider_cancellation_share
        if fate < p.missed_visit_share:
            return None  # nobody came
        late = rng.random() < p.late_visit_share
        lateness_min = rng.uniform(31, 90) if late else min(29.0, max(-15.0, rng.gauss(4, 8)))
        arrived_at = planned_start + timedelta(seconds=round(lateness_min * 60))
        forced = rng.random() < p.forced_check_in_share
        verification = "forced" if forced else rng.choice(("gps", "gps", "qr", "otp"))
        outcomes = tuple(events.TaskOutcome(task_id=task.task_id, outcome=self._outcome(rng, task.kind))
                         for task in tasks)
        left_at = arrived_at + timedelta(seconds=round(slot.minutes * 60 * rng.uniform(0.8, 1.1)))
        return _Delivery(client, visit_id, arrived_at, left_at, verification, outcomes)

    def _deliver(self, step: _Step, deliveries: list[_Delivery]) -> None:
        """One day's visits, in arrival order, each to a carer free in time for it: a regular carer of the
        client's for `regular_carer_share` of visits when one is free, else any free carer of the agency,
        else cover staff (numbered after the agency's carers). A carer is free for a visit when their last
        visit ended at least a draw of `travel_min` before it; of the free carers, one whose last visit ended
        latest takes it, as a run would. Then the visit's check-in and check-out are emitted."""
        p, rng = self.profile, step.carer_rng
        free_from: dict[str, datetime] = {}  # when each carer working today left their last visit
        not_yet = datetime.min.replace(tzinfo=timezone.utc)
        for d in sorted(deliveries, key=lambda d: (d.arrived_at, d.visit_id)):
            # Free in time: not yet working today, or left their last visit at least the travel before.
            free_by = d.arrived_at - timedelta(minutes=rng.uniform(*p.travel_min))
            regulars = [c for c in d.client.regular_carers if free_from.get(c, not_yet) <= free_by]
            agency = [c for c in map(self._carer_id, range(1, p.carers + 1)) if free_from.get(c, not_yet) <= free_by]
            candidates = regulars if regulars and rng.random() < p.regular_carer_share else agency
            if candidates:
                latest = max(free_from.get(c, not_yet) for c in candidates)
                carer = rng.choice([c for c in candidates if free_from.get(c, not_yet) == latest])
            else:
                carer = next(c for n in itertools.count(p.carers + 1)
                             if free_from.get(c := self._carer_id(n), not_yet) <= free_by)
            free_from[carer] = d.left_at
            phone = f"phone-{carer}"
            person = {"resident_id": d.client.resident_id, "visit_id": d.visit_id}
            step.emit(events.VisitCheckIn, d.arrived_at, device_id=phone, carer_id=carer,
                      verification=d.verification, **person)
            step.emit(events.VisitCheckOut, d.left_at, device_id=phone, carer_id=carer,
                      task_outcomes=list(d.outcomes), **person)

    def _outcome(self, rng: random.Random, kind: str) -> str:
        """The eMAR code of a dose (cqc_domain.md §2.2 row 11, [M3]), or whether another task was done."""
        p, draw = self.profile, rng.random()
        if kind == "medication":
            if draw < p.dose_refused_share:
                return "refused"
            return "not_done" if draw < p.dose_refused_share + p.dose_not_done_share else "done"
        return "not_done" if draw < _OTHER_TASK_NOT_DONE_SHARE else "done"


# --- the activity -----------------------------------------------------------------------------------------

class CareActivity:
    """The care activity of several locations from `start`, revealed a stretch at a time by `advance`."""

    def __init__(self, profiles: Sequence[LocationProfile], *, start: datetime, seed: int) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (event times are instants).")
        ids = [p.location_id for p in profiles]
        if len(set(ids)) != len(ids):
            raise ValueError("Each location may appear once in the profiles.")
        rules = escalation.load_rules()
        urinalysis_risks = quality.packaged_rules().urinalysis_pathway.recommend_at_risks
        self._seed = seed
        self._start = start.astimezone(timezone.utc)
        self._cursor = self._start
        self._steps_done = 0
        self._locations = [_CareHome(p, rules, urinalysis_risks) if p.kind == "care_home" else _Homecare(p)
                           for p in profiles]
        # Events generated but not yet due: (occurred_at, event id, event), earliest first.
        self._pending: list[tuple[datetime, str, events.Event]] = []

    @property
    def cursor(self) -> datetime:
        """Everything before this instant has been returned."""
        return self._cursor

    def advance(self, until: datetime) -> list[events.Event]:
        """Every event with occurred_at in [cursor, until), sorted by occurred_at (then event id); moves the
        cursor to `until`."""
        if until < self._cursor:
            raise ValueError(f"The activity is already at {self._cursor.isoformat()}; it cannot go back to "
                             f"{until.isoformat()}.")
        until = until.astimezone(timezone.utc)
        while (step_start := self._start + self._steps_done * STEP) < until:
            for location in self._locations:
                step = _Step(self._seed, location.profile, self._steps_done, step_start)
                location.run(step)
                for event in step.events:
                    heapq.heappush(self._pending, (event.occurred_at, str(event.event_id), event))
            self._steps_done += 1
        due = []
        while self._pending and self._pending[0][0] < until:
            due.append(heapq.heappop(self._pending)[2])
        self._cursor = until
        return due
