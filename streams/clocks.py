"""The clock the resident agent's deadlines are judged on, per input partition.

Deadlines (an escalation's response time, an observation's due time, an assembly window) are judged on
event time while events flow, so a replay of history judges each deadline as it happened, and on the wall
clock once the stream is idle (`escalation.judgement_clock`). Two things make the wall clock dangerous:

- Faust does not interleave its input topics by timestamp: when one topic's backlog is read ahead of
  another's, the one behind must hold time back, else a replay would expire another resident's deadline
  before its acknowledgement is read.
- After a restart or a rebalance the state is restored from the changelog, but the inputs still hold
  unread messages. An acknowledgement made in time may be among them: judging the restored escalations on
  the wall clock before reading them published a spurious ``escalation_overdue`` (hazard H-16).

So the wall clock may move a partition's time only when every one of its inputs has been read to its end
(the next offset to process has reached the high watermark) and has stayed so for the idle period. Until
then, time is the slowest input's event time, and a partition whose backlog holds an input not read at
all since it was assigned is not judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from indicators import escalation


@dataclass(frozen=True)
class InputProgress:
    """How far one input topic-partition has been read: the next offset the agent will process (the
    consumer's position when it has processed nothing since the assignment) and the high watermark, either
    unknown (None) before the first fetch."""

    next_offset: int | None
    highwater: int | None

    @property
    def read_to_end(self) -> bool:
        return self.next_offset is not None and self.highwater is not None and self.next_offset >= self.highwater


class PartitionClocks:
    """Event time and read progress per input topic-partition, and the judgement instant per partition."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._stream_time: dict[tuple[str, int], datetime] = {}
        self._last_event_monotonic: dict[tuple[str, int], float] = {}
        self._next_offset: dict[tuple[str, int], int] = {}
        self._read_to_end_since: dict[int, float] = {}

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The agent took the message at `offset` (valid or dead-lettered: both are read)."""
        key = (topic, partition)
        self._next_offset[key] = max(self._next_offset.get(key, 0), offset + 1)

    def saw(self, topic: str, partition: int, occurred_at: datetime) -> None:
        """The agent is about to handle an event that occurred at `occurred_at`."""
        key = (topic, partition)
        current = self._stream_time.get(key)
        self._stream_time[key] = occurred_at if current is None else max(current, occurred_at)
        self._last_event_monotonic[key] = self._monotonic()

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset after the last one processed since the partition was assigned, if any."""
        return self._next_offset.get((topic, partition))

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions no longer assigned: one that comes back starts again as not read to its end."""
        keep = set(partitions)
        for mapping in (self._stream_time, self._last_event_monotonic, self._next_offset):
            for key in [k for k in mapping if k[1] not in keep]:
                del mapping[key]
        for partition in [p for p in self._read_to_end_since if p not in keep]:
            del self._read_to_end_since[partition]

    def judgement(self, partition: int, now: datetime, rules: escalation.EscalationRules,
                  progress: Mapping[str, InputProgress]) -> datetime | None:
        """The instant deadlines of `partition` are judged at, or None when they must not be judged yet.

        `progress` holds each input topic of the partition; an input missing from it counts as unread."""
        mono = self._monotonic()
        inputs = {topic: (stream_time, mono - self._last_event_monotonic[(topic, p)])
                  for (topic, p), stream_time in self._stream_time.items() if p == partition}
        behind = [topic for topic, read in progress.items() if not read.read_to_end] if progress else ["(none)"]
        if behind:
            self._read_to_end_since.pop(partition, None)
            if any(topic not in inputs for topic in behind):
                return None  # unread messages of unknown time: any instant could pass their deadlines
            held = [stream_time for topic, (stream_time, idle_for_s) in inputs.items()
                    if topic in behind or idle_for_s < rules.idle_after_s]
            return escalation.judgement_clock(min(held), now, 0.0, rules)
        read_to_end_for_s = mono - self._read_to_end_since.setdefault(partition, mono)
        flowing = [stream_time for stream_time, idle_for_s in inputs.values() if idle_for_s < rules.idle_after_s]
        if flowing or read_to_end_for_s < rules.idle_after_s:
            latest = min(flowing) if flowing else max((t for t, _ in inputs.values()), default=None)
            return escalation.judgement_clock(latest, now, 0.0, rules)
        latest = max((stream_time for stream_time, _ in inputs.values()), default=None)
        return escalation.judgement_clock(latest, now, float("inf"), rules)
