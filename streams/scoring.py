"""From an observation-set event to a NEWS2 score event: the adapter around `indicators.news2`.

No Kafka here: a plain function of its input (and `received_at`), so the worker, the tests and replays
all build identical output events. The output id is derived from the input id, so re-processing after a
restart yields the same id and consumers can deduplicate.
"""

from __future__ import annotations

from datetime import datetime

from carepulse import events
from indicators import news2


def to_core(event: events.ObservationSet) -> news2.ObservationSet:
    return news2.ObservationSet(
        respiration_rate=event.respiration_rate,
        spo2=event.spo2,
        spo2_scale=event.spo2_scale,
        on_oxygen=event.on_oxygen,
        systolic_bp=event.systolic_bp,
        pulse=event.pulse,
        consciousness=event.consciousness,
        temperature=event.temperature,
    )


def score_observation_set(event: events.ObservationSet, received_at: datetime) -> events.News2Scored:
    """Score one set; raises `news2.ImpossibleValue` for a physiologically impossible value (never scored)."""
    result = news2.score(to_core(event))
    common = dict(
        event_id=events.news2_score_id(event.event_id),
        observation_set_id=event.event_id,
        occurred_at=event.occurred_at,
        received_at=received_at,
        source=event.source,
        location_id=event.location_id,
        resident_id=event.resident_id,
        parameter_scores=dict(result.parameter_scores),
        any_single_3=result.any_single_3,
        rules_version=result.rules_version,
        late=event.late,
    )
    if isinstance(result, news2.IncompleteScore):
        return events.News2Scored(complete=False, missing=list(result.missing), **common)
    return events.News2Scored(
        complete=True,
        total=result.total,
        risk=result.risk.value,
        monitoring=result.monitoring,
        monitoring_interval_minutes=result.monitoring_interval_minutes,
        response=result.response,
        **common,
    )
