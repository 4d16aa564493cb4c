"""The carers' tablet intake: what staff enter at the bedside becomes an event on the pipeline.

A tablet sends only what the carer entered (small request models, unknown fields refused); the gateway
fills the envelope from what it trusts: the tablet's location and id from its token, ``received_at``
from its own clock, and a fresh ``event_id`` unless the tablet sends one to make a retry idempotent
(consumers deduplicate on it). An entry is answered 202 once it is durably in the gateway buffer, so an
acknowledged entry survives a broker outage or a gateway restart.

`create_intake_app` only composes: the routers below, the one authentication dependency they share,
and the error shapes. Every error body is ``{"error": "<sentence>"}``; validation errors add
``"details"``, a list of ``{"field", "message"}``. Log lines never carry a resident id or a token.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carepulse import events, topics
from carepulse.problems import InvalidRequest, Problem
from carepulse.topics import TopicSpec
from gateway.buffer import BufferFull
from gateway.publisher import Publisher
from gateway.registry import Registry, Tablet
from indicators import news2

log = logging.getLogger(__name__)

#: How far ``occurred_at`` may lead the gateway clock: room for a tablet clock's drift, not for typos.
MAX_AHEAD_MINUTES = 5
#: How far back an entry may be dated; older records belong in the care record, not the live pipeline.
MAX_AGE_DAYS = 7


# -- what the carer enters ---------------------------------------------------------------------------
def _as_in(model: type[events.Event], name: str) -> Any:
    """The type `model.name` accepts, constraints included, so an entry takes exactly what its event does."""
    info = model.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


_DrinkMl = _as_in(events.FluidIntake, "offered_ml")
_DetectedBy = _as_in(events.Fall, "detected_by")
_Harm = _as_in(events.Fall, "harm")
_CallPriority = _as_in(events.CallBell, "priority")
_CallType = _as_in(events.CallBell, "call_type")
_Verification = _as_in(events.VisitCheckIn, "verification")
_TaskOutcomes = _as_in(events.VisitCheckOut, "task_outcomes")
_Action = _as_in(events.EscalationAcknowledgement, "action")
_ReviewOutcome = _as_in(events.ClinicalReview, "outcome")
_Reader = _as_in(events.UrinalysisResult, "reader")
_DipstickGrade = _as_in(events.UrinalysisResult, "leukocytes")
_Nitrites = _as_in(events.UrinalysisResult, "nitrites")


class Entry(BaseModel):
    """Fields any entry may carry; the gateway fills the rest of the event envelope."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID | None = Field(
        default=None, description="Send the same id when retrying an entry; omitted: the gateway assigns one."
    )
    occurred_at: AwareDatetime | None = Field(
        default=None, description="With a UTC offset; omitted: when the gateway received the entry."
    )


class ObservationEntry(Entry):
    """The NEWS2 parameters devices cannot measure, plus any taken by hand (cqc_domain.md §2.3)."""

    occurred_at: AwareDatetime = Field(description="When the observations were taken (with a UTC offset).")
    recorded_by: events.Identifier
    respiration_rate: events.Measurement
    consciousness: events.Consciousness
    on_oxygen: bool
    spo2: events.Measurement | None = None
    systolic_bp: events.Measurement | None = None
    pulse: events.Measurement | None = None
    temperature: events.Measurement | None = None

    @field_validator("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")
    @classmethod
    def _plausible(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Refuse a physiologically impossible value at the bedside, with the NEWS2 core's own limits
        (indicators/config/news2.toml), so the carer can correct it instead of it being dead-lettered later."""
        if value is not None:
            try:
                news2.score_parameter(info.field_name, value)
            except news2.ImpossibleValue as exc:
                raise ValueError(exc.reason) from None
        return value


class FluidEntry(Entry):
    """Both amounts: ESPEN targets what is offered; consumed is what counts (cqc_domain.md §2.2 rows 4-5)."""

    offered_ml: _DrinkMl
    consumed_ml: _DrinkMl
    recorded_by: events.Identifier


class FallEntry(Entry):
    """A fall, or a staff decision on a device alert: an alert is a fall only once confirmed (cqc_domain.md
    §2.1); harm uses the LFPSE levels (§2.2 row 2)."""

    detected_by: _DetectedBy
    confirmed: bool
    harm: _Harm = None
    alert_id: events.Identifier | None = None
    recorded_by: events.Identifier

    @field_validator("harm")
    @classmethod
    def _harm_only_for_a_fall(cls, harm: str | None, info: ValidationInfo) -> str | None:
        if harm is not None and info.data.get("confirmed") is False:
            raise ValueError("harm is recorded only for a confirmed fall; an unconfirmed alert is not a fall")
        return harm


class CallBellAnswer(Entry):
    """Staff reached the call point; type and priority keep tests apart (cqc_domain.md §2.2 row 6)."""

    answered_by: events.Identifier
    priority: _CallPriority
    call_type: _CallType
    resident_id: events.ResidentId | None = None


class VisitCheckInEntry(Entry):
    carer_id: events.Identifier
    verification: _Verification


class VisitCheckOutEntry(Entry):
    carer_id: events.Identifier
    task_outcomes: _TaskOutcomes = []


class AcknowledgementEntry(Entry):
    acknowledged_by: events.Identifier
    action: _Action
    episode_id: uuid.UUID | None = Field(default=None, description="Omitted: the resident's open episode.")


class ClinicalReviewEntry(Entry):
    reviewed_by: events.Identifier
    outcome: _ReviewOutcome


class UrinalysisEntry(Entry):
    """A urine dipstick read by a smartphone reader or by eye (issue 11's pathway for amber NEWS2 episodes).
    Not a UTI diagnosis: NICE and UKHSA advise against dipstick diagnosis of UTI over 65 (cqc_domain.md §2.2
    row 13, [U3])."""

    occurred_at: AwareDatetime = Field(description="When the test was read (with a UTC offset).")
    recorded_by: events.Identifier
    reader: _Reader
    leukocytes: _DipstickGrade
    nitrites: _Nitrites
    blood: _DipstickGrade
    protein: _DipstickGrade
    episode_id: uuid.UUID | None = Field(
        default=None, description="The escalation episode whose recommendation it answers; omitted: the "
                                  "resident's open recommendations.")


# -- what the gateway answers ------------------------------------------------------------------------
class Accepted(BaseModel):
    event_id: uuid.UUID
    status: Literal["accepted"] = "accepted"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    buffer_depth: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not valid JSON."},
    401: {"model": Problem, "description": "Missing, invalid or revoked tablet token."},
    404: {"model": Problem, "description": "The resident is not registered at the tablet's location."},
    413: {"model": Problem, "description": "The body is larger than the gateway accepts."},
    422: {"model": InvalidRequest, "description": "A field is missing or not valid."},
    507: {"model": Problem, "description": "The gateway buffer is full: keep the entry and retry later."},
}


# -- dependencies ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intake:
    registry: Registry
    publisher: Publisher
    gateway_id: str
    now: Callable[[], datetime]


def _intake(request: Request) -> Intake:
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(_intake)]

_bearer = HTTPBearer(auto_error=False, description="The token issued when the tablet was provisioned.")


def authenticated_tablet(
    intake: IntakeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Tablet:
    """The one authentication check: entries come only from a provisioned, unrevoked tablet."""
    tablet = intake.registry.authenticate_tablet(credentials.credentials) if credentials else None
    if tablet is None:
        log.warning("refused a tablet request: missing or invalid token")
        raise HTTPException(401, "missing or invalid tablet token", headers={"WWW-Authenticate": "Bearer"})
    return tablet


TabletDep = Annotated[Tablet, Depends(authenticated_tablet)]


def _require_resident_here(registry: Registry, resident_id: str, tablet: Tablet) -> None:
    # One answer for "unknown" and "elsewhere": a tablet learns nothing about other locations.
    if registry.location_of(resident_id) != tablet.location_id:
        raise HTTPException(404, f"resident {resident_id} is not registered at location {tablet.location_id}")


def resident_here(
    resident_id: Annotated[events.ResidentId, Path()],
    tablet: TabletDep,
    intake: IntakeDep,
) -> str:
    """The path's resident, who must be registered at the tablet's location (a tablet serves one unit)."""
    _require_resident_here(intake.registry, resident_id, tablet)
    return resident_id


ResidentHere = Annotated[str, Depends(resident_here)]
VisitId = Annotated[events.Identifier, Path()]
CallId = Annotated[events.Identifier, Path()]


def _occurred_at(entry: Entry, now: datetime) -> datetime:
    if entry.occurred_at is None:
        return now
    if entry.occurred_at - now > timedelta(minutes=MAX_AHEAD_MINUTES):
        problem = (f"must not be more than {MAX_AHEAD_MINUTES} minutes ahead of the gateway clock "
                   f"({now.isoformat()}); check the tablet's clock")
    elif now - entry.occurred_at > timedelta(days=MAX_AGE_DAYS):
        problem = f"must not be more than {MAX_AGE_DAYS} days before the gateway clock ({now.isoformat()})"
    else:
        return entry.occurred_at
    raise RequestValidationError([{"type": "value_error", "loc": ("body", "occurred_at"), "msg": problem}])


def _record(intake: Intake, tablet: Tablet, entry: Entry, model: type[events.Event], spec: TopicSpec,
            **fields: Any) -> Accepted:
    """Wrap the entry in its event's envelope and buffer it, keyed as its topic requires."""
    now = intake.now()
    event = model(
        event_id=entry.event_id or uuid.uuid4(),
        occurred_at=_occurred_at(entry, now),
        received_at=now,
        source=events.Source(gateway_id=intake.gateway_id, device_id=tablet.tablet_id),
        location_id=tablet.location_id,
        **entry.model_dump(exclude={"event_id", "occurred_at"}),
        **fields,
    )
    intake.publisher.publish(spec, getattr(event, spec.key), event)
    return Accepted(event_id=event.event_id)


# -- routers -----------------------------------------------------------------------------------------
health = APIRouter(tags=["health"])
residents = APIRouter(
    prefix="/v1/residents/{resident_id}", tags=["residents"],
    dependencies=[Depends(authenticated_tablet)], responses=_ERRORS,
)
call_bells = APIRouter(
    prefix="/v1/call-bells", tags=["call bells"],
    dependencies=[Depends(authenticated_tablet)], responses=_ERRORS,
)


@health.get("/v1/health")
def check_health(intake: IntakeDep) -> Health:
    """Liveness without a token; a growing buffer depth means the broker is not taking events."""
    return Health(buffer_depth=intake.publisher.buffer.depth())


@residents.post("/observations", status_code=202)
def record_observations(entry: ObservationEntry, resident: ResidentHere, tablet: TabletDep,
                        intake: IntakeDep) -> Accepted:
    """Respiration rate, ACVPU and oxygen (and any hand-taken vitals) toward the resident's NEWS2 set."""
    return _record(intake, tablet, entry, events.ManualObservation, topics.READINGS, resident_id=resident)


@residents.post("/fluids", status_code=202)
def record_fluids(entry: FluidEntry, resident: ResidentHere, tablet: TabletDep,
                  intake: IntakeDep) -> Accepted:
    """A drink offered and how much of it was consumed, logged by a carer."""
    return _record(intake, tablet, entry, events.FluidIntake, topics.CARE_EVENTS, resident_id=resident,
                   method="carer")


@residents.post("/falls", status_code=202)
def record_fall(entry: FallEntry, resident: ResidentHere, tablet: TabletDep, intake: IntakeDep) -> Accepted:
    """A fall seen by staff, or staff's confirmation (or not) of a device alert."""
    return _record(intake, tablet, entry, events.Fall, topics.CARE_EVENTS, resident_id=resident)


@residents.post("/visits/{visit_id}/check-in", status_code=202)
def check_in(visit_id: VisitId, entry: VisitCheckInEntry, resident: ResidentHere, tablet: TabletDep,
             intake: IntakeDep) -> Accepted:
    """A carer arrived for a homecare visit; a forced check-in counts as unverified (cqc_domain.md §2.3)."""
    return _record(intake, tablet, entry, events.VisitCheckIn, topics.CARE_EVENTS, resident_id=resident,
                   visit_id=visit_id)


@residents.post("/visits/{visit_id}/check-out", status_code=202)
def check_out(visit_id: VisitId, entry: VisitCheckOutEntry, resident: ResidentHere, tablet: TabletDep,
              intake: IntakeDep) -> Accepted:
    """A carer left, with each planned task's outcome (eMAR-style codes, cqc_domain.md §2.2 row 11)."""
    return _record(intake, tablet, entry, events.VisitCheckOut, topics.CARE_EVENTS, resident_id=resident,
                   visit_id=visit_id)


@residents.post("/escalations/acknowledge", status_code=202)
def acknowledge_escalation(entry: AcknowledgementEntry, resident: ResidentHere, tablet: TabletDep,
                           intake: IntakeDep) -> Accepted:
    """Staff acknowledge the resident's open NEWS2 escalation and say what they did (e.g. called the GP)."""
    return _record(intake, tablet, entry, events.EscalationAcknowledgement, topics.CLINICAL_ACTIONS,
                   resident_id=resident)


@residents.post("/clinical-reviews", status_code=202)
def record_clinical_review(entry: ClinicalReviewEntry, resident: ResidentHere, tablet: TabletDep,
                           intake: IntakeDep) -> Accepted:
    """A clinical review of the resident; it resolves their open escalation episode."""
    return _record(intake, tablet, entry, events.ClinicalReview, topics.CLINICAL_ACTIONS,
                   resident_id=resident)


@residents.post("/urinalysis", status_code=202)
def record_urinalysis(entry: UrinalysisEntry, resident: ResidentHere, tablet: TabletDep,
                      intake: IntakeDep) -> Accepted:
    """A urinalysis result (leukocytes, nitrites, blood, protein; the reader used; when it was read). It
    answers the resident's "urinalysis recommended" action when the pathway is on, and counts toward the
    urinalysis timeliness indicator either way. Not a UTI diagnosis: dipstick diagnosis is not recommended
    over 65 (NICE/UKHSA)."""
    return _record(intake, tablet, entry, events.UrinalysisResult, topics.CLINICAL_ACTIONS,
                   resident_id=resident)


@call_bells.post("/{call_id}/answer", status_code=202)
def answer_call(call_id: CallId, entry: CallBellAnswer, tablet: TabletDep, intake: IntakeDep) -> Accepted:
    """Staff reached a call point; the resident, if named, must be at the tablet's location."""
    if entry.resident_id is not None:
        _require_resident_here(intake.registry, entry.resident_id, tablet)
    return _record(intake, tablet, entry, events.CallBell, topics.CARE_EVENTS, call_id=call_id,
                   phase="answered")


# -- error shapes ------------------------------------------------------------------------------------
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = exc.errors()
    if problems[0]["type"] == "json_invalid":  # FastAPI reports unparseable JSON as this single error
        where = problems[0]["loc"][1]
        return JSONResponse(
            {"error": f"request body is not valid JSON: {problems[0]['ctx']['error']} at character {where}"},
            status_code=400,
        )
    # The rejected input is left out: it may be a value that must not be echoed (an NHS number).
    details = [
        {"field": ".".join(str(part) for part in problem["loc"][1:]) or str(problem["loc"][0]),
         "message": problem["msg"]}
        for problem in problems
    ]
    summary = "; ".join(f"{detail['field']}: {detail['message']}" for detail in details)
    return JSONResponse({"error": f"request is not valid: {summary}", "details": details}, status_code=422)


async def _buffer_full(request: Request, exc: BufferFull) -> JSONResponse:
    log.error("refused a tablet entry: %s", exc)
    return JSONResponse({"error": str(exc)}, status_code=507)


class _BodyLimit:
    """Refuse bodies over `max_body_bytes` before any handler runs, by Content-Length and by bytes received.

    FastAPI's own ``max_body_size`` answers in plain text, and only when a route reads the body; this
    answers every route with the same JSON error.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"error": f"request body larger than {self.max_body_bytes} bytes"}, status_code=413
        )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
            more_body = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _InternalErrors:
    """Answer any unhandled exception with 500 ``{"error": "internal error"}``.

    Not an ``Exception`` handler: Starlette re-raises after those, and the server then logs the
    exception's text, which can hold request values (a pydantic error quotes its input). This logs the
    route template, the exception type and the code frames only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", "an unmatched path")
            log.error("internal error in %s %s: %s\n%s", scope.get("method"), route, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            if not started:
                await JSONResponse({"error": "internal error"}, status_code=500)(scope, receive, send)


def create_intake_app(
    registry: Registry,
    publisher: Publisher,
    *,
    gateway_id: str,
    now: Callable[[], datetime] = events.utc_now,
    max_body_bytes: int = 64 * 1024,
) -> FastAPI:
    """The tablet intake app for one gateway; `now` is the gateway clock (a parameter, for tests)."""
    app = FastAPI(
        title="carepulse tablet intake",
        version="1",
        description=__doc__,
        exception_handlers={
            StarletteHTTPException: _http_error,
            RequestValidationError: _invalid_request,
            BufferFull: _buffer_full,
        },
    )
    # Validated here so a misconfigured gateway id fails at start-up, not on every entry.
    app.state.intake = Intake(registry, publisher, events.Source(gateway_id=gateway_id).gateway_id, now)
    app.include_router(health)
    app.include_router(residents)
    app.include_router(call_bells)
    app.add_middleware(_BodyLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(_InternalErrors)  # outermost: also covers the body limit
    return app
