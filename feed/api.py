"""The regulator feed's HTTP API: locations, current indicators, indicator history, escalation summaries, live
capacity, a live stream (server-sent events), FHIR R4 Measure and MeasureReport resources and the mock digital
inspection.

`create_feed_app` only composes. Who may see what lives in one place: `principal` authenticates the key,
`visible_location` applies the tenancy rule (feed.auth) and `feed.privacy` shapes what the regulator sees.
A location another tenant owns answers exactly like an unknown one (404): a provider learns nothing about
other providers. Every error body is ``{"error": "<sentence>"}`` (422 adds ``details``), never a traceback.
Every request under /v1 is written to the append-only audit log before its response is released.

The API answers from the database alone, so it keeps serving while the broker or the workers are down or
rebalancing; /health reports the consumer's state.

Metrics (`carepulse.metrics.FeedMetrics`, the process-wide `FEED` unless `create_feed_app` is given one):
every request by route *template* (`HttpMetricsMiddleware`), the ingest (feed.ingest), and the state gauges,
loaded from the database at start and refreshed every `STATE_REFRESH_S`. The endpoint that serves them is
feed.service's, on its own port: the API itself has no /metrics route.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time as monotonic_time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import Engine, and_, func, select, text
from sqlalchemy.exc import DBAPIError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carepulse import events
from carepulse.metrics import FEED, OTHER, FeedMetrics
from carepulse.problems import InvalidRequest, Problem
from carepulse.settings import Settings
from feed import auth, db, fhir, inspection, privacy
from feed.ingest import STATE_REFRESH_S, ConsumerStatus, FeedConsumer, StateGauges
from feed.live import OVERFLOW, LiveEvent, LiveHub
from indicators.quality import ALL_INDICATOR_IDS, CARE_TZ, packaged_rules

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
MAX_PAGE = 500
MAX_OFFSET = 1_000_000


# -- response shapes ---------------------------------------------------------------------------------------
Suppressed = Literal["suppressed"]
Count = float | Suppressed
T = TypeVar("T")


class Threshold(BaseModel):
    op: Literal["<", "<=", ">", ">="]
    value: float
    source: str
    proposal: bool


class Indicator(BaseModel):
    location_id: str
    indicator_id: str
    title: str
    unit: str
    window_start: datetime
    window_end: datetime
    numerator: Count = Field(description="'suppressed' for the regulator when below the small-number threshold.")
    denominator: Count
    value: float | None = Field(description="None when the denominator is zero or a count is suppressed.")
    status: events.RagStatus
    minimum_denominator: float
    direction: Literal["lower_is_better", "higher_is_better"]
    green: Threshold
    red: Threshold
    rules_version: str
    suppressed: bool = Field(description="True when small-number suppression withheld counts (regulator only).")
    details: dict[str, Any] | None = Field(description="Breakdowns; withheld from the regulator (counts).")


class IndicatorSnapshot(Indicator):
    day: date


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class Location(BaseModel):
    location_id: str
    name: str | None
    provider_id: str | None = Field(description="None: seen on a topic but not registered (provider unknown).")
    registered: bool
    first_seen_at: datetime
    last_event_at: datetime | None


class LocationIndicators(BaseModel):
    location_id: str
    items: list[Indicator]


class EscalationCount(BaseModel):
    location_id: str
    risk: events.EscalationRisk
    status: Literal["raised", "upgraded", "acknowledged", "resolved", "overdue"] = Field(
        description="The episode's current status; 'overdue' counts episodes that missed their deadline."
    )
    episodes: int | Suppressed


class EscalationSummary(Page[EscalationCount]):
    since: date | None
    until: date | None
    suppression_threshold: int


class Episode(BaseModel):
    episode_id: str
    location_id: str
    resident_id: str = Field(description="Pseudonymous resident id (cqc_domain.md §5); providers only.")
    risk: events.EscalationRisk
    status: Literal["raised", "upgraded", "acknowledged", "resolved"]
    total: int | None
    raised_at: datetime
    deadline_at: datetime | None
    acknowledged_at: datetime | None
    overdue: bool


class Capacity(BaseModel):
    """A location's live capacity (issue 11), as of `as_of`. Care homes fill the bed fields, named after the
    DHSC Capacity Tracker's (cqc_domain.md §1.5 [C24]); homecare agencies the people and hours fields (our
    names: the Capacity Tracker fields in cqc_domain.md are care-home beds). "Accepting admissions" is the
    home's decision and is not derived. Bed counts are never suppressed (feed.privacy)."""

    location_id: str
    name: str | None
    provider_id: str | None = Field(description="None: seen on a topic but not registered (provider unknown).")
    setting: Literal["care_home", "homecare"]
    as_of: datetime = Field(description="The instant the figures describe (when the worker computed them).")
    max_beds: int | None = Field(description="Capacity Tracker 'maximum' beds: the home's registered beds.")
    occupied_beds: int | None = Field(description="Capacity Tracker 'occupied': residents in a bed now.")
    reserved_beds: int | None = Field(description="Capacity Tracker 'reserved': beds held for residents in hospital.")
    vacant_beds: int | None = Field(description="Maximum less occupied and reserved, never below 0.")
    over_max_beds: int | None = Field(description="Occupied and reserved beyond the maximum: a sign of a missing "
                                      "discharge record or a wrong bed count.")
    people_receiving_care: int | Suppressed | None = Field(
        description="People with a planned visit in the last 7 days (homecare); 'suppressed' for the regulator "
        "below the small-number threshold.")
    planned_hours_7d: float | None = Field(description="Hours of care planned in the last 7 days (homecare).")
    commissioned_hours_7d: float | None = Field(description="Hours commissioned per week, when the profile gives them.")
    commissioned_hours_not_planned: float | None = Field(
        description="Commissioned less planned hours: spare capacity when positive, planned beyond the commission "
        "when negative.")
    suppressed: bool = Field(description="True when small-number suppression withheld a count (regulator only).")


class ConsumerHealth(BaseModel):
    state: Literal["disabled", "starting", "consuming", "reconnecting", "stopped"]
    detail: str | None
    last_message_at: datetime | None
    messages_stored: int
    invalid_messages: int
    assigned_partitions: list[str]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    consumer: ConsumerHealth
    live_subscribers: int


class TrendPoint(BaseModel):
    day: date
    value: float | None


class Caveat(BaseModel):
    text: str
    source: str


class Evidence(BaseModel):
    indicator_id: str
    title: str
    unit: str | None
    value: float | None
    numerator: Count | None
    denominator: Count | None
    status: str
    status_label: str
    window_start: datetime | None
    window_end: datetime | None
    threshold_sources: dict[str, Threshold] | None
    trend: Literal["improving", "worsening", "stable", "unknown"]
    trend_points: list[TrendPoint]
    gaps: list[str]
    extension: bool = Field(description="One of issue 11's indicators (continuity of carers, travel between visits, "
                            "urinalysis timeliness): every threshold a carepulse proposal with no benchmark.")
    caveat: Caveat | None = Field(description="A clinical caveat the reader must see with the value.")
    mapping_source: str


class QualityStatement(BaseModel):
    quality_statement: str
    evidence: list[Evidence]


class KeyQuestion(BaseModel):
    key_question: str
    title: str
    indicative_view: Literal["concerns", "review", "no_concerns", "no_view", "not_measured"]
    indicative_view_label: str
    status_counts: dict[str, int]
    quality_statements: list[QualityStatement]
    not_measured: dict[str, str] | None


class IndicatorGaps(BaseModel):
    indicator_id: str
    title: str
    gaps: list[str]


class Inspection(BaseModel):
    location: Location
    indicative_only: Literal[True]
    disclaimer: str
    mapping_version: str
    framework: str
    window_days: int
    generated_at: datetime
    capacity: Capacity | None = Field(description="The location's live capacity, if it has reported any.")
    key_questions: list[KeyQuestion]
    gaps: list[IndicatorGaps]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        304: {"description": "Not modified: the representation still matches the If-None-Match ETag."},
        401: {"model": Problem, "description": "Missing, invalid, expired or revoked API key."},
        403: {"model": Problem, "description": "The key's role may not read this (regulator: aggregates only)."},
        404: {"model": Problem, "description": "No such location or indicator visible to this key."},
        422: {"model": InvalidRequest, "description": "A parameter is missing or not valid."},
        503: {"model": Problem, "description": "The feed database is unavailable; retry later."},
    }
    return {code: described[code] for code in codes}


# -- state and dependencies --------------------------------------------------------------------------------
@dataclass
class FeedState:
    settings: Settings
    engine: Engine
    hub: LiveHub
    consumer: ConsumerStatus
    now: Callable[[], datetime]
    mapping: inspection.InspectionMapping
    metrics: FeedMetrics = FEED

    @property
    def threshold(self) -> int:
        return self.settings.feed_suppression_threshold


def _feed(request: Request) -> FeedState:
    return request.app.state.feed


FeedDep = Annotated[FeedState, Depends(_feed)]
_bearer = HTTPBearer(auto_error=False, description="An API key from `carepulse feed keys create`.")


def principal(request: Request, feed: FeedDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> auth.Principal:
    """The one authentication check: every /v1 read needs a key neither revoked nor expired. An expired key
    gets the revoked key's answer: the caller learns only that this key does not work."""
    who = auth.authenticate(feed.engine, credentials.credentials, now=feed.now()) if credentials else None
    if who is None:
        raise HTTPException(401, "missing, invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = who
    return who


PrincipalDep = Annotated[auth.Principal, Depends(principal)]
LocationId = Annotated[str, Path(pattern=events.Identifier.__metadata__[0].pattern, max_length=64)]
IndicatorId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$", max_length=64)]


def _iso_date(value: Any) -> Any:
    """Query dates are ISO 8601 (YYYY-MM-DD) only: pydantic's lax mode would also read 0 as 1970-01-01."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]


def visible_location(location_id: LocationId, who: PrincipalDep, feed: FeedDep) -> dict[str, Any]:
    """The path's location, if this key may see it; otherwise 404, the same as for an unknown location."""
    with feed.engine.connect() as conn:
        row = conn.execute(
            select(db.locations).where(db.locations.c.location_id == location_id, auth.visible_locations_clause(who))
        ).mappings().first()
    if row is None:
        raise HTTPException(404, f"no location {location_id} visible to this key")
    return dict(row)


VisibleLocation = Annotated[dict[str, Any], Depends(visible_location)]


def known_indicator(indicator_id: IndicatorId) -> str:
    if indicator_id not in ALL_INDICATOR_IDS:
        raise HTTPException(404, f"no indicator {indicator_id}; known: {', '.join(ALL_INDICATOR_IDS)}")
    return indicator_id


KnownIndicator = Annotated[str, Depends(known_indicator)]


def _declared_query_names(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared_query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """An unknown query parameter is refused, not ignored: a misspelt `form=` must not silently widen a range."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _declared_query_names(route.dependant))
    if unknown:
        raise Invalid(unknown[0], "unknown query parameter")


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


# -- helpers -----------------------------------------------------------------------------------------------
def etagged(request: Request, payload: Any, *, media_type: str = "application/json") -> Response:
    """The payload as JSON with a strong ETag; 304 when the client's If-None-Match already has it."""
    if isinstance(payload, str):
        body = payload.encode()
    else:
        body = json.dumps(jsonable_encoder(payload), separators=(",", ":"), ensure_ascii=False).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    wanted = request.headers.get("if-none-match")
    if wanted is not None:
        tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
        if "*" in tags or etag in tags:
            return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _page(items: list, total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next_offset": offset + limit if offset + limit < total else None}


def _current_views(feed: FeedState, who: auth.Principal, location_id: str) -> list[dict[str, Any]]:
    table = db.indicators_current
    with feed.engine.connect() as conn:
        rows = conn.execute(
            select(table).where(table.c.location_id == location_id).order_by(table.c.indicator_id)
        ).mappings().all()
    return [privacy.indicator_view(row, regulator=who.is_regulator, threshold=feed.threshold) for row in rows]


def _history_views(feed: FeedState, who: auth.Principal, location_id: str, indicator_ids: list[str],
                   first: date, last: date, limit: int | None = None, offset: int = 0) -> tuple[list[dict], int]:
    table = db.indicators_history
    where = and_(table.c.location_id == location_id, table.c.indicator_id.in_(indicator_ids),
                 table.c.day >= first, table.c.day <= last)
    query = select(table).where(where).order_by(table.c.indicator_id, table.c.day).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with feed.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
        rows = conn.execute(query).mappings().all()
    return [privacy.indicator_view(row, regulator=who.is_regulator, threshold=feed.threshold) for row in rows], total


def _capacity_select(who: auth.Principal):
    """Capacity rows with their location's name and provider, of the locations `who` may see."""
    joined = db.capacity.join(db.locations, db.locations.c.location_id == db.capacity.c.location_id)
    return (select(db.capacity, db.locations.c.name, db.locations.c.provider_id).select_from(joined)
            .where(auth.visible_locations_clause(who)))


def _capacity_view(feed: FeedState, who: auth.Principal, location_id: str) -> dict[str, Any] | None:
    with feed.engine.connect() as conn:
        row = conn.execute(_capacity_select(who).where(db.capacity.c.location_id == location_id)).mappings().first()
    return None if row is None else privacy.capacity_view(row, regulator=who.is_regulator, threshold=feed.threshold)


def _local_today(feed: FeedState) -> date:
    return feed.now().astimezone(CARE_TZ).date()


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("feed", "templates"), autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _inspection(feed: FeedState, who: auth.Principal, location: dict[str, Any]) -> dict[str, Any]:
    window_days = feed.settings.feed_inspection_window_days
    today = _local_today(feed)
    current = {view["indicator_id"]: view for view in _current_views(feed, who, location["location_id"])}
    history_rows, _ = _history_views(feed, who, location["location_id"], list(ALL_INDICATOR_IDS),
                                     today - timedelta(days=window_days - 1), today)
    history: dict[str, list[dict]] = {}
    for row in history_rows:
        history.setdefault(row["indicator_id"], []).append(row)
    # The report is as of its newest value, so an unchanged report keeps its ETag between polls.
    as_of = max((view["window_end"] for view in current.values()), default=location["first_seen_at"])
    capacity = _capacity_view(feed, who, location["location_id"])
    if capacity is not None:
        as_of = max(as_of, capacity["as_of"])
    return inspection.build_inspection(location, current, history, mapping=feed.mapping, window_days=window_days,
                                       today=today, generated_at=as_of, capacity=capacity)


# -- the audit log -----------------------------------------------------------------------------------------
class AuditMiddleware:
    """Writes who (key id and role), what (method, path, query), when and the outcome of every /v1 request
    to the append-only audit log before the response starts (cqc_domain.md §5 audit logging). If the log
    cannot be written, the read is refused (503): nothing is served unaudited."""

    def __init__(self, app: ASGIApp, engine_of: Callable[[], Engine], now: Callable[[], datetime]) -> None:
        self.app = app
        self.engine_of = engine_of
        self.now = now

    def _write(self, scope: Scope, status_code: int) -> None:
        who = scope.get("state", {}).get("principal")
        with self.engine_of().begin() as conn:
            conn.execute(db.audit_log.insert().values(
                at=self.now(), key_id=who.key_id if who else None, role=who.role if who else None,
                method=scope["method"], path=scope["path"][:2000],
                query=scope.get("query_string", b"").decode("latin-1")[:2000], status_code=status_code,
            ))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        started = False
        refused = False

        async def audited_send(message: Message) -> None:
            nonlocal started, refused
            if message["type"] == "http.response.start":
                started = True
                try:
                    await asyncio.to_thread(self._write, scope, message["status"])
                except Exception as exc:
                    if isinstance(exc, DBAPIError):  # the database is away: one line, not a traceback per read
                        log.error("could not write the audit log (%s); refusing the response",
                                  type(exc.orig or exc).__name__)
                    else:
                        log.exception("could not write the audit log; refusing the response")
                    refused = True
                    body = json.dumps({"error": "the audit log is unavailable; nothing is served unaudited"}).encode()
                    await send({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
            if not refused:
                await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started:
                await asyncio.to_thread(self._write, scope, 500)
            raise


# -- request metrics ---------------------------------------------------------------------------------------
class HttpMetricsMiddleware:
    """Counts every HTTP request by the matched route's path *template* (``/v1/locations/{location_id}``),
    method and status class, and observes its duration; a path no route matched is ``"other"``, so the label
    stays bounded whatever clients send. Outermost of the app's middleware: it sees the status actually sent
    (the audit log's 503 included); an exception escaping the app counts as 500."""

    def __init__(self, app: ASGIApp, metrics: FeedMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = monotonic_time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            try:
                self.metrics.http_request(route_template(scope), scope.get("method", ""), status,
                                          monotonic_time.perf_counter() - started)
            except Exception:  # a metric never fails a request
                log.debug("could not record a request metric", exc_info=True)


def route_template(scope: Scope) -> str:
    """The path template of the route the router matched for this request (set in the scope), else "other"."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else OTHER


async def _refresh_state_gauges(gauges: StateGauges, interval_s: float) -> None:
    """Re-read the state gauges every `interval_s`, for as long as the app runs; a failure is logged and the
    next round tries again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(gauges.refresh)
        except DBAPIError as exc:  # the database is away; the API reports it on /health
            log.warning("could not refresh the state gauges from the feed database (%s)", type(exc.orig or exc).__name__)
        except Exception:
            log.warning("could not refresh the state gauges from the feed database", exc_info=True)


# -- the app -----------------------------------------------------------------------------------------------
def create_feed_app(settings: Settings, *, engine: Engine | None = None, consume: bool | None = None,
                    now: Callable[[], datetime] = events.utc_now, metrics: FeedMetrics = FEED,
                    state_refresh_s: float = STATE_REFRESH_S) -> FastAPI:
    """The feed app. `engine` defaults to the configured database (migrated here, before serving);
    `consume` defaults to ``settings.feed_consume``; `metrics` is where it records (tests pass their own);
    the state gauges are re-read from the database every `state_refresh_s`."""
    engine = engine or db.make_engine(db.database_url(settings))
    db.migrate(engine)
    consume = settings.feed_consume if consume is None else consume
    state = FeedState(settings=settings, engine=engine, hub=LiveHub(), now=now,
                      consumer=ConsumerStatus(state="starting" if consume else "disabled"),
                      mapping=inspection.packaged_mapping(), metrics=metrics)
    gauges = StateGauges(engine, metrics, now)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The gauges are loaded before the first request (and scrape): a restarted feed exports its state at
        # once. Also without consuming: another replica may be filling the database.
        try:
            await asyncio.to_thread(gauges.refresh)
        except Exception:  # serve anyway; the timer tries again
            log.warning("could not load the state gauges from the feed database", exc_info=True)
        tasks = [asyncio.create_task(_refresh_state_gauges(gauges, state_refresh_s))]
        if consume:
            tasks.append(asyncio.create_task(
                FeedConsumer(settings, engine, state.hub, state.consumer, now, metrics_=metrics, gauges=gauges).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if consume:
                state.consumer.state = "stopped"

    app = FastAPI(
        title="carepulse regulator feed",
        version=API_VERSION,
        description="Care-quality indicators and live capacity of care homes and homecare services for the "
        "regulator (aggregates, small numbers of people suppressed) and for providers (their own locations). "
        "Indicative only: nothing here is a CQC rating. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.feed = state
    app.add_middleware(AuditMiddleware, engine_of=lambda: engine, now=now)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)  # added last: outermost
    _install_error_handlers(app)
    _routes(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "header")) or "request",
                    "message": str(e.get("msg"))} for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(f"{d['field']}: {d['message']}" for d in details),
                             "details": details}, status_code=422)

    @app.exception_handler(Invalid)
    async def _invalid_param(_: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.field}: {exc.message}",
                             "details": [{"field": exc.field, "message": exc.message}]}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def _database_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("feed database error: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return JSONResponse({"error": "the feed database is unavailable; retry later"}, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("feed request failed: %s", type(exc).__name__)
        return JSONResponse({"error": "internal error; it has been logged"}, status_code=500)


def _routes(app: FastAPI) -> None:  # noqa: C901 - one small handler per endpoint
    @app.get("/health", response_model=Health, tags=["service"], summary="Liveness and consumer state (no key needed)")
    def health(feed: FeedDep) -> Health:
        try:
            with feed.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = "ok"
        except DBAPIError:
            database = "unavailable"
        consumer = feed.consumer
        degraded = database != "ok" or consumer.state == "reconnecting"
        return Health(status="degraded" if degraded else "ok", database=database,
                      consumer=ConsumerHealth(**consumer.__dict__), live_subscribers=feed.hub.subscribers)

    @app.get("/v1/locations", response_model=Page[Location], tags=["locations"], responses=_errors(304, 401, 422, 503),
             summary="Locations visible to this key")
    def list_locations(request: Request, who: PrincipalDep, feed: FeedDep, limit: Limit = 100,
                       offset: Offset = 0) -> Response:
        where = auth.visible_locations_clause(who)
        with feed.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(db.locations).where(where)).scalar_one()
            rows = conn.execute(select(db.locations).where(where).order_by(db.locations.c.location_id)
                                .limit(limit).offset(offset)).mappings().all()
        return etagged(request, _page([Location(**row) for row in rows], total, limit, offset))

    @app.get("/v1/locations/{location_id}", response_model=Location, tags=["locations"],
             responses=_errors(304, 401, 404, 422, 503), summary="One location")
    def get_location(request: Request, location: VisibleLocation) -> Response:
        return etagged(request, Location(**location))

    @app.get("/v1/locations/{location_id}/indicators", response_model=LocationIndicators, tags=["indicators"],
             responses=_errors(304, 401, 404, 422, 503), summary="Current indicators of a location")
    def current_indicators(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep) -> Response:
        views = _current_views(feed, who, location["location_id"])
        return etagged(request, {"location_id": location["location_id"], "items": views})

    @app.get("/v1/locations/{location_id}/indicators/{indicator_id}/history", response_model=Page[IndicatorSnapshot],
             tags=["indicators"], responses=_errors(304, 401, 404, 422, 503),
             summary="Daily snapshots of an indicator over a date range (local dates, inclusive)")
    def indicator_history(request: Request, location: VisibleLocation, indicator_id: KnownIndicator,
                          who: PrincipalDep, feed: FeedDep,
                          first: Annotated[IsoDate | None, Query(alias="from", description="First day; default: 27 days before `to`.")] = None,
                          last: Annotated[IsoDate | None, Query(alias="to", description="Last day; default: today (Europe/London).")] = None,
                          limit: Limit = 100, offset: Offset = 0) -> Response:
        last = last or _local_today(feed)
        if first is None:
            first = last - timedelta(days=27) if last > date.min + timedelta(days=27) else date.min
        # An inverted range is empty, not an error; pages (limit <= 500) bound the work of a long one.
        views, total = _history_views(feed, who, location["location_id"], [indicator_id], first, last, limit, offset)
        return etagged(request, _page(views, total, limit, offset))

    @app.get("/v1/escalations/summary", response_model=EscalationSummary, tags=["escalations"],
             responses=_errors(304, 401, 422, 503),
             summary="Escalation episodes counted per location, risk and status (regulator: small counts suppressed)")
    def escalation_summary(request: Request, who: PrincipalDep, feed: FeedDep,
                           location_id: Annotated[str | None, Query(pattern=events.Identifier.__metadata__[0].pattern, max_length=64)] = None,
                           since: Annotated[IsoDate | None, Query(description="Episodes raised on or after this UTC day.")] = None,
                           until: Annotated[IsoDate | None, Query(description="Episodes raised on or before this UTC day.")] = None,
                           limit: Limit = 100, offset: Offset = 0) -> Response:
        episodes = db.escalation_episodes
        conditions = [auth.visible_locations_clause(who)]
        if location_id:
            conditions.append(episodes.c.location_id == location_id)
        if since:
            conditions.append(episodes.c.raised_at >= datetime.combine(since, time.min, timezone.utc))
        if until:
            conditions.append(episodes.c.raised_at <= datetime.combine(until, time.max, timezone.utc))
        joined = episodes.join(db.locations, db.locations.c.location_id == episodes.c.location_id)
        count = func.count().label("episodes")
        by_status = (select(episodes.c.location_id, episodes.c.risk, episodes.c.status, count)
                     .select_from(joined).where(*conditions)
                     .group_by(episodes.c.location_id, episodes.c.risk, episodes.c.status))
        overdue = (select(episodes.c.location_id, episodes.c.risk, count)
                   .select_from(joined).where(*conditions, episodes.c.overdue.is_(True))
                   .group_by(episodes.c.location_id, episodes.c.risk))
        with feed.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(by_status).mappings()]
            rows += [{**r, "status": "overdue"} for r in conn.execute(overdue).mappings()]
        order = {"raised": 0, "upgraded": 1, "acknowledged": 2, "resolved": 3, "overdue": 4}
        rows.sort(key=lambda r: (r["location_id"], r["risk"], order[r["status"]]))
        if who.is_regulator:
            for row in rows:
                row["episodes"] = privacy.suppress_count(row["episodes"], feed.threshold)
        page = _page(rows[offset:offset + limit], len(rows), limit, offset)
        return etagged(request, {**page, "since": since, "until": until, "suppression_threshold": feed.threshold})

    @app.get("/v1/locations/{location_id}/escalations", response_model=Page[Episode], tags=["escalations"],
             responses=_errors(304, 401, 403, 404, 422, 503),
             summary="Escalation episodes with pseudonymous residents (providers, own locations only)")
    def escalation_episodes(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep,
                            status: Literal["raised", "upgraded", "acknowledged", "resolved"] | None = None,
                            limit: Limit = 100, offset: Offset = 0) -> Response:
        if who.is_regulator:
            # cqc_domain.md §5: the regulator reads aggregates; resident-level drill-down only through a
            # recorded s.64-style request, which this API does not offer.
            raise HTTPException(403, "the regulator role reads aggregates only; see /v1/escalations/summary")
        episodes = db.escalation_episodes
        conditions = [episodes.c.location_id == location["location_id"]]
        if status:
            conditions.append(episodes.c.status == status)
        with feed.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(episodes).where(*conditions)).scalar_one()
            rows = conn.execute(select(episodes).where(*conditions)
                                .order_by(episodes.c.raised_at.desc(), episodes.c.episode_id)
                                .limit(limit).offset(offset)).mappings().all()
        return etagged(request, _page([Episode(**row) for row in rows], total, limit, offset))

    @app.get("/v1/capacity", response_model=Page[Capacity], tags=["capacity"], responses=_errors(304, 401, 422, 503),
             summary="Live capacity of the locations visible to this key (most vacant beds first)")
    def list_capacity(request: Request, who: PrincipalDep, feed: FeedDep,
                      setting: Annotated[Literal["care_home", "homecare"] | None,
                                         Query(description="Only care homes or only homecare agencies.")] = None,
                      min_vacant_beds: Annotated[int | None, Query(
                          ge=0, le=1000, description="Only care homes with at least this many vacant beds.")] = None,
                      min_hours_not_planned: Annotated[float | None, Query(
                          ge=-100_000, le=100_000, allow_inf_nan=False,
                          description="Only homecare agencies with at least this many commissioned hours a week "
                                      "not planned (spare capacity).")] = None,
                      limit: Limit = 100, offset: Offset = 0) -> Response:
        table = db.capacity
        conditions = []
        if setting:
            conditions.append(table.c.setting == setting)
        if min_vacant_beds is not None:
            conditions.append(table.c.vacant_beds >= min_vacant_beds)
        if min_hours_not_planned is not None:
            conditions.append(table.c.commissioned_hours_not_planned >= min_hours_not_planned)
        query = _capacity_select(who).where(*conditions)
        with feed.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(
                query.order_by(table.c.vacant_beds.desc().nulls_last(),
                               table.c.commissioned_hours_not_planned.desc().nulls_last(), table.c.location_id)
                .limit(limit).offset(offset)
            ).mappings().all()
        views = [privacy.capacity_view(row, regulator=who.is_regulator, threshold=feed.threshold) for row in rows]
        return etagged(request, _page(views, total, limit, offset))

    @app.get("/v1/locations/{location_id}/capacity", response_model=Capacity, tags=["capacity"],
             responses=_errors(304, 401, 404, 422, 503), summary="Live capacity of one location")
    def location_capacity(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep) -> Response:
        view = _capacity_view(feed, who, location["location_id"])
        if view is None:
            raise HTTPException(404, f"no capacity reported for location {location['location_id']} yet")
        return etagged(request, view)

    @app.get("/v1/stream", tags=["live"], responses={
        200: {"description": "Server-sent events: `ready` once subscribed, then `indicator` (a current value "
              "changed), `capacity` (a location's live capacity changed, as /v1/locations/{id}/capacity shows "
              "it) and `red_alert` (an indicator turned red; for providers also a high-risk escalation "
              "raised or upgraded, or a missed escalation deadline). Data is JSON.",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **_errors(401, 503)}, summary="Live stream of indicator and capacity changes and red alerts")
    async def stream(request: Request, who: PrincipalDep, feed: FeedDep) -> EventSourceResponse:
        queue = feed.hub.subscribe()
        visible: dict[str, tuple[bool, float]] = {}

        async def can_see(location_id: str) -> bool:
            if who.is_regulator:
                return True
            cached = visible.get(location_id)
            if cached is None or monotonic_time.monotonic() - cached[1] > 5:
                cached = (await asyncio.to_thread(auth.can_see, feed.engine, who, location_id), monotonic_time.monotonic())
                visible[location_id] = cached
            return cached[0]

        def shape(event: LiveEvent) -> dict[str, Any] | None:
            if event.kind == "capacity":  # the same view, and suppression, as /v1/locations/{id}/capacity
                return privacy.capacity_view(event.payload, regulator=who.is_regulator, threshold=feed.threshold)
            if "indicator_id" in event.payload:
                view = privacy.indicator_view(event.payload, regulator=who.is_regulator, threshold=feed.threshold)
                return {"alert": event.payload["alert"], **view} if "alert" in event.payload else view
            # Escalation alerts are about one resident: providers only (cqc_domain.md §5).
            return None if who.is_regulator else event.payload

        async def events_for_client() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"event": "ready", "data": json.dumps({"role": who.role})}
                while True:
                    item = await queue.get()
                    if item is OVERFLOW:
                        yield {"event": "overflow", "data": json.dumps({"error": "client too slow; reconnect"})}
                        return
                    sequence, event = item
                    if not await can_see(event.location_id):
                        continue
                    payload = shape(event)
                    if payload is not None:
                        yield {"event": event.kind, "id": str(sequence),
                               "data": json.dumps(jsonable_encoder(payload), separators=(",", ":"))}
            finally:
                feed.hub.unsubscribe(queue)

        return EventSourceResponse(events_for_client(), ping=15)

    @app.get("/v1/fhir/Measure/{indicator_id}", tags=["fhir"],
             responses={200: {"description": "A FHIR R4 Measure.", "content": {fhir.FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}}},
                        **_errors(304, 401, 404, 422, 503)},
             summary="FHIR R4 Measure of an indicator")
    def fhir_measure(request: Request, indicator_id: KnownIndicator, who: PrincipalDep, feed: FeedDep) -> Response:
        caveat = feed.mapping.caveats.get(indicator_id)
        resource = fhir.measure(indicator_id, base_url=feed.settings.feed_public_base_url, rules=packaged_rules(),
                                usage=f"{caveat.text} Source: {caveat.source}" if caveat else None)
        return etagged(request, resource, media_type=fhir.FHIR_MEDIA_TYPE)

    @app.get("/v1/locations/{location_id}/fhir/MeasureReport", tags=["fhir"],
             responses={200: {"description": "A FHIR R4 Bundle (collection) of summary MeasureReports.",
                              "content": {fhir.FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}}},
                        **_errors(304, 401, 404, 422, 503)},
             summary="FHIR R4 MeasureReports of a location's current indicators")
    def fhir_reports(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep) -> Response:
        base = feed.settings.feed_public_base_url
        reports = [fhir.measure_report(view, base_url=base, generated_at=view["window_end"])
                   for view in _current_views(feed, who, location["location_id"])]
        return etagged(request, fhir.bundle(reports, base_url=base), media_type=fhir.FHIR_MEDIA_TYPE)

    @app.get("/v1/locations/{location_id}/fhir/MeasureReport/{indicator_id}", tags=["fhir"],
            
             responses={200: {"description": "A FHIR R4 summary MeasureReport.",
                              "content": {fhir.FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}}},
                        **_errors(304, 401, 404, 422, 503)},
             summary="FHIR R4 MeasureReport of one indicator at a location")
    def fhir_report(request: Request, location: VisibleLocation, indicator_id: KnownIndicator, who: PrincipalDep,
                    feed: FeedDep) -> Response:
        views = [v for v in _current_views(feed, who, location["location_id"]) if v["indicator_id"] == indicator_id]
        if not views:
            raise HTTPException(404, f"no value of {indicator_id} at location {location['location_id']} yet")
        report = fhir.measure_report(views[0], base_url=feed.settings.feed_public_base_url,
                                     generated_at=views[0]["window_end"])
        return etagged(request, report, media_type=fhir.FHIR_MEDIA_TYPE)

    @app.get("/v1/locations/{location_id}/inspection", response_model=Inspection, tags=["inspection"],
             responses=_errors(304, 401, 404, 422, 503),
             summary="Mock digital inspection (indicative only, not a CQC rating), as JSON")
    def inspection_json(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep) -> Response:
        report = _inspection(feed, who, location)
        for kq in report["key_questions"]:
            for statement in kq["quality_statements"]:
                for item in statement["evidence"]:
                    item.pop("trend_svg", None)
        return etagged(request, report)

    @app.get("/v1/locations/{location_id}/inspection.html", tags=["inspection"],
             responses={200: {"description": "The mock digital inspection as a printable page.",
                              "content": {"text/html": {"schema": {"type": "string"}}}},
                        **_errors(304, 401, 404, 422, 503)},
             summary="Mock digital inspection as a printable HTML page")
    def inspection_html(request: Request, location: VisibleLocation, who: PrincipalDep, feed: FeedDep) -> Response:
        page = _templates.get_template("inspection.html").render(report=_inspection(feed, who, location))
        return etagged(request, page, media_type="text/html; charset=utf-8")

