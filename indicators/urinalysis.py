"""The urinalysis pathway of amber NEWS2 escalation episodes (issue 11), pure: (pathway, input) -> (pathway, actions).

Clinical caveat: NICE and UKHSA advise against using a urine dipstick to diagnose UTI in people over 65
(cqc_domain.md §2.2 row 13, [U3]), which is most care-home residents. The pathway records the practice of
the Care City test bed ([R8]); a result is not a diagnosis. It stays off (``[urinalysis_pathway] enabled =
false`` in indicators/config/quality.toml) until a clinical safety officer signs it off.

When an escalation episode first reaches a risk the pathway acts on (``recommend_at_risks``: low-medium or
medium, "amber"), a urinalysis is *recommended*, due ``urinalysis_timeliness.parameters.target_s`` after that
band was raised. What becomes of it follows the classification of the ``urinalysis_timeliness`` indicator
(``quality.urinalysis_timeliness`` over ``recompute._amber_episodes``), so the action staff see and the
number the regulator sees never disagree. With R the recommendation, D = R + target_s, T the resident's first
urinalysis at or after R that names this episode or none (a result naming another episode answers that one
only; one naming none answers every recommendation open for the resident) and U the episode's upgrade to high
at or after R:

============================================  ==========================================================
T ≤ D, and T ≤ U if upgraded                  ``done``, on time
otherwise U ≤ D                               ``withdrawn`` (an emergency response replaces the test)
otherwise T (so T > D)                        ``done``, late
no T and the judgement clock has reached D    ``not_done``
otherwise                                     ``recommended`` (pending)
============================================  ==========================================================

Inputs arrive in any order (a result may be read before the observations of its episode, an earlier result
after a later one), so each recommendation's status is recomputed from what is known, and every change is an
`Action` to publish: a result arriving after ``not_done`` gives ``done`` late, an earlier result read after a
later one corrects it; nothing is lost and the last action published is the current status. Action ids are
derived from their content, so re-processing the same inputs repeats the same ids and a duplicate input
changes nothing.

Time is always a parameter: ``not_done`` is judged on the clock the caller passes (`on_clock`), the resident
agent's deadline clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from carepulse.events import derived_event_id
from indicators import quality

#: A resident's recommendations kept for correction (the oldest go first): far more amber episodes than a
#: resident has in the indicator's window, so the cap only bounds the state of a faulty stream.
MAX_RECOMMENDATIONS = 8
#: A resident's urinalysis results remembered for recommendations still to be made (newest kept).
MAX_RESULTS = 8


class Status(StrEnum):
    RECOMMENDED = "recommended"
    DONE = "done"
    NOT_DONE = "not_done"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class PathwayRules:
    """What the lifecycle needs of the quality rules: the switch, the risks it acts on, the target and how
    long a recommendation can still be corrected (`keep_s`: the indicator's window, after which it counts in
    no window)."""

    enabled: bool
    recommend_at_risks: tuple[str, ...]
    target_s: float
    keep_s: float
    version: str

    @classmethod
    def from_quality(cls, rules: quality.QualityRules) -> PathwayRules:
        timeliness = rules["urinalysis_timeliness"]
        return cls(enabled=rules.urinalysis_pathway.enabled,
                   recommend_at_risks=rules.urinalysis_pathway.recommend_at_risks,
                   target_s=timeliness.parameters["target_s"],
                   keep_s=timeliness.window_days * 86400.0,
                   version=rules.version)


@dataclass(frozen=True)
class Result:
    """A urinalysis taken for the resident: when, the id of the result event, and the episode it names, if any."""

    tested_at: datetime
    event_id: str
    episode_id: str | None = None

    def to_json(self) -> list:
        return [self.tested_at.isoformat(), self.event_id, self.episode_id]

    @classmethod
    def from_json(cls, data: list) -> Result:
        return cls(datetime.fromisoformat(data[0]), data[1], data[2])

    def answers(self, rec: Recommendation) -> bool:
        return self.tested_at >= rec.recommended_at and self.episode_id in (None, rec.episode_id)

    def before(self, other: Result | None) -> bool:
        """Earlier than `other` (ties by event id, so the same results give the same answer in any order)."""
        return other is None or (self.tested_at, self.event_id) < (other.tested_at, other.event_id)


@dataclass(frozen=True)
class Recommendation:
    """The urinalysis recommended for one amber episode, with what is known about it.

    `high_at` is the episode's high band, if any; it is an upgrade only at or after `recommended_at`
    (`upgraded_to_high_at`), as in ``recompute._amber_episodes``. `past_due` records that the judgement clock
    reached `due_at`; `published` is the short id of the last action published for it."""

    episode_id: str
    risk: str
    recommended_at: datetime
    due_at: datetime
    high_at: datetime | None = None
    result: Result | None = None
    past_due: bool = False
    published: str | None = None

    @property
    def upgraded_to_high_at(self) -> datetime | None:
        return self.high_at if self.high_at is not None and self.high_at >= self.recommended_at else None

    def status(self) -> tuple[Status, bool | None]:
        """The status and, when done, whether on time: the indicator's classification (see the module)."""
        tested_at = self.result.tested_at if self.result else None
        upgraded_at = self.upgraded_to_high_at
        if tested_at is not None and tested_at <= self.due_at and (upgraded_at is None or tested_at <= upgraded_at):
            return Status.DONE, True
        if upgraded_at is not None and upgraded_at <= self.due_at:
            return Status.WITHDRAWN, None
        if tested_at is not None:
            return Status.DONE, False
        return (Status.NOT_DONE if self.past_due else Status.RECOMMENDED), None

    def to_json(self) -> dict:
        return {
            "episode_id": self.episode_id,
            "risk": self.risk,
            "recommended_at": self.recommended_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "high_at": self.high_at.isoformat() if self.high_at else None,
            "result": self.result.to_json() if self.result else None,
            "past_due": self.past_due,
            "published": self.published,
        }

    @classmethod
    def from_json(cls, data: dict) -> Recommendation:
        return cls(
            episode_id=data["episode_id"],
            risk=data["risk"],
            recommended_at=datetime.fromisoformat(data["recommended_at"]),
            due_at=datetime.fromisoformat(data["due_at"]),
            high_at=datetime.fromisoformat(data["high_at"]) if data.get("high_at") else None,
            result=Result.from_json(data["result"]) if data.get("result") else None,
            past_due=data.get("past_due", False),
            published=data.get("published"),
        )


@dataclass(frozen=True)
class Action:
    """A status to publish for a recommendation (as it stands after the change)."""

    status: Status
    on_time: bool | None
    recommendation: Recommendation

    @property
    def at(self) -> datetime:
        """Event time of the action: when the recommendation was made, the test taken, the due time passed, or
        the episode upgraded."""
        rec = self.recommendation
        match self.status:
            case Status.DONE:
                return rec.result.tested_at
            case Status.NOT_DONE:
                return rec.due_at
            case Status.WITHDRAWN:
                return rec.upgraded_to_high_at
        return rec.recommended_at

    @property
    def result(self) -> Result | None:
        """The result the action reports: only a done recommendation has one."""
        return self.recommendation.result if self.status is Status.DONE else None

    @property
    def event_id(self) -> uuid.UUID:
        """Derived from everything the action says, so re-processing yields the same id."""
        rec = self.recommendation
        return derived_event_id("urinalysis-action", rec.episode_id, self.status.value, self.on_time,
                                self.result.event_id if self.result else None, rec.recommended_at.isoformat())


@dataclass(frozen=True)
class PathwayState:
    """One resident's recommendations (oldest first) and recent urinalysis results (by time)."""

    recommendations: tuple[Recommendation, ...] = ()
    results: tuple[Result, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.recommendations and not self.results

    def to_json(self) -> dict:
        return {"recommendations": [r.to_json() for r in self.recommendations],
                "results": [r.to_json() for r in self.results]}

    @classmethod
    def from_json(cls, data: dict | None) -> PathwayState:
        if not data:
            return cls()
        return cls(recommendations=tuple(Recommendation.from_json(r) for r in data.get("recommendations", ())),
                   results=tuple(Result.from_json(r) for r in data.get("results", ())))


def _short(event_id: uuid.UUID) -> str:
    return event_id.hex[:16]


def _settle(rec: Recommendation) -> tuple[Recommendation, list[Action]]:
    """The action due if the recommendation's status (or what it reports) differs from the last published."""
    status, on_time = rec.status()
    action = Action(status, on_time, rec)
    if _short(action.event_id) == rec.published:
        return rec, []
    published = replace(rec, published=_short(action.event_id))
    return published, [Action(status, on_time, published)]


def _first_result(results: tuple[Result, ...], rec: Recommendation) -> Result | None:
    first = None
    for result in results:
        if result.answers(rec) and result.before(first):
            first = result
    return first


def _replace_rec(state: PathwayState, index: int, rec: Recommendation) -> PathwayState:
    recs = list(state.recommendations)
    recs[index] = rec
    return replace(state, recommendations=tuple(recs))


def on_band(state: PathwayState, rules: PathwayRules, episode_id: str, risk: str, raised_at: datetime
            ) -> tuple[PathwayState, list[Action]]:
    """An escalation band raised or upgraded (`raised_at` the band's time). Within an episode bands come in
    increasing severity, so its amber bands come before its high one.

    The first amber band recommends a urinalysis (``recommended``, then at once whatever a result already
    known makes of it); an amber band raised earlier than the one that recommended moves the recommendation to
    it, as the indicator takes the earliest; a high band may withdraw it."""
    if not rules.enabled:
        return state, []
    actions: list[Action] = []
    index = next((i for i, r in enumerate(state.recommendations) if r.episode_id == episode_id), None)
    if risk in rules.recommend_at_risks:
        target = timedelta(seconds=rules.target_s)
        if index is None:
            rec = Recommendation(episode_id, risk, raised_at, raised_at + target)
            rec = replace(rec, result=_first_result(state.results, rec))
            announced = Action(Status.RECOMMENDED, None, rec)
            rec = replace(rec, published=_short(announced.event_id))
            actions.append(Action(Status.RECOMMENDED, None, rec))
            ordered = sorted([*state.recommendations, rec], key=lambda r: (r.recommended_at, r.episode_id))
            state = replace(state, recommendations=tuple(ordered[-MAX_RECOMMENDATIONS:]))
            index = next((i for i, r in enumerate(state.recommendations) if r.episode_id == episode_id), None)
            if index is None:
                return state, []  # older than every recommendation kept: beyond correction
        elif raised_at < state.recommendations[index].recommended_at:
            moved = replace(state.recommendations[index], risk=risk, recommended_at=raised_at,
                            due_at=raised_at + target)
            earlier = _first_result(state.results, moved)
            if earlier is not None and earlier.before(moved.result):
                moved = replace(moved, result=earlier)
            state = _replace_rec(state, index, moved)
    if risk == "high" and index is not None:
        rec = state.recommendations[index]
        if rec.high_at is None or raised_at < rec.high_at:
            state = _replace_rec(state, index, replace(rec, high_at=raised_at))
    if index is not None:
        rec, settled = _settle(state.recommendations[index])
        state = _replace_rec(state, index, rec)
        actions += settled
    return state, actions


def on_result(state: PathwayState, rules: PathwayRules, event_id: str, tested_at: datetime,
              episode_id: str | None = None) -> tuple[PathwayState, list[Action]]:
    """A urinalysis taken at `tested_at`, naming `episode_id` or none: it answers each recommendation it may
    answer (see the module) made at or before it whose known result is later (the first result counts, as in
    the indicator), and is remembered for recommendations still to be made. The same result again changes
    nothing."""
    if not rules.enabled:
        return state, []
    result = Result(tested_at, event_id, episode_id)
    if result in state.results:
        return state, []
    ordered = sorted({*state.results, result}, key=lambda r: (r.tested_at, r.event_id))
    state = replace(state, results=tuple(ordered[-MAX_RESULTS:]))
    actions: list[Action] = []
    recs = []
    for rec in state.recommendations:
        if result.answers(rec) and result.before(rec.result):
            rec, settled = _settle(replace(rec, result=result))
            actions += settled
        recs.append(rec)
    return replace(state, recommendations=tuple(recs)), actions


def on_clock(state: PathwayState, clock: datetime) -> tuple[PathwayState, list[Action]]:
    """The judgement clock reached `clock`: recommendations due by then without a result are not done."""
    actions: list[Action] = []
    recs = []
    for rec in state.recommendations:
        if not rec.past_due and clock >= rec.due_at:
            rec, settled = _settle(replace(rec, past_due=True))
            actions += settled
        recs.append(rec)
    return replace(state, recommendations=tuple(recs)), actions


def prune(state: PathwayState, rules: PathwayRules, clock: datetime) -> PathwayState:
    """Forget recommendations made, and results taken, more than `keep_s` before `clock`: they fall in no
    indicator window any more, so nothing about them can change what anyone sees."""
    horizon = clock - timedelta(seconds=rules.keep_s)
    recs = tuple(r for r in state.recommendations if r.recommended_at >= horizon)
    results = tuple(r for r in state.results if r.tested_at >= horizon)
    if (recs, results) == (state.recommendations, state.results):
        return state
    return PathwayState(recs, results)
