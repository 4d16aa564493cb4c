"""The judgement clock per partition (streams.clocks): event time while inputs flow or have unread
messages, the wall clock only once every input is read to its end and quiet."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from indicators import escalation
from streams.clocks import InputProgress, PartitionClocks

RULES = escalation.load_rules()
LATENESS = timedelta(seconds=RULES.allowed_lateness_s)
IDLE_S = RULES.idle_after_s
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HOUR_AGO = NOW - timedelta(hours=1)
READ = InputProgress(next_offset=10, highwater=10)
UNREAD = InputProgress(next_offset=4, highwater=10)
UNKNOWN = InputProgress(next_offset=None, highwater=None)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


def test_a_restored_partition_with_unread_inputs_is_not_judged_on_the_wall_clock(clock):
    """H-16: after a restart nothing has been read yet; the backlog may hold the acknowledgement."""
    clocks = PartitionClocks(clock)
    clock.now += 3600
    assert clocks.judgement(0, NOW, RULES, {"readings": UNREAD, "clinical-actions": READ}) is None


@pytest.mark.parametrize("progress", [
    {"readings": UNKNOWN}, {"readings": InputProgress(None, 5)}, {"readings": InputProgress(5, None)}, {},
])
def test_unknown_progress_counts_as_unread(clock, progress):
    clocks = PartitionClocks(clock)
    clock.now += 3600
    assert clocks.judgement(0, NOW, RULES, progress) is None


def test_an_input_behind_holds_time_at_its_event_time_even_when_quiet(clock):
    clocks = PartitionClocks(clock)
    clocks.saw("readings", 0, NOW - timedelta(minutes=1))
    clocks.saw("clinical-actions", 0, HOUR_AGO)
    clock.now += IDLE_S * 10  # both quiet, but clinical-actions has unread messages
    judged = clocks.judgement(0, NOW, RULES, {"readings": READ, "clinical-actions": UNREAD})
    assert judged == HOUR_AGO - LATENESS


def test_flowing_inputs_judge_on_the_slowest_event_time(clock):
    clocks = PartitionClocks(clock)
    clocks.saw("readings", 0, NOW - timedelta(minutes=1))
    clocks.saw("clinical-actions", 0, NOW - timedelta(minutes=7))
    judged = clocks.judgement(0, NOW, RULES, {"readings": READ, "clinical-actions": READ})
    assert judged == NOW - timedelta(minutes=7) - LATENESS


def test_the_wall_clock_moves_time_only_after_every_input_is_read_to_its_end_and_quiet_for_the_idle_period(clock):
    clocks = PartitionClocks(clock)
    clocks.saw("readings", 0, HOUR_AGO)
    clock.now += IDLE_S + 1
    progress = {"readings": READ, "clinical-actions": READ}
    # First seen read to the end now: not yet for the idle period, so still event time.
    assert clocks.judgement(0, NOW, RULES, progress) == HOUR_AGO - LATENESS
    clock.now += IDLE_S
    assert clocks.judgement(0, NOW, RULES, progress) == NOW - LATENESS


def test_falling_behind_again_restarts_the_idle_period(clock):
    clocks = PartitionClocks(clock)
    clocks.saw("readings", 0, HOUR_AGO)
    progress = {"readings": READ}
    clocks.judgement(0, NOW, RULES, progress)
    clock.now += IDLE_S + 1
    assert clocks.judgement(0, NOW, RULES, progress) == NOW - LATENESS
    assert clocks.judgement(0, NOW, RULES, {"readings": UNREAD}) == HOUR_AGO - LATENESS
    assert clocks.judgement(0, NOW, RULES, progress) == HOUR_AGO - LATENESS
    clock.now += IDLE_S
    assert clocks.judgement(0, NOW, RULES, progress) == NOW - LATENESS


def test_an_empty_partition_is_judged_on_the_wall_clock_once_settled(clock):
    clocks = PartitionClocks(clock)
    empty = {"readings": InputProgress(0, 0), "clinical-actions": InputProgress(0, 0)}
    assert clocks.judgement(3, NOW, RULES, empty) is None  # no event time yet, and not settled
    clock.now += IDLE_S
    assert clocks.judgement(3, NOW, RULES, empty) == NOW - LATENESS


def test_event_time_never_runs_ahead_of_the_wall_clock(clock):
    clocks = PartitionClocks(clock)
    clocks.saw("readings", 0, NOW + timedelta(hours=2))  # a device clock running fast
    assert clocks.judgement(0, NOW, RULES, {"readings": READ}) == NOW - LATENESS


def test_processed_offsets_only_move_forward_and_partitions_given_away_are_forgotten(clock):
    clocks = PartitionClocks(clock)
    clocks.processed("readings", 1, 9)
    clocks.processed("readings", 1, 3)  # a redelivered message after a rebalance
    assert clocks.next_offset("readings", 1) == 10
    clocks.saw("readings", 1, HOUR_AGO)
    clocks.keep_only({0})
    assert clocks.next_offset("readings", 1) is None
    # Back again: nothing is known of it, so it waits for its inputs to be read.
    assert clocks.judgement(1, NOW, RULES, {"readings": UNREAD}) is None
