"""The NEWS2 escalation lifecycle, pure: raised → (upgraded) → acknowledged → resolved, with deadlines.

One episode per deterioration: a score at low-medium, medium or high risk opens an episode when none is
open; a worse score within an open episode upgrades it (amber to red) and restarts the clock for the
worse band's deadline, which also needs a new acknowledgement. An episode ends when a clinical review
is recorded, or after the resident's scores have stayed low for `resolve_after_low_s`.

An acknowledgement answers the band open when it was made (its event time), whatever order it is read in
relative to the scores: one made before an upgrade answers the earlier band (kept in `Episode.earlier_bands`),
one made at or after it answers the upgraded band. `band_settled` tells whether that band can still change
with scores not yet read, so that the caller can hold an acknowledgement until it cannot.

Deadlines and the other numbers come from ``indicators/config/escalation.toml`` (each with its source).
Time is always a parameter; nothing here reads a clock.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from indicators.news2 import Risk

#: Escalating risks in increasing severity (RCP Chart 2, news2.md §3).
SEVERITY: dict[Risk, int] = {Risk.LOW_MEDIUM: 1, Risk.MEDIUM: 2, Risk.HIGH: 3}


@dataclass(frozen=True)
class EscalationRules:
    version: str
    deadline_s: dict[Risk, int]
    resolve_after_low_s: int
    assembly_window_s: int
    allowed_lateness_s: int
    idle_after_s: int

    def deadline(self, risk: Risk) -> timedelta:
        return timedelta(seconds=self.deadline_s[risk])


def load_rules(path: Path | None = None) -> EscalationRules:
    """The packaged rules, or an alternative file with the same layout (e.g. seconds-long deadlines in tests)."""
    text = path.read_text() if path else resources.files("indicators").joinpath("config/escalation.toml").read_text()
    config = tomllib.loads(text)
    required = {"deadline_s": (), "resolution": ("low_for_s",), "assembly": ("window_s",),
                "lateness": ("allowed_s", "idle_after_s")}
    for section, names in required.items():
        if not isinstance(config.get(section), dict):
            raise ValueError(f"escalation rules: section [{section}] is missing")
        for name in names:
            if name not in config[section]:
                raise ValueError(f"escalation rules: {section}.{name} is missing")
        for name, entry in config[section].items():
            if not isinstance(entry, dict) or not entry.get("source"):
                raise ValueError(f"escalation rules: {section}.{name} has no source")
            value = entry.get("value")
            # bool is an int in Python: `value = true` must not become a 1-second deadline.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"escalation rules: {section}.{name} must be a non-negative whole number of seconds")
    if set(config["deadline_s"]) != set(SEVERITY):
        raise ValueError(f"escalation rules: deadlines needed for exactly {', '.join(sorted(SEVERITY))}; "
                         f"got {', '.join(sorted(config['deadline_s'])) or 'none'}")
    deadlines = {Risk(name): entry["value"] for name, entry in config["deadline_s"].items()}
    return EscalationRules(
        version=config["rules_version"],
        deadline_s=deadlines,
        resolve_after_low_s=config["resolution"]["low_for_s"]["value"],
        assembly_window_s=config["assembly"]["window_s"]["value"],
        allowed_lateness_s=config["lateness"]["allowed_s"]["value"],
        idle_after_s=config["lateness"]["idle_after_s"]["value"],
    )


@dataclass(frozen=True)
class Episode:
    """An open escalation episode for one resident."""

    episode_id: str
    risk: Risk
    raised_at: datetime  # event time of the score that raised or last upgraded it
    deadline_at: datetime
    total: int | None
    any_single_3: bool
    score_event_id: str
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    overdue_reported: bool = False
    low_since: datetime | None = None
    # The bands this episode was in before the open one, oldest first, each as it stood when it was upgraded
    # (at most two: bands only rise). An acknowledgement made before the upgrade but read after it answers
    # the band open when it was made; the indicators count each band's acknowledgement against its deadline.
    earlier_bands: tuple[Episode, ...] = ()

    def to_json(self) -> dict:
        return {
            "episode_id": self.episode_id,
            "risk": self.risk.value,
            "raised_at": self.raised_at.isoformat(),
            "deadline_at": self.deadline_at.isoformat(),
            "total": self.total,
            "any_single_3": self.any_single_3,
            "score_event_id": self.score_event_id,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
            "overdue_reported": self.overdue_reported,
            "low_since": self.low_since.isoformat() if self.low_since else None,
            "earlier_bands": [band.to_json() for band in self.earlier_bands],
        }

    @classmethod
    def from_json(cls, data: dict) -> Episode:
        def when(key: str) -> datetime | None:
            return datetime.fromisoformat(data[key]) if data.get(key) else None

        return cls(
            episode_id=data["episode_id"],
            risk=Risk(data["risk"]),
            raised_at=datetime.fromisoformat(data["raised_at"]),
            deadline_at=datetime.fromisoformat(data["deadline_at"]),
            total=data["total"],
            any_single_3=data["any_single_3"],
            score_event_id=data["score_event_id"],
            acknowledged_at=when("acknowledged_at"),
            acknowledged_by=data.get("acknowledged_by"),
            overdue_reported=data.get("overdue_reported", False),
            low_since=when("low_since"),
            earlier_bands=tuple(cls.from_json(band) for band in data.get("earlier_bands", ())),
        )


@dataclass(frozen=True)
class Transition:
    """What happened to an episode; the stream publishes one escalation event per transition."""

    status: str  # "raised", "upgraded", "acknowledged" or "resolved"
    episode: Episode
    at: datetime
    resolution: str | None = None


@dataclass(frozen=True)
class ScoreFacts:
    """What the lifecycle needs of a NEWS2 result. For an incomplete set, `risk` is the risk of the parameters
    present: scores only add up, so it is a lower bound, and a single 3 escalates before the set completes."""

    risk: Risk
    total: int | None
    any_single_3: bool
    occurred_at: datetime
    score_event_id: str
    complete: bool


def on_score(
    episode: Episode | None, score: ScoreFacts, rules: EscalationRules, new_episode_id: str
) -> tuple[Episode | None, list[Transition]]:
    """Apply one NEWS2 result to the resident's open episode (or none)."""
    if score.risk in SEVERITY:
        if episode is None:
            raised = Episode(
                episode_id=new_episode_id,
                risk=score.risk,
                raised_at=score.occurred_at,
                deadline_at=score.occurred_at + rules.deadline(score.risk),
                total=score.total,
                any_single_3=score.any_single_3,
                score_event_id=score.score_event_id,
            )
            return raised, [Transition("raised", raised, score.occurred_at)]
        if SEVERITY[score.risk] > SEVERITY[episode.risk]:
            upgraded = replace(
                episode,
                risk=score.risk,
                raised_at=score.occurred_at,
                deadline_at=score.occurred_at + rules.deadline(score.risk),
                total=score.total,
                any_single_3=score.any_single_3,
                score_event_id=score.score_event_id,
                acknowledged_at=None,
                acknowledged_by=None,
                overdue_reported=False,
                low_since=None,
                earlier_bands=(*episode.earlier_bands, replace(episode, earlier_bands=(), low_since=None)),
            )
            return upgraded, [Transition("upgraded", upgraded, score.occurred_at)]
        return (replace(episode, low_since=None) if episode.low_since else episode), []
    if episode is None or not score.complete:
        return episode, []
    low_since = episode.low_since or score.occurred_at
    if score.occurred_at - low_since >= timedelta(seconds=rules.resolve_after_low_s):
        low_for_s = rules.resolve_after_low_s
        resolution = f"scores low for {low_for_s // 3600} h" if low_for_s % 3600 == 0 else f"scores low for {low_for_s} s"
        return None, [Transition("resolved", episode, score.occurred_at, resolution)]
    return replace(episode, low_since=low_since), []


def on_acknowledgement(episode: Episode | None, at: datetime, by: str) -> tuple[Episode | None, list[Transition]]:
    """Staff acknowledged, at `at`, the band of the episode open then. Only the first acknowledgement of a band
    counts. One made before the open band was raised answers the earlier band open at that time (an amber
    acknowledgement delivered after the upgrade to red is not the new acknowledgement red needs), or nothing
    if it was made before the episode began. The transition carries the band it acknowledged."""
    if episode is None:
        return None, []
    if at >= episode.raised_at:
        if episode.acknowledged_at is not None:
            return episode, []
        acknowledged = replace(episode, acknowledged_at=at, acknowledged_by=by)
        return acknowledged, [Transition("acknowledged", acknowledged, at)]
    for index in reversed(range(len(episode.earlier_bands))):
        band = episode.earlier_bands[index]
        if band.raised_at <= at:
            if band.acknowledged_at is not None:
                return episode, []
            acknowledged = replace(band, acknowledged_at=at, acknowledged_by=by)
            bands = (*episode.earlier_bands[:index], acknowledged, *episode.earlier_bands[index + 1:])
            return replace(episode, earlier_bands=bands), [Transition("acknowledged", acknowledged, at)]
    return episode, []


def band_settled(episode: Episode | None, at: datetime) -> bool:
    """Whether the band an acknowledgement made at `at` answers is settled, given the scores read so far.

    Scores and acknowledgements arrive on different topics, in no relative order. A score made at or before
    `at` but read later could still open or upgrade the episode, and the acknowledgement would then answer
    that band instead; so with no episode open nothing is settled. It is settled when `at` falls before the
    open band was raised: it answers an earlier band, or none (a resident's scores are read in the order they
    were made). And it is settled when the open band is red and `at` is within red's deadline: no score can
    upgrade red, and in that span red is what a made acknowledgement must stop at once. Later than the
    deadline nothing is urgent any more, and an episode may have been closed (a clinical review, a discharge)
    by an input still to be read, so it waits like the others."""
    if episode is None:
        return False
    if at < episode.raised_at:
        return True
    return SEVERITY[episode.risk] == max(SEVERITY.values()) and at <= episode.deadline_at


def on_clinical_review(episode: Episode | None, at: datetime, outcome: str) -> tuple[None, list[Transition]]:
    """A recorded clinical review ends the episode (cqc_domain.md §2.2 row 8)."""
    if episode is None:
        return None, []
    return None, [Transition("resolved", episode, at, f"clinical review: {outcome}")]


def escalation_overdue(episode: Episode | None, clock: datetime) -> bool:
    """True once: the episode's deadline has passed on `clock` with no acknowledgement reported yet."""
    return (
        episode is not None
        and episode.acknowledged_at is None
        and not episode.overdue_reported
        and clock >= episode.deadline_at
    )


def judgement_clock(
    stream_time: datetime | None, wall_now: datetime, idle_for_s: float, rules: EscalationRules
) -> datetime | None:
    """The time against which deadlines are judged.

    While events flow, time is what the events say, so a replay of history judges each deadline as it
    happened; when the stream has been idle for `idle_after_s`, the wall clock moves time on. Event time
    never runs ahead of the wall clock (a fast device clock must not expire deadlines early). Either way
    judgement waits `allowed_lateness_s`, so an acknowledgement made in time but delivered late still counts.
    """
    if stream_time is not None:
        # An event time ahead of the wall clock is a device clock running fast, not the future arriving.
        stream_time = min(stream_time, wall_now)
    candidates = [t for t in (stream_time, wall_now if idle_for_s >= rules.idle_after_s else None) if t is not None]
    if not candidates:
        return None
    return max(candidates) - timedelta(seconds=rules.allowed_lateness_s)
