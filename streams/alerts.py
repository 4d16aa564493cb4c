"""Alerts for consumers that are not Prometheus, as plain functions of the events the worker publishes.

Red is what pages people (the Prometheus rules in ``deploy/prometheus/alerts.yml`` page on the same
conditions): a high-risk NEWS2 escalation raised or upgraded — the RCP response is an emergency assessment
(news2.md §4, Chart 4) — and one still unacknowledged at its deadline; and a location's care-quality
indicator turning red. Ids derive from the cause, so a re-published cause gives the same alert id.
"""

from __future__ import annotations

from datetime import datetime

from carepulse import events
from indicators.quality import CARE_TZ


def _envelope(cause: events.Event, now: datetime, worker_id: str) -> dict:
    return dict(occurred_at=cause.occurred_at, received_at=now, source=events.Source(gateway_id=worker_id),
                location_id=cause.location_id, cause_event_id=cause.event_id)


def for_escalation(event: events.Event, now: datetime, worker_id: str) -> events.Alert | None:
    """A critical clinical alert for a red escalation raised or upgraded, or gone overdue; else None."""
    if isinstance(event, events.Escalation) and event.risk == "high" and event.status in ("raised", "upgraded"):
        return events.Alert(
            event_id=events.derived_event_id("alert", "red_escalation", event.event_id),
            alert="red_escalation", severity="critical", category="clinical", resident_id=event.resident_id,
            summary=f"Red NEWS2 escalation ({event.status}, NEWS2 {event.total if event.total is not None else '≥ 7'}) "
                    f"for {event.resident_id}: acknowledge by {event.deadline_at:%H:%M} UTC",
            **_envelope(event, now, worker_id))
    if isinstance(event, events.EscalationOverdue) and event.risk == "high":
        return events.Alert(
            event_id=events.derived_event_id("alert", "red_escalation_overdue", event.event_id),
            alert="red_escalation_overdue", severity="critical", category="clinical", resident_id=event.resident_id,
            summary=f"Red NEWS2 escalation for {event.resident_id} not acknowledged by its deadline "
                    f"{event.deadline_at:%H:%M} UTC",
            **_envelope(event, now, worker_id))
    return None


def indicator_turned_red(update: events.IndicatorUpdate, now: datetime, worker_id: str) -> events.Alert:
    """A quality alert for an indicator that turned red; one id per indicator per local day, so a worker
    that restarts and sees it red again repeats the same alert rather than a new one."""
    return events.Alert(
        event_id=events.derived_event_id("alert", "indicator_red", update.location_id, update.indicator_id,
                                         update.window_end.astimezone(CARE_TZ).date().isoformat()),
        alert="indicator_red", severity="warning", category="quality", indicator_id=update.indicator_id,
        summary=f"{update.title} at {update.location_id} is red: "
                f"{'-' if update.value is None else f'{update.value:.1f}'} {update.unit}",
        **_envelope(update, now, worker_id))
