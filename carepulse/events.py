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
# Finite numbers only: NaN or infinity in a vital sign is a device fault, not a value to score.
Measurement = Annotated[float, Field(allow_inf_nan=False)]


def derived_event_id(kind: str, *parts: object) -> uuid.UUID:
    """The id of an event derived from others, stable across re-processing of the same inputs."""
    return uuid.uuid5(DERIVED_EVENT_NAMESPACE, ":".join([kind, *map(str, parts)]))


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
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    source: Source
    location_id: Identifier


class ResidentEvent(Event):
    """An event about one person (keyed by ``resident_id`` on its topic)."""

    resident_id: ResidentId


class DeviceReading(ResidentEvent):
    """A decoded measurement from a Bluetooth health device or BTHome sensor."""

    event_type: Literal["device_reading"] = "device_reading"
    characteristic: Identifier
    values: dict[str, float | int | str | bool | None | list[float]]


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


class Escalation(ResidentEvent):
    """A NEWS2 escalation: a score at or above the urgent-response threshold needs a clinical response."""

    event_type: Literal["escalation"] = "escalation"
    episode_id: uuid.UUID
    status: Literal["raised"] = "raised"
    risk: EscalationRisk
    total: int | None
    any_single_3: bool
    score_event_id: uuid.UUID
    response: str
    rules_version: str


class DeadLetter(Event):
    """An input that could not be processed, with the reason and the original bytes (nothing is lost)."""

    event_type: Literal["dead_letter"] = "dead_letter"
    location_id: Identifier | None = None  # type: ignore[assignment]  # unknown when the payload is unreadable
    reason: str
    stage: str = Field(description="Which component rejected it, e.g. 'worker.news2'.")
    original_topic: str
    original_key: str | None = None
    original_payload: str = Field(description="The rejected payload, UTF-8 (undecodable bytes as \\x escapes).")


AnyEvent = Annotated[
    Union[DeviceReading, ManualObservation, ObservationSet, News2Scored, Escalation, DeadLetter],
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
    return [DeviceReading, ManualObservation, ObservationSet, News2Scored, Escalation, DeadLetter]


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
