"""Everything the worker does for one resident, as plain functions: (state, input, now) -> (state, outputs).

The Faust agent only routes a resident's messages here, sends the outputs and stores the state in a
changelog-backed table; the timer calls `tick`. Tests drive this module directly, and end-to-end
tests drive it through the broker. The rules themselves are the pure cores in `indicators`
(`assembly`, `escalation`, `monitoring`, `news2`, `urinalysis`).

The urinalysis pathway (issue 11: a urinalysis recommended for each amber episode, and whether it was done
in time) runs only when the quality rules switch it on. It is off by default: NICE and UKHSA advise against
dipstick diagnosis of UTI in people over 65 (cqc_domain.md §2.2 row 13, [U3]), so it waits for a clinical
safety officer's sign-off.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from carepulse import events, topics
from indicators import assembly, escalation, monitoring, news2, quality, urinalysis
from streams.scoring import score_observation_set, to_core

#: How many recent input ids each resident's state remembers for deduplication, as 64-bit prefixes.
#: Redelivery after a crash or rebalance replays the uncommitted tail of a partition (Faust commits
#: every few seconds), and a gateway replays at most one unacknowledged round.
RECENT_IDS_PER_RESIDENT = 64
#: How many acknowledgements read ahead of their episode a resident's state holds (the oldest go first);
#: far more than a resident has episodes in the days a backlog can span.
MAX_PENDING_ACKNOWLEDGEMENTS = 16


def _short(event_id: uuid.UUID | str) -> str:
    return uuid.UUID(str(event_id)).hex[:16]


@dataclass(frozen=True)
class Output:
    topic: topics.TopicSpec
    key: str
    event: events.Event


@dataclass(frozen=True)
class ResidentState:
    resident_id: str | None = None
    location_id: str | None = None
    source: events.Source | None = None
    recent: tuple[str, ...] = ()
    # The latest event time of this resident's readings: the topic they arrive on is ordered per
    # resident, so this is what a reading is late against (other topics may be read ahead of it).
    latest_reading_at: datetime | None = None
    scale2_since: datetime | None = None
    open_set: assembly.OpenSet | None = None
    episode: escalation.Episode | None = None
    due: monitoring.ObservationDue | None = None
    # Acknowledgements (made at, by, their source) waiting for the band they answer to be settled, oldest
    # first: inputs arrive on different topics, read in no guaranteed relative order (a backlog of
    # acknowledgements can be read before the observations they answer). Each waits until no observation still
    # to be read can change the band open when it was made (`escalation.band_settled`) or the resident's event
    # time reaches it, then answers that band; see `ResidentProcessor._answer_pending`.
    pending_acknowledgements: tuple[tuple[datetime, str, events.Source | None], ...] = ()
    # The urinalysis pathway's recommendations and recent results (only while the pathway is switched on).
    urinalysis_pathway: urinalysis.PathwayState = field(default_factory=urinalysis.PathwayState)

    def to_json(self) -> dict:
        return {
            "resident_id": self.resident_id,
            "location_id": self.location_id,
            "source": self.source.model_dump() if self.source else None,
            "recent": list(self.recent),
            "latest_reading_at": self.latest_reading_at.isoformat() if self.latest_reading_at else None,
            "scale2_since": self.scale2_since.isoformat() if self.scale2_since else None,
            "open_set": self.open_set.to_json() if self.open_set else None,
            "episode": self.episode.to_json() if self.episode else None,
            "due": self.due.to_json() if self.due else None,
            "pending_acknowledgements": [[at.isoformat(), by, source.model_dump() if source else None]
                                         for at, by, source in self.pending_acknowledgements],
            "urinalysis_pathway": None if self.urinalysis_pathway.empty else self.urinalysis_pathway.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict | None) -> ResidentState:
        if not data:
            return cls()

        def when(key: str) -> datetime | None:
            return datetime.fromisoformat(data[key]) if data.get(key) else None

        return cls(
            resident_id=data.get("resident_id"),
            location_id=data.get("location_id"),
            source=events.Source(**data["source"]) if data.get("source") else None,
            recent=tuple(data.get("recent", ())),
            latest_reading_at=when("latest_reading_at"),
            scale2_since=when("scale2_since"),
            open_set=assembly.OpenSet.from_json(data["open_set"]) if data.get("open_set") else None,
            episode=escalation.Episode.from_json(data["episode"]) if data.get("episode") else None,
            due=monitoring.ObservationDue.from_json(data["due"]) if data.get("due") else None,
            # A state stored before acknowledgements kept their source has [at, by] entries.
            pending_acknowledgements=tuple(
                (datetime.fromisoformat(at), by, events.Source(**rest[0]) if rest and rest[0] else None)
                for at, by, *rest in data.get("pending_acknowledgements", ())
            ),
            urinalysis_pathway=urinalysis.PathwayState.from_json(data.get("urinalysis_pathway")),
        )

    def seen(self, event_id: uuid.UUID | str) -> bool:
        return _short(event_id) in self.recent

    def remember(self, event: events.ResidentEvent) -> ResidentState:
        latest = self.latest_reading_at
        if isinstance(event, (events.DeviceReading, events.ManualObservation)):
            latest = event.occurred_at if latest is None else max(latest, event.occurred_at)
        return replace(
            self,
            resident_id=event.resident_id,
            location_id=event.location_id,
            source=self.source or event.source,
            recent=(*self.recent, _short(event.event_id))[-RECENT_IDS_PER_RESIDENT:],
            latest_reading_at=latest,
        )


@dataclass
class ResidentProcessor:
    """`quality_rules` hold the urinalysis pathway's switch and target; without them (or switched off, the
    default) the processor publishes no urinalysis actions and keeps no urinalysis state."""

    rules: escalation.EscalationRules
    worker_id: str
    outputs: list[Output] = field(default_factory=list)
    quality_rules: quality.QualityRules | None = None

    def __post_init__(self) -> None:
        self.urinalysis_rules: urinalysis.PathwayRules | None = (
            urinalysis.PathwayRules.from_quality(self.quality_rules)
            if self.quality_rules is not None and self.quality_rules.urinalysis_pathway.enabled else None)

    # -- inputs ---------------------------------------------------------------------------------------
    def handle(self, state: ResidentState, event: events.ResidentEvent, now: datetime) -> tuple[ResidentState, list[Output]]:
        """Apply one input event. Raises `news2.ImpossibleValue` for an impossible vital (the caller dead-letters it)."""
        if state.seen(event.event_id):
            return state, []  # a redelivered or duplicated input: its outputs were already sent
        self.outputs = []
        latest_before = state.latest_reading_at
        state = state.remember(event)
        if not isinstance(event, (events.EscalationAcknowledgement, events.UrinalysisResult)):
            # Observations, records and reviews move the resident's episode on in event time; acknowledgements
            # and urinalysis results do not (a backlog of them may be read ahead of everything else).
            state = self._answer_pending(state, now, made_before=event.occurred_at)
        match event:
            case events.DeviceReading() | events.ManualObservation():
                state = self._on_reading(state, event, latest_before, now)
            case events.ObservationSet():
                state = self._score_set(state, event, now)
            case events.ResidentRecord():
                state = self._on_resident_record(state, event, now)
            case events.EscalationAcknowledgement():
                state = self._acknowledge(state, event.occurred_at, event.acknowledged_by, event.source, now)
            case events.ClinicalReview():
                episode, transitions = escalation.on_clinical_review(state.episode, event.occurred_at, event.outcome)
                state = replace(state, episode=episode)
                self._publish_transitions(state, transitions, event.source, now)
            case events.UrinalysisResult():
                state = self._on_urinalysis_result(state, event, now)
        # An upgrade to red settles the acknowledgements made since it was raised.
        state = self._answer_pending(state, now)
        return state, self.outputs

    def _on_reading(
        self, state: ResidentState, event: events.DeviceReading | events.ManualObservation, latest_before: datetime | None,
        now: datetime,
    ) -> ResidentState:
        if isinstance(event, events.DeviceReading):
            values: dict = assembly.device_parameters(event.characteristic, event.values)
        else:
            values = {name: getattr(event, name) for name in assembly.SET_FIELDS if getattr(event, name) is not None}
        if not values:
            return state
        news2.score(news2.ObservationSet(**values))  # rejects an impossible value before it joins a set
        reading = assembly.Reading(str(event.event_id), event.occurred_at, values)
        open_set, ready = assembly.add_reading(state.open_set, reading, latest_before, self.rules)
        state = replace(state, open_set=open_set)
        for assembled in ready:
            state = self._score_set(state, self._set_event(state, assembled, now), now)
        if open_set is not None:
            state = self._escalate_early(state, open_set, event, now)
        return state

    def _escalate_early(
        self, state: ResidentState, open_set: assembly.OpenSet, trigger: events.ResidentEvent, now: datetime
    ) -> ResidentState:
        """A single parameter scoring 3 (or a partial total already at a trigger) escalates before the set completes."""
        partial = open_set.to_set()
        set_event = self._set_event(state, partial, now)
        result = news2.score(to_core(set_event))
        risk = news2.risk_lower_bound(result.parameter_scores)
        if risk not in escalation.SEVERITY or (state.episode and escalation.SEVERITY[risk] <= escalation.SEVERITY[state.episode.risk]):
            return state
        scored = score_observation_set(set_event, now)
        self._emit(topics.NEWS2_SCORES, scored)
        return self._apply_score(state, scored, risk, trigger.source, now)

    def _score_set(self, state: ResidentState, set_event: events.ObservationSet, now: datetime) -> ResidentState:
        scored = score_observation_set(set_event, now)
        if set_event.contributing_event_ids:
            self._emit(topics.OBSERVATION_SETS, set_event)
            state = replace(state, recent=(*state.recent, _short(set_event.event_id))[-RECENT_IDS_PER_RESIDENT:])
        self._emit(topics.NEWS2_SCORES, scored)
        if scored.late:
            return state  # recorded and scored, but a newer observation already speaks for the resident
        if scored.complete:
            state = replace(
                state,
                due=monitoring.after_complete_score(
                    state.due, scored.occurred_at, str(scored.event_id), scored.monitoring, scored.monitoring_interval_minutes
                ),
            )
            risk = news2.Risk(scored.risk)
        else:
            risk = news2.risk_lower_bound(scored.parameter_scores)
        return self._apply_score(state, scored, risk, set_event.source, now)

    def _apply_score(
        self, state: ResidentState, scored: events.News2Scored, risk: news2.Risk, source: events.Source, now: datetime
    ) -> ResidentState:
        facts = escalation.ScoreFacts(
            risk=risk, total=scored.total, any_single_3=scored.any_single_3, occurred_at=scored.occurred_at,
            score_event_id=str(scored.event_id), complete=scored.complete,
        )
        new_id = str(events.episode_id_raised_by(scored.event_id))
        episode, transitions = escalation.on_score(state.episode, facts, self.rules, new_id)
        state = replace(state, episode=episode)
        self._publish_transitions(state, transitions, source, now)
        return self._recommend_urinalysis(state, transitions, now)

    def _acknowledge(
        self, state: ResidentState, at: datetime, by: str, source: events.Source, now: datetime
    ) -> ResidentState:
        """An acknowledgement answers the band open when it was made (`escalation.on_acknowledgement`), whatever
        order it is read in. It is applied at once when that band is settled (`escalation.band_settled`: made
        before the open band was raised, or while red is open and within its deadline, so red is answered at
        once); otherwise it waits, since an observation made before it but still to be read may open or upgrade
        the episode it answers (see `_answer_pending`). So the escalation events do not depend on the order the
        topics are read in; an amber acknowledgement is published about `allowed_lateness_s` later."""
        if not escalation.band_settled(state.episode, at):
            waiting = {(pending[0], pending[1]): pending for pending in state.pending_acknowledgements}
            waiting.setdefault((at, by), (at, by, source))
            pending = tuple(waiting[key] for key in sorted(waiting))[-MAX_PENDING_ACKNOWLEDGEMENTS:]
            return replace(state, pending_acknowledgements=pending)
        episode, transitions = escalation.on_acknowledgement(state.episode, at, by)
        state = replace(state, episode=episode)
        self._publish_transitions(state, transitions, source, now)
        return state

    def _answer_pending(self, state: ResidentState, now: datetime, *, made_before: datetime | None = None,
                        made_by: datetime | None = None) -> ResidentState:
        """Apply the waiting acknowledgements, oldest first, that are now settled: made before `made_before`
        (an observation, record or review made later is about to be read: the resident's inputs up to it are
        in), made by `made_by` (the deadline timer's clock, held `allowed_lateness_s` behind the inputs and
        never past one still to be read, `streams.clocks`), or whose band is settled by what was read since
        (`escalation.band_settled`). Each answers the band open when it was made, or nothing if no episode was
        open then. It is published with its own source, however it came to be applied."""
        pending = state.pending_acknowledgements
        applied = 0
        for at, by, source in pending:
            if not ((made_before is not None and at < made_before) or (made_by is not None and at <= made_by)
                    or escalation.band_settled(state.episode, at)):
                break  # later ones are no more settled: they fall in the same band or a later one
            applied += 1
            if state.episode is not None:
                episode, transitions = escalation.on_acknowledgement(state.episode, at, by)
                state = replace(state, episode=episode)
                self._publish_transitions(
                    state, transitions, source or state.source or events.Source(gateway_id=self.worker_id), now)
        return replace(state, pending_acknowledgements=pending[applied:]) if applied else state

    # -- the urinalysis pathway ---------------------------------------------------------------------------
    def _recommend_urinalysis(self, state: ResidentState, transitions: list[escalation.Transition], now: datetime
                              ) -> ResidentState:
        """Each band raised or upgraded may recommend, move or withdraw the episode's urinalysis."""
        if self.urinalysis_rules is None:
            return state
        pathway = state.urinalysis_pathway
        for transition in transitions:
            if transition.status in ("raised", "upgraded"):
                episode = transition.episode
                pathway, actions = urinalysis.on_band(pathway, self.urinalysis_rules, episode.episode_id,
                                                      episode.risk.value, episode.raised_at)
                self._publish_urinalysis(state, actions, now)
        # Pruned on the resident's reading time, never ahead of the wall clock (a device clock may run fast).
        clock = min(state.latest_reading_at or now, now)
        return replace(state, urinalysis_pathway=urinalysis.prune(pathway, self.urinalysis_rules, clock))

    def _on_urinalysis_result(self, state: ResidentState, result: events.UrinalysisResult, now: datetime
                              ) -> ResidentState:
        """A result answers the resident's recommendations made at or before it: the one it names, or, naming
        none, every one (as the indicator matches it, ``recompute._amber_episodes``). It is accepted with or
        without a recommendation: the location's indicator reads it from ``clinical-actions`` either way."""
        if self.urinalysis_rules is None:
            return state
        pathway, actions = urinalysis.on_result(state.urinalysis_pathway, self.urinalysis_rules,
                                                str(result.event_id), result.occurred_at,
                                                str(result.episode_id) if result.episode_id else None)
        self._publish_urinalysis(state, actions, now)
        clock = min(result.occurred_at, now)
        return replace(state, urinalysis_pathway=urinalysis.prune(pathway, self.urinalysis_rules, clock))

    def _publish_urinalysis(self, state: ResidentState, actions: list[urinalysis.Action], now: datetime) -> None:
        for action in actions:
            rec, result = action.recommendation, action.result
            self._emit(topics.URINALYSIS, events.UrinalysisRecommendation(
                event_id=action.event_id,
                episode_id=uuid.UUID(rec.episode_id),
                status=action.status.value,
                risk=rec.risk,
                recommended_at=rec.recommended_at,
                due_at=rec.due_at,
                result_event_id=uuid.UUID(result.event_id) if result else None,
                tested_at=result.tested_at if result else None,
                on_time=action.on_time,
                rules_version=self.urinalysis_rules.version,
                **self._envelope(state, action.at, now),
            ))

    def _on_resident_record(self, state: ResidentState, record: events.ResidentRecord, now: datetime) -> ResidentState:
        scale2_since = record.scale2_prescription.prescribed_at if record.scale2_prescription else None
        state = replace(state, scale2_since=scale2_since)
        if record.status == "discharged" and state.episode is not None:
            transitions = [escalation.Transition("resolved", state.episode, record.occurred_at, "resident discharged")]
            state = replace(state, episode=None, due=None, open_set=None)
            self._publish_transitions(state, transitions, record.source, now)
        return state

    # -- timer ----------------------------------------------------------------------------------------
    def tick(self, state: ResidentState, clock: datetime | None, now: datetime) -> tuple[ResidentState, list[Output]]:
        """Deadlines on `clock` (see `escalation.judgement_clock`): windows closing, escalations and observations overdue."""
        self.outputs = []
        if clock is None or state.resident_id is None:
            return state, []
        open_set, ready = assembly.expire(state.open_set, clock, self.rules)
        state = replace(state, open_set=open_set)
        for assembled in ready:
            state = self._score_set(state, self._set_event(state, assembled, now), now)
        # Acknowledgements made before the deadline count before it is judged.
        state = self._answer_pending(state, now, made_by=clock)
        if escalation.escalation_overdue(state.episode, clock):
            episode = state.episode
            self._emit(topics.ESCALATIONS, events.EscalationOverdue(
                event_id=events.derived_event_id("escalation-overdue", episode.episode_id, episode.deadline_at.isoformat()),
                episode_id=uuid.UUID(episode.episode_id), risk=episode.risk.value, raised_at=episode.raised_at,
                deadline_at=episode.deadline_at, **self._envelope(state, episode.deadline_at, now),
            ))
            state = replace(state, episode=replace(episode, overdue_reported=True))
        if monitoring.observation_overdue(state.due, clock):
            due = state.due
            self._emit(topics.OBSERVATIONS_DUE, events.ObservationOverdue(
                event_id=events.derived_event_id("observation-overdue", due.last_score_event_id),
                last_score_event_id=uuid.UUID(due.last_score_event_id), last_scored_at=due.last_scored_at,
                due_at=due.due_at, monitoring=due.monitoring, **self._envelope(state, due.due_at, now),
            ))
            state = replace(state, due=monitoring.reported(due))
        if self.urinalysis_rules is not None:
            pathway, actions = urinalysis.on_clock(state.urinalysis_pathway, clock)
            self._publish_urinalysis(state, actions, now)
            state = replace(state, urinalysis_pathway=pathway)
        return state, self.outputs

    # -- building events ------------------------------------------------------------------------------
    def _set_event(self, state: ResidentState, assembled: assembly.AssembledSet, now: datetime) -> events.ObservationSet:
        scale = 2 if state.scale2_since is not None and state.scale2_since <= assembled.occurred_at else 1
        return events.ObservationSet(
            event_id=events.derived_event_id("observation-set", *assembled.event_ids),
            occurred_at=assembled.occurred_at,
            received_at=now,
            source=events.Source(gateway_id=self.worker_id),
            location_id=state.location_id,
            resident_id=state.resident_id,
            spo2_scale=scale,
            contributing_event_ids=[uuid.UUID(event_id) for event_id in assembled.event_ids],
            late=assembled.late,
            **assembled.values,
        )

    def _publish_transitions(
        self, state: ResidentState, transitions: list[escalation.Transition], source: events.Source, now: datetime
    ) -> None:
        for transition in transitions:
            episode = transition.episode
            self._emit(topics.ESCALATIONS, events.Escalation(
                event_id=events.derived_event_id("escalation", episode.episode_id, transition.status, episode.score_event_id,
                                                 transition.at.isoformat()),
                episode_id=uuid.UUID(episode.episode_id),
                status=transition.status,
                risk=episode.risk.value,
                total=episode.total,
                any_single_3=episode.any_single_3,
                score_event_id=uuid.UUID(episode.score_event_id),
                response=news2.response_for(episode.risk),
                rules_version=f"{news2.RULES_VERSION}/{self.rules.version}",
                raised_at=episode.raised_at,
                deadline_at=episode.deadline_at,
                acknowledged_by=episode.acknowledged_by,
                acknowledged_at=episode.acknowledged_at,
                resolution=transition.resolution,
                occurred_at=transition.at,
                received_at=now,
                source=source,
                location_id=state.location_id,
                resident_id=state.resident_id,
            ))

    def _envelope(self, state: ResidentState, occurred_at: datetime, now: datetime) -> dict:
        return dict(
            occurred_at=occurred_at,
            received_at=now,
            source=events.Source(gateway_id=self.worker_id),
            location_id=state.location_id,
            resident_id=state.resident_id,
        )

    def _emit(self, topic: topics.TopicSpec, event: events.ResidentEvent) -> None:
        self.outputs.append(Output(topic, event.resident_id, event))

