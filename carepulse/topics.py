"""The topic catalog: every topic carepulse uses, with its key, partitions, cleanup policy and value model.

Topics are created from this catalog at start-up (`ensure_topics`), never auto-created: the embedded
broker auto-creates unknown topics with 4 partitions, which breaks Faust's co-partitioning of sources
and changelogs (streaming.md §3.5.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from carepulse import events


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_models: tuple[type[events.Event], ...]
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int | None
    purpose: str
    #: Keyed topics share `Settings.topic_partitions` so per-resident state co-partitions with its input;
    #: a fixed count overrides that (dead letters are not keyed).
    partitions: int | None = None

    def partition_count(self, default_partitions: int) -> int:
        return self.partitions or default_partitions

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


_DAY_MS = 24 * 3600 * 1000

READINGS = TopicSpec(
    name="readings",
    key="resident_id",
    value_models=(events.DeviceReading, events.ManualObservation),
    cleanup_policy="delete",
    retention_ms=30 * _DAY_MS,
    purpose="Device readings and carers' manual observations, the parts of NEWS2 observation sets.",
)
OBSERVATION_SETS = TopicSpec(
    name="observation-sets",
    key="resident_id",
    value_models=(events.ObservationSet,),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 observation sets to score.",
)
NEWS2_SCORES = TopicSpec(
    name="news2-scores",
    key="resident_id",
    value_models=(events.News2Scored,),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 results, complete or incomplete.",
)
ESCALATIONS = TopicSpec(
    name="escalations",
    key="resident_id",
    value_models=(events.Escalation, events.EscalationOverdue),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 escalation episodes (raised, upgraded, acknowledged, resolved) and missed deadlines.",
)
RESIDENTS = TopicSpec(
    name="residents",
    key="resident_id",
    value_models=(events.ResidentRecord,),
    cleanup_policy="compact",
    retention_ms=None,
    purpose="Latest context per resident: admission status, location, Scale 2 prescription, fluid target.",
)
CLINICAL_ACTIONS = TopicSpec(
    name="clinical-actions",
    key="resident_id",
    value_models=(events.EscalationAcknowledgement, events.ClinicalReview, events.UrinalysisResult),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="Staff acknowledgements of escalations, recorded clinical reviews and urinalysis results.",
)
CARE_EVENTS = TopicSpec(
    name="care-events",
    key="location_id",
    value_models=(
        events.FluidIntake, events.Fall, events.CallBell, events.VisitPlanned, events.VisitCheckIn,
        events.VisitCheckOut, events.VisitCancelled,
    ),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="What care indicators are computed from: fluids, falls, call bells, visits.",
)
OBSERVATIONS_DUE = TopicSpec(
    name="observations-due",
    key="resident_id",
    value_models=(events.ObservationOverdue,),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 observations not taken within the minimum monitoring frequency.",
)
LOCATION_EVENTS = TopicSpec(
    name="location-events",
    key="location_id",
    value_models=(events.ResidentRecord, events.News2Scored, events.Escalation, events.UrinalysisResult,
                  events.UrinalysisRecommendation),
    cleanup_policy="delete",
    retention_ms=7 * _DAY_MS,
    purpose="Internal: copies of resident records, NEWS2 results, escalations and urinalysis results and "
    "actions re-keyed by location, so each location's indicators are computed in one partition next to its "
    "care events.",
)
URINALYSIS = TopicSpec(
    name="urinalysis",
    key="resident_id",
    value_models=(events.UrinalysisRecommendation,),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="The urinalysis pathway's actions for amber NEWS2 episodes: recommended, done, not done, withdrawn "
    "(only while the pathway is switched on in the quality rules).",
)
LOCATION_PROFILES = TopicSpec(
    name="location-profiles",
    key="location_id",
    value_models=(events.LocationProfile,),
    cleanup_policy="compact",
    retention_ms=None,
    purpose="Each location's setting, registered beds and commissioned hours (the newest replaces the last).",
)
CAPACITY = TopicSpec(
    name="capacity",
    key="location_id",
    value_models=(events.LocationCapacity,),
    cleanup_policy="compact",
    retention_ms=None,
    purpose="Each location's live capacity: beds occupied, reserved and vacant, or homecare hours planned.",
)
INDICATORS = TopicSpec(
    name="indicators",
    key="location_id|indicator_id",
    value_models=(events.IndicatorUpdate,),
    cleanup_policy="compact",
    retention_ms=None,
    purpose="The current value of each location's care-quality indicators, published whenever it changes.",
)
INDICATORS_HISTORY = TopicSpec(
    name="indicators.history",
    key="location_id|indicator_id|date",
    value_models=(events.IndicatorUpdate,),
    cleanup_policy="compact",
    retention_ms=None,
    purpose="Each location's indicators as they stood at every local midnight (daily snapshots).",
)
ALERTS = TopicSpec(
    name="alerts",
    key="location_id",
    value_models=(events.Alert,),
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="Red escalations raised or overdue and indicators turning red, for consumers that are not Prometheus.",
)
DEAD_LETTERS = TopicSpec(
    name="dead-letters",
    key="stage",
    value_models=(events.DeadLetter,),
    cleanup_policy="delete",
    retention_ms=90 * _DAY_MS,
    purpose="Inputs that could not be processed, with the reason and the original payload.",
    partitions=1,
)

CATALOG: tuple[TopicSpec, ...] = (
    READINGS, RESIDENTS, CLINICAL_ACTIONS, CARE_EVENTS, OBSERVATION_SETS, NEWS2_SCORES, ESCALATIONS,
    OBSERVATIONS_DUE, URINALYSIS, LOCATION_PROFILES, LOCATION_EVENTS, INDICATORS, INDICATORS_HISTORY, CAPACITY,
    ALERTS, DEAD_LETTERS,
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} in the catalog")


def indicator_key(location_id: str, indicator_id: str) -> str:
    """The compaction key of a location's indicator on ``indicators``."""
    return f"{location_id}|{indicator_id}"


def indicator_history_key(location_id: str, indicator_id: str, day: str) -> str:
    """The key of a location's indicator snapshot for local date `day` (ISO) on ``indicators.history``."""
    return f"{location_id}|{indicator_id}|{day}"
