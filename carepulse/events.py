"""Event contracts: every message on every carepulse topic is one of these pydantic models.

Each event carries ``event_id`` (a UUID: consumers deduplicate on it), ``schema_version``,
``occurred_at`` (timezone-aware *event* time: when it happened in the care home), ``received_at``
(when carepulse first saw it), ``source`` (gateway and device) and ``location_id``. Events about a
person carry a pseudonymous ``resident_id``; identifiers that look like an NHS number are refused,
so a misconfigured integration cannot put a real identifier on the wire (cqc_domain.md §5).

JSON Schemas generated from these models are committed under ``docs/schemas/``
(``carepulse schemas --write``); a test keeps them in sync.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

SCHEMA_VERSION = 1

#: Namespace for deterministic ids of derived events: a re-processed input yields the same output id,
#: so duplicates caused by at-least-once processing are recognisable downstream.
DERIVED_EVENT_NAMESPACE = uuid.UUID("6f1c2a3e-9b7d-4e0a-8c55-2f4d1e7a9b10")

_NHS_NUMBER = re.compile(r"^\d{3}[ -]?\d{3}[ -]?\d{4}$")


def _pseudonymous(value: str) -> str:
    if _NHS_NUMBER.match(value):
        raise ValueError("resident_id must be a pseudonymous id; this value looks like an NHS number")
    return value


Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
ResidentId = Annotated[Identifier, AfterValidator(_pseudonymous)]
Consciousness = Literal["A", "C", "V", "P", "U"]
RiskLevel = Literal["low", "low-medium", "medium", "high"]
EscalationRisk = Literal["low-medium", "medium", "high"]
#: The instants an event may carry. Far outside them a timestamp is a corrupt field or a device clock reset,
#: not care; and arithmetic near year 1 or 9999 (a day boundary, a deadline) would overflow downstream.
EARLIEST_INSTANT = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=timezone.utc)


def _plausible_instant(value: datetime) -> datetime:
    if not EARLIEST_INSTANT <= value < LATEST_INSTANT:
        raise ValueError(f"must be between {EARLIEST_INSTANT:%Y} and {LATEST_INSTANT:%Y}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_plausible_instant)]
# Finite numbers only: NaN or infinity in a vital sign is a device fault, not a value to score.
Measurement = Annotated[float, Field(allow_inf_nan=False)]


def derived_event_id(kind: str, *parts: object) -> uuid.UUID:
    """The id of an event derived from others, stable across re-processing of the same inputs."""
    return uuid.uuid5(DERIVED_EVENT_NAMESPACE, ":".join([kind, *map(str, parts)]))


def news2_score_id(observation_set_id: uuid.UUID | str) -> uuid.UUID:
    """The id of the NEWS2 result of an observation set (one result per set, however often it is scored)."""
    return derived_event_id("news2-score", observation_set_id)


def episode_id_raised_by(score_event_id: uuid.UUID | str) -> uuid.UUID:
    """The id of the escalation episode a NEWS2 result opens, so a tablet or a simulator can name it too."""
    return derived_event_id("episode", score_event_id)


def utc_now() -> datetime:
    """Wall-clock time for ``received_at`` stamps (adapters only; pure code takes time as a parameter)."""
    return datetime.now(timezone.utc)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: Identifier
    device_id: Identifier | None = None


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: Instant
    received_at: Instant
    source: Source
    location_id: Identifier


class ResidentEvent(Event):
    """An event about one person (keyed by ``resident_id`` on its topic)."""

    resident_id: ResidentId


class DeviceReading(ResidentEvent):
    """A decoded measurement from a Bluetooth health device or BTHome sensor."""

    event_type: Literal["device_reading"] = "device_reading"
    characteristic: Identifier
    values: dict[str, float | int | str | bool | None | list[float] | list[str]]


class ManualObservation(ResidentEvent):
    """Observations entered by a carer on the tablet (the parameters devices cannot measure)."""

    event_type: Literal["manual_observation"] = "manual_observation"
    recorded_by: Identifier
    respiration_rate: Measurement | None = None
    consciousness: Consciousness | None = None
    on_oxygen: bool | None = None
    spo2: Measurement | None = None
    systolic_bp: Measurement | None = None
    pulse: Measurement | None = None
    temperature: Measurement | None = None


class ObservationSet(ResidentEvent):
    """One NEWS2 observation set: the seven parameters taken together for one resident.

    ``spo2_scale`` is 2 only where a clinician prescribed an 88–92 % target (news2.md §1a).
    """

    event_type: Literal["observation_set"] = "observation_set"
    respiration_rate: Measurement | None = None
    spo2: Measurement | None = None
    spo2_scale: Literal[1, 2] = 1
    on_oxygen: bool | None = None
    systolic_bp: Measurement | None = None
    pulse: Measurement | None = None
    consciousness: Consciousness | None = None
    temperature: Measurement | None = None
    contributing_event_ids: list[uuid.UUID] = Field(default_factory=list)
    late: bool = Field(default=False, description="Readings that arrived after the allowed lateness, scored on their own.")


class News2Scored(ResidentEvent):
    """The NEWS2 result for one observation set; incomplete sets carry the partial scores and what is missing."""

    event_type: Literal["news2_score"] = "news2_score"
    observation_set_id: uuid.UUID
    complete: bool
    parameter_scores: dict[str, int]
    missing: list[str] = Field(default_factory=list)
    any_single_3: bool
    total: int | None = None
    risk: RiskLevel | None = None
    monitoring: str | None = None
    monitoring_interval_minutes: int | None = None
    response: str | None = None
    rules_version: str
    late: bool = False


class Scale2Prescription(BaseModel):
    """A clinician's prescription of an 88–92 % SpO2 target: the only reason to score on Scale 2 (news2.md §1a)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prescribed_by: Identifier
    prescribed_at: Instant


class ResidentRecord(ResidentEvent):
    """The latest known context of a resident (compacted ``residents`` topic, keyed by resident).

    ``status`` drives occupancy: a resident ``in_hospital`` keeps the bed but is not an occupied bed day.
    """

    event_type: Literal["resident"] = "resident"
    status: Literal["admitted", "in_hospital", "discharged"]
    scale2_prescription: Scale2Prescription | None = None
    sex: Literal["female", "male"] | None = None
    fluid_target_ml: Annotated[int, Field(gt=0, le=6000)] | None = None


class Escalation(ResidentEvent):
    """A change in a NEWS2 escalation episode: raised, upgraded (e.g. amber to red), acknowledged, resolved.

    One episode per deterioration: a worse score within an open episode upgrades it instead of opening another.
    """

    event_type: Literal["escalation"] = "escalation"
    episode_id: uuid.UUID
    status: Literal["raised", "upgraded", "acknowledged", "resolved"] = "raised"
    risk: EscalationRisk
    total: int | None
    any_single_3: bool
    score_event_id: uuid.UUID | None = None
    response: str
    rules_version: str
    raised_at: Instant | None = None
    deadline_at: Instant | None = None
    acknowledged_by: Identifier | None = None
    acknowledged_at: Instant | None = None
    resolution: str | None = None


class EscalationOverdue(ResidentEvent):
    """An escalation not acknowledged by its band's response deadline."""

    event_type: Literal["escalation_overdue"] = "escalation_overdue"
    episode_id: uuid.UUID
    risk: EscalationRisk
    raised_at: Instant
    deadline_at: Instant


class ObservationOverdue(ResidentEvent):
    """The next NEWS2 observation set was not taken by the time the monitoring frequency required."""

    event_type: Literal["observation_overdue"] = "observation_overdue"
    last_score_event_id: uuid.UUID
    last_scored_at: Instant
    due_at: Instant
    monitoring: str


class EscalationAcknowledgement(ResidentEvent):
    """Staff acknowledged the resident's open escalation and say what they did (e.g. called the GP, 999)."""

    event_type: Literal["escalation_acknowledgement"] = "escalation_acknowledgement"
    acknowledged_by: Identifier
    action: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    episode_id: uuid.UUID | None = Field(default=None, description="Omitted: the resident's open episode.")


class ClinicalReview(ResidentEvent):
    """A clinical review was recorded for the resident; it resolves the open escalation episode."""

    event_type: Literal["clinical_review"] = "clinical_review"
    reviewed_by: Identifier
    outcome: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class FluidIntake(ResidentEvent):
    """Drinks offered to and consumed by a resident (carer-logged or a smart cup's fill and drop).

    ESPEN frames the daily target as an amount *offered*; consumed is what counts toward it (cqc_domain.md
    §2.2 rows 4–5), so both are recorded.
    """

    event_type: Literal["fluid_intake"] = "fluid_intake"
    offered_ml: Annotated[float, Field(ge=0, le=3000, allow_inf_nan=False)]
    consumed_ml: Annotated[float, Field(ge=0, le=3000, allow_inf_nan=False)]
    method: Literal["carer", "smart_cup"]
    recorded_by: Identifier


class Fall(ResidentEvent):
    """A fall. A device alert counts as a fall only once staff confirm it (cqc_domain.md §2.1);
    harm uses the LFPSE levels (§2.2 row 2)."""

    event_type: Literal["fall"] = "fall"
    detected_by: Literal["staff", "device"]
    confirmed: bool
    harm: Literal["none", "low", "moderate", "severe", "fatal"] | None = None
    alert_id: Identifier | None = Field(default=None, description="Links a device alert to its staff confirmation.")
    recorded_by: Identifier


class CallBell(Event):
    """A call-bell lifecycle step. Tests are recorded but excluded from response indicators (§2.2 row 6)."""

    event_type: Literal["call_bell"] = "call_bell"
    resident_id: ResidentId | None = None
    call_id: Identifier
    phase: Literal["raised", "answered"]
    priority: Literal["routine", "emergency"] = "routine"
    call_type: Literal["call_point", "pull_cord", "pendant", "fall_detector", "test"] = "call_point"
    answered_by: Identifier | None = None


class VisitTask(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: Identifier
    kind: Literal["medication", "personal_care", "meal", "other"]
    time_critical: bool = False


class TaskOutcome(BaseModel):
    """What happened to a planned task; medication codes follow eMAR practice (cqc_domain.md §2.2 row 11)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: Identifier
    outcome: Literal["done", "refused", "withheld_by_clinician", "not_required", "in_hospital", "not_done"]


class VisitPlanned(ResidentEvent):
    """A homecare visit on the roster."""

    event_type: Literal["visit_planned"] = "visit_planned"
    visit_id: Identifier
    planned_start: Instant
    planned_end: Instant
    time_critical: bool = False
    tasks: list[VisitTask] = Field(default_factory=list, max_length=50)


class VisitCheckIn(ResidentEvent):
    """A carer arrived (electronic call monitoring); ``forced`` check-ins count as unverified."""

    event_type: Literal["visit_check_in"] = "visit_check_in"
    visit_id: Identifier
    carer_id: Identifier
    verification: Literal["gps", "qr", "otp", "forced"]


class VisitCheckOut(ResidentEvent):
    event_type: Literal["visit_check_out"] = "visit_check_out"
    visit_id: Identifier
    carer_id: Identifier
    task_outcomes: list[TaskOutcome] = Field(default_factory=list, max_length=50)


class VisitCancelled(ResidentEvent):
    """Cancelled by the person in advance: not a missed visit (NICE QS123, cqc_domain.md §2.2 row 9)."""

    event_type: Literal["visit_cancelled"] = "visit_cancelled"
    visit_id: Identifier
    by_client_in_advance: bool


DipstickGrade = Literal["negative", "trace", "+", "++", "+++"]


class UrinalysisResult(ResidentEvent):
    """A urine dipstick test read for a resident (by a smartphone reader or by eye), entered on the tablet.

    Recorded for the Care City test-bed pathway (cqc_domain.md [R8], issue 11). It is not a UTI diagnosis:
    NICE and UKHSA advise against dipstick diagnosis of UTI in people over 65 (cqc_domain.md §2.2 row 13,
    [U3]). `episode_id` links it to the escalation episode that recommended it; omitted, the worker links it
    to the resident's open recommendation, if any."""

    event_type: Literal["urinalysis_result"] = "urinalysis_result"
    recorded_by: Identifier
    reader: Literal["smartphone_reader", "visual"]
    leukocytes: DipstickGrade
    nitrites: Literal["negative", "positive"]
    blood: DipstickGrade
    protein: DipstickGrade
    episode_id: uuid.UUID | None = Field(default=None, description="Omitted: the resident's open recommendation.")


class UrinalysisRecommendation(ResidentEvent):
    """The urinalysis action of an amber NEWS2 escalation episode (issue 11), published by the worker when
    the ``urinalysis_pathway`` of the quality rules is switched on:

    - ``recommended`` when the episode first reaches a risk the pathway acts on (`due_at` = that time plus
      the ``urinalysis_timeliness`` target);
    - ``done`` when a result arrives for it (`result_event_id`, `tested_at`, `on_time`);
    - ``not_done`` when `due_at` passes without one;
    - ``withdrawn`` when the episode is upgraded to high risk first (an emergency response replaces it).
    """

    event_type: Literal["urinalysis_recommendation"] = "urinalysis_recommendation"
    episode_id: uuid.UUID
    status: Literal["recommended", "done", "not_done", "withdrawn"]
    risk: EscalationRisk
    recommended_at: Instant
    due_at: Instant
    result_event_id: uuid.UUID | None = None
    tested_at: Instant | None = None
    on_time: bool | None = None
    rules_version: str


class LocationProfile(Event):
    """What a location is registered or commissioned for, set by the provider: the input to live capacity
    and to the small-home falls window (cqc_domain.md §2.1). Compacted by location on ``location-profiles``;
    the newest profile replaces the last."""

    event_type: Literal["location_profile"] = "location_profile"
    setting: Literal["care_home", "homecare"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    registered_beds: Annotated[int, Field(ge=1, le=1000)] | None = None
    commissioned_hours_per_week: Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _beds_for_care_homes(self) -> "LocationProfile":
        if self.setting == "care_home" and self.registered_beds is None:
            raise ValueError("a care home's profile needs registered_beds")
        if self.setting == "homecare" and self.registered_beds is not None:
            raise ValueError("a homecare agency has no registered_beds (give commissioned_hours_per_week)")
        return self


class LocationCapacity(Event):
    """A location's live capacity as of `occurred_at`, published by the worker on the compacted ``capacity``
    topic whenever it changes (issue 11: real-time data instead of monthly Capacity Tracker returns).

    Care homes: the DHSC Capacity Tracker bed fields (cqc_domain.md §1.5 and §4.4, [C24]) — maximum,
    occupied and reserved (beds held for residents in hospital) — plus vacant and over-maximum; "accepting
    admissions" is the home's decision and is not derived. Homecare agencies: people receiving care, hours
    planned in the last 7 days and, when commissioned hours are known, the hours not planned (our names, P).
    Derived by ``indicators.quality.care_home_capacity`` / ``homecare_capacity``."""

    event_type: Literal["location_capacity"] = "location_capacity"
    setting: Literal["care_home", "homecare"]
    max_beds: int | None = None
    occupied_beds: int | None = None
    reserved_beds: int | None = None
    vacant_beds: int | None = None
    over_max_beds: int | None = None
    people_receiving_care: int | None = None
    planned_hours_7d: float | None = None
    commissioned_hours_7d: float | None = None
    commissioned_hours_not_planned: float | None = None
    profile_event_id: uuid.UUID


class DeadLetter(Event):
    """An input that could not be processed, with the reason and the original bytes (nothing is lost)."""

    event_type: Literal["dead_letter"] = "dead_letter"
    location_id: Identifier | None = None  # type: ignore[assignment]  # unknown when the payload is unreadable
    reason: str
    stage: str = Field(description="Which component rejected it, e.g. 'worker.resident'.")
    original_topic: str
    original_key: str | None = None
    original_payload: str = Field(description="The rejected payload, UTF-8 (undecodable bytes as \\x escapes).")


RagStatus = Literal["green", "amber", "red", "insufficient_data"]


class ThresholdInfo(BaseModel):
    """One RAG threshold as published: the comparison, the value, where it comes from and whether it is a
    carepulse proposal awaiting sign-off (cqc_domain.md §0 point 3)."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["<", "<=", ">", ">="]
    value: float
    source: str
    proposal: bool


class IndicatorUpdate(Event):
    """A location's care-quality indicator over a rolling window ending `window_end` (= `occurred_at`), as
    the worker computed it from the pure definitions in ``indicators.quality`` (cqc_domain.md §2).

    On ``indicators`` (compacted, keyed ``<location_id>|<indicator_id>``) each change of the current value;
    on ``indicators.history`` (keyed ``<location_id>|<indicator_id>|<date>``) the value at each local
    midnight. Below the minimum denominator `status` is ``insufficient_data``, never a colour, and a zero
    denominator has no `value`.
    """

    event_type: Literal["indicator"] = "indicator"
    indicator_id: Identifier
    title: str
    unit: str
    kind: Literal["current", "daily_snapshot"]
    window_start: Instant
    window_end: Instant
    numerator: float
    denominator: float
    value: float | None
    status: RagStatus
    minimum_denominator: float
    direction: Literal["lower_is_better", "higher_is_better"]
    green: ThresholdInfo
    red: ThresholdInfo
    details: dict[str, object] = Field(default_factory=dict)
    rules_version: str



class Alert(Event):
    """Something people must act on now, for consumers that are not Prometheus (pagers, messaging bridges):
    a red (high-risk) NEWS2 escalation raised or upgraded, a red escalation past its deadline without an
    acknowledgement, or a location's care-quality indicator turning red. Keyed by location on ``alerts``;
    `cause_event_id` is the escalation or indicator event it is about."""

    event_type: Literal["alert"] = "alert"
    alert: Literal["red_escalation", "red_escalation_overdue", "indicator_red"]
    severity: Literal["critical", "warning"]
    category: Literal["clinical", "quality"]
    summary: str
    resident_id: ResidentId | None = None
    indicator_id: Identifier | None = None
    cause_event_id: uuid.UUID


AnyEvent = Annotated[
    Union[
        DeviceReading, ManualObservation, ObservationSet, News2Scored, ResidentRecord, Escalation,
        EscalationOverdue, ObservationOverdue, EscalationAcknowledgement, ClinicalReview, FluidIntake, Fall,
        CallBell, VisitPlanned, VisitCheckIn, VisitCheckOut, VisitCancelled, UrinalysisResult,
        UrinalysisRecommendation, LocationProfile, LocationCapacity, DeadLetter, IndicatorUpdate, Alert,
    ],
    Field(discriminator="event_type"),
]
any_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

E = TypeVar("E", bound=Event)


def to_json(event: Event) -> bytes:
    """Wire form of an event (UTF-8 JSON, ``event_type`` included)."""
    return event.model_dump_json().encode()


def parse(model: type[E], payload: bytes | str) -> E:
    """Parse a payload as one model; raises pydantic.ValidationError with the reasons."""
    return model.model_validate_json(payload)


def all_models() -> list[type[Event]]:
    return [
        DeviceReading, ManualObservation, ObservationSet, News2Scored, ResidentRecord, Escalation,
        EscalationOverdue, ObservationOverdue, EscalationAcknowledgement, ClinicalReview, FluidIntake, Fall,
        CallBell, VisitPlanned, VisitCheckIn, VisitCheckOut, VisitCancelled, UrinalysisResult,
        UrinalysisRecommendation, LocationProfile, LocationCapacity, DeadLetter, IndicatorUpdate, Alert,
    ]


def json_schemas() -> dict[str, dict]:
    """JSON Schema of every event model, keyed by the file name it is committed under."""
    return {f"{model.__name__}.json": model.model_json_schema() for model in all_models()}


def describe_validation_error(error: Exception) -> str:
    """One readable sentence from a pydantic ValidationError (or any error), for dead letters and 4xx bodies."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
    parts = []
    for item in errors(include_url=False):
        where = ".".join(str(p) for p in item.get("loc", ())) or "payload"
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts)
