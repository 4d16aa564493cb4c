"""From an observation-set event to NEWS2 score and escalation events: the adapter around `indicators.news2`.

No Kafka here: `score_observation_set` is a plain function of its input (and `received_at`), so the
worker, the tests and replays all build byte-identical output events. Output ids are derived from
the input id, so re-processing after a restart yields the same ids and consumers can deduplicate.
"""

from __future__ import annotations

from datetime import datetime

from carepulse import events
from indicators import news2

#: RCP Chart 2/4 (news2.md §3–4): low-medium ("urgent ward-based response"), medium ("urgent response")
#: and high ("emergency response") each call for a clinical response beyond routine monitoring.
ESCALATING_RISKS = frozenset({news2.Risk.LOW_MEDIUM, news2.Risk.MEDIUM, news2.Risk.HIGH})


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


def score_observation_set(
    event: events.ObservationSet, received_at: datetime
) -> tuple[events.News2Scored, events.Escalation | None]:
    """Score one set; raises `news2.ImpossibleValue` for a physiologically impossible value (never scored)."""
    result = news2.score(to_core(event))
    common = dict(
        occurred_at=event.occurred_at,
        received_at=received_at,
        source=event.source,
        location_id=event.location_id,
        resident_id=event.resident_id,
    )
    score_id = events.derived_event_id("news2-score", event.event_id)
    if isinstance(result, news2.IncompleteScore):
        scored = events.News2Scored(
            event_id=score_id,
            observation_set_id=event.event_id,
            complete=False,
            parameter_scores=dict(result.parameter_scores),
            missing=list(result.missing),
            any_single_3=result.any_single_3,
            rules_version=result.rules_version,
            **common,
        )
        return scored, None
    scored = events.News2Scored(
        event_id=score_id,
        observation_set_id=event.event_id,
        complete=True,
        parameter_scores=dict(result.parameter_scores),
        any_single_3=result.any_single_3,
        total=result.total,
        risk=result.risk.value,
        monitoring=result.monitoring,
        monitoring_interval_minutes=result.monitoring_interval_minutes,
        response=result.response,
        rules_version=result.rules_version,
        **common,
    )
    if result.risk not in ESCALATING_RISKS:
        return scored, None
    escalation = events.Escalation(
        event_id=events.derived_event_id("escalation", event.event_id),
        episode_id=events.derived_event_id("episode", event.event_id),
        risk=result.risk.value,
        total=result.total,
        any_single_3=result.any_single_3,
        score_event_id=score_id,
        response=result.response,
        rules_version=result.rules_version,
        **common,
    )
    return scored, escalation
