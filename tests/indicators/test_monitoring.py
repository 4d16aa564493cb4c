"""When the next observation set is due (indicators/monitoring.py), fed by real NEWS2 scores.

RCP Chart 4 [C4] (news2.md §4, cqc_domain.md §2.2 row 8): total 0 -> 12-hourly (720 min); 1-4 -> 4-6-hourly
(360 min, the 6-hour upper end); a single 3 or 5-6 -> 1-hourly (60 min); >= 7 -> continuous (no due time).
The intervals are written out here, so a wrong number in news2.toml fails these tests.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from indicators import news2
from indicators.monitoring import ObservationDue, after_complete_score, observation_overdue, reported
from tests.factories import NORMAL_VITALS, RED_VITALS, T0

MIN = timedelta(minutes=1)
H = timedelta(hours=1)

DUE = [
    # (name, vitals changed from normal, total, expected monitoring, expected due after the score or None)
    ("total 0", {}, 0, "12-hourly", T0 + 720 * MIN),
    ("total 1", dict(temperature=38.5), 1, "4-6-hourly", T0 + 360 * MIN),
    ("total 4", dict(respiration_rate=22, pulse=95, temperature=38.5), 4, "4-6-hourly", T0 + 360 * MIN),
    ("single 3", dict(consciousness="C"), 3, "1-hourly", T0 + 60 * MIN),
    ("total 5", dict(respiration_rate=22, pulse=115, temperature=38.5), 5, "1-hourly", T0 + 60 * MIN),
    ("total >= 7: continuous", RED_VITALS, 15, "continuous", None),
]


@pytest.mark.parametrize(("vitals", "total", "monitoring", "due_at"), [row[1:] for row in DUE],
                         ids=[row[0] for row in DUE])
def test_due_interval_per_monitoring(vitals, total, monitoring, due_at):
    result = news2.score(news2.ObservationSet(**{**NORMAL_VITALS, **vitals}))
    assert (result.total, result.monitoring) == (total, monitoring)
    expected = None if due_at is None else ObservationDue(due_at, "score-1", T0, monitoring)
    assert after_complete_score(None, T0, "score-1", result.monitoring, result.monitoring_interval_minutes) == expected


def test_a_high_score_replaces_a_due_observation_with_continuous_monitoring():
    current = ObservationDue(T0 + 12 * H, "score-0", T0, "12-hourly")
    assert after_complete_score(current, T0 + H, "score-1", "continuous", None) is None


ORDER = [
    ("newer replaces", T0 + H, ObservationDue(T0 + H + 60 * MIN, "score-1", T0 + H, "1-hourly")),
    ("same time replaces", T0, ObservationDue(T0 + 60 * MIN, "score-1", T0, "1-hourly")),
    ("older ignored", T0 - MIN, ObservationDue(T0 + 6 * H, "score-0", T0, "4-6-hourly")),
]


@pytest.mark.parametrize(("scored_at", "expected"), [row[1:] for row in ORDER], ids=[row[0] for row in ORDER])
def test_only_the_latest_score_sets_the_due_time(scored_at, expected):
    current = ObservationDue(T0 + 6 * H, "score-0", T0, "4-6-hourly")
    assert after_complete_score(current, scored_at, "score-1", "1-hourly", 60) == expected


def test_an_older_high_score_does_not_cancel_the_due_observation():
    current = ObservationDue(T0 + 6 * H, "score-0", T0, "4-6-hourly")
    assert after_complete_score(current, T0 - MIN, "score-1", "continuous", None) == current


DUE_6H = ObservationDue(T0 + 6 * H, "score-0", T0, "4-6-hourly")
OVERDUE = [
    ("before due", DUE_6H, T0 + 6 * H - timedelta(seconds=1), False),
    ("at due", DUE_6H, T0 + 6 * H, True),
    ("after due", DUE_6H, T0 + 9 * H, True),
    ("already reported", reported(DUE_6H), T0 + 9 * H, False),
    ("nothing due", None, T0 + 9 * H, False),
    ("no clock yet", DUE_6H, None, False),
]


@pytest.mark.parametrize(("due", "clock", "expected"), [row[1:] for row in OVERDUE], ids=[row[0] for row in OVERDUE])
def test_observation_overdue(due, clock, expected):
    assert observation_overdue(due, clock) is expected


def test_overdue_is_reported_once_and_a_new_score_rearms_it():
    clock = T0 + 7 * H
    assert observation_overdue(DUE_6H, clock) is True
    after = reported(DUE_6H)
    assert after == ObservationDue(T0 + 6 * H, "score-0", T0, "4-6-hourly", overdue_reported=True)
    assert observation_overdue(after, clock + H) is False
    rearmed = after_complete_score(after, T0 + 7 * H, "score-1", "4-6-hourly", 360)
    assert rearmed == ObservationDue(T0 + 13 * H, "score-1", T0 + 7 * H, "4-6-hourly")
    assert [observation_overdue(rearmed, T0 + h * H) for h in (12, 13)] == [False, True]


@pytest.mark.parametrize("due", [DUE_6H, reported(DUE_6H)], ids=["fresh", "reported"])
def test_json_round_trip(due):
    assert ObservationDue.from_json(json.loads(json.dumps(due.to_json()))) == due
