"""Alerts on the `alerts` topic: red escalations raised or overdue, and indicators turning red."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from carepulse import events, topics
from streams import alerts
from streams.location import IndicatorBoard, LocationStore
from tests.indicators import test_recompute as hand_built

NOW = hand_built.AS_OF


def escalation(status: str, risk: str) -> events.Escalation:
    return events.Escalation(
        event_id=uuid.uuid4(), occurred_at=NOW, received_at=NOW, source=events.Source(gateway_id="w"),
        location_id="home-a", resident_id="r1", episode_id=uuid.uuid4(), status=status, risk=risk, total=8,
        any_single_3=True, response="r", rules_version="x", raised_at=NOW, deadline_at=NOW + timedelta(minutes=30))


@pytest.mark.parametrize(("status", "risk", "expected"), [
    ("raised", "high", "red_escalation"), ("upgraded", "high", "red_escalation"), ("acknowledged", "high", None),
    ("resolved", "high", None), ("raised", "medium", None), ("upgraded", "low-medium", None),
])
def test_red_escalations_raised_or_upgraded_alert(status, risk, expected):
    event = escalation(status, risk)
    alert = alerts.for_escalation(event, NOW, "w")
    assert (alert.alert if alert else None) == expected
    if alert:
        assert (alert.severity, alert.category, alert.resident_id, alert.cause_event_id, alert.location_id) == (
            "critical", "clinical", "r1", event.event_id, "home-a")
        assert alert.event_id == alerts.for_escalation(event, NOW + timedelta(seconds=5), "w").event_id


@pytest.mark.parametrize(("risk", "expected"), [("high", "red_escalation_overdue"), ("medium", None)])
def test_a_red_escalation_past_its_deadline_alerts(risk, expected):
    overdue = events.EscalationOverdue(
        event_id=uuid.uuid4(), occurred_at=NOW, received_at=NOW, source=events.Source(gateway_id="w"),
        location_id="home-a", resident_id="r1", episode_id=uuid.uuid4(), risk=risk, raised_at=NOW,
        deadline_at=NOW + timedelta(minutes=30))
    alert = alerts.for_escalation(overdue, NOW, "w")
    assert (alert.alert if alert else None) == expected


def test_an_indicator_alerts_when_it_turns_red_not_while_it_stays_red():
    store = LocationStore({})
    for event in hand_built.care_home():
        store.apply(event)
    board = IndicatorBoard(store, worker_id="w", wall_clock_lag=timedelta(minutes=5))
    first = board.updates("home-a", NOW)
    red = sorted(e.indicator_id for spec, _, e in first if spec is topics.INDICATORS and e.status == "red")
    raised = [e for spec, _, e in first if spec is topics.ALERTS]
    assert red and sorted(a.indicator_id for a in raised) == red
    assert all((a.alert, a.severity, a.category) == ("indicator_red", "warning", "quality") for a in raised)
    store.apply(hand_built.make(events.FluidIntake, NOW - timedelta(minutes=1), resident_id="r1", offered_ml=100,
                                consumed_ml=50, method="carer", recorded_by="c1"))
    assert not [e for spec, _, e in board.updates("home-a", NOW) if spec is topics.ALERTS]
    board.forget()  # a restarted worker repeats the same alerts, with the same ids
    assert [e.event_id for spec, _, e in board.updates("home-a", NOW) if spec is topics.ALERTS] == [
        a.event_id for a in raised]
