"""When the next NEWS2 observation set is due, pure.

After each complete score the next set is due within the RCP minimum monitoring frequency for that
score (Chart 4 [C4]; intervals in ``indicators/config/news2.toml``). Continuous monitoring (a high score)
has no due time: the resident is under an escalation instead (cqc_domain.md §2.2 row 8, "treat as
escalated"). Only complete sets satisfy a due observation (row 8: "repeat complete observation sets").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ObservationDue:
    due_at: datetime
    last_score_event_id: str
    last_scored_at: datetime
    monitoring: str
    overdue_reported: bool = False

    def to_json(self) -> dict:
        return {
            "due_at": self.due_at.isoformat(),
            "last_score_event_id": self.last_score_event_id,
            "last_scored_at": self.last_scored_at.isoformat(),
            "monitoring": self.monitoring,
            "overdue_reported": self.overdue_reported,
        }

    @classmethod
    def from_json(cls, data: dict) -> ObservationDue:
        return cls(
            due_at=datetime.fromisoformat(data["due_at"]),
            last_score_event_id=data["last_score_event_id"],
            last_scored_at=datetime.fromisoformat(data["last_scored_at"]),
            monitoring=data["monitoring"],
            overdue_reported=data["overdue_reported"],
        )


def after_complete_score(
    current: ObservationDue | None,
    scored_at: datetime,
    score_event_id: str,
    monitoring: str,
    interval_minutes: int | None,
) -> ObservationDue | None:
    """The due observation after a complete score; an older score than the one already counted changes nothing."""
    if current is not None and scored_at < current.last_scored_at:
        return current
    if interval_minutes is None:
        return None
    return ObservationDue(scored_at + timedelta(minutes=interval_minutes), score_event_id, scored_at, monitoring)


def observation_overdue(due: ObservationDue | None, clock: datetime | None) -> bool:
    """True once: the due time has passed on `clock` and it has not been reported yet."""
    return due is not None and clock is not None and not due.overdue_reported and clock >= due.due_at


def reported(due: ObservationDue) -> ObservationDue:
    return replace(due, overdue_reported=True)
