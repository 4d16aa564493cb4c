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
    value_model: type[events.Event]
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
    value_model=events.DeviceReading,
    cleanup_policy="delete",
    retention_ms=30 * _DAY_MS,
    purpose="Decoded device readings from gateways.",
)
OBSERVATION_SETS = TopicSpec(
    name="observation-sets",
    key="resident_id",
    value_model=events.ObservationSet,
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 observation sets to score.",
)
NEWS2_SCORES = TopicSpec(
    name="news2-scores",
    key="resident_id",
    value_model=events.News2Scored,
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="NEWS2 results, complete or incomplete.",
)
ESCALATIONS = TopicSpec(
    name="escalations",
    key="resident_id",
    value_model=events.Escalation,
    cleanup_policy="delete",
    retention_ms=365 * _DAY_MS,
    purpose="Escalations raised by NEWS2 scores at low-medium, medium or high risk.",
)
DEAD_LETTERS = TopicSpec(
    name="dead-letters",
    key="stage",
    value_model=events.DeadLetter,
    cleanup_policy="delete",
    retention_ms=90 * _DAY_MS,
    purpose="Inputs that could not be processed, with the reason and the original payload.",
    partitions=1,
)

CATALOG: tuple[TopicSpec, ...] = (READINGS, OBSERVATION_SETS, NEWS2_SCORES, ESCALATIONS, DEAD_LETTERS)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} in the catalog")
