"""Stream workers SIGKILLed during a steady stream (issue 10, fault tests).

Two brokers are fed the same stream at the same moments. On the *faulted* one, two workers share a consumer
group and one of them is SIGKILLed five times (alternately, each restarted a few seconds later), so every
kill is a rebalance with changelog recovery. On the *fault-free* one, a single worker in a group of its
own sees the stream undisturbed. They must come to the same distinct outputs:

- escalations: the same set of distinct event ids, which is the set the input was built to produce (each
  red set raises one episode; acknowledged, overdue, upgraded exactly as scripted), no (episode, status)
  pair under two event ids (a doubled escalation), none missing. Repeats of one event id are allowed on the
  topic (at-least-once; consumers deduplicate);
- every input observation set scored (its derived NEWS2 result on ``news2-scores``);
- the location's latest indicators: equal between the two runs and equal to the batch recomputation
  (`indicators.recompute`) over the input log plus the derived NEWS2 results and escalations.

The embedded broker's end-offset under-reporting (streaming.md §3.5.2), which makes Faust's changelog
recovery stop early, is checked directly: for every changelog partition, the end offset ListOffsets answers
(what Faust's recovery reads up to) must be the true end. The worker's mitigation is one record per produced
batch (``CAREPULSE_ONE_RECORD_PER_BATCH``, on by default); the last test shows the check catches the
under-reporting when batches hold several records.

Event time is live: each resident event is sent at its own event time, with seconds-long deadlines (4 s,
lateness 1 s, ``tests/e2e/fast_escalation.toml``), so a kill lands between a red set and its acknowledgement
and the survivor or the restarted worker reads the backlog of several topics in whatever order the fetches
interleave them. Nothing in the test waits for that: the worker must hold deadlines while inputs are unread
(`streams.clocks`), answer each acknowledgement for the band open when it was made whatever the read order
(`escalation.band_settled`, H-16), and re-read what a rebalance dropped, including a partition's first
messages (`rewind_partitions_never_committed` in `streams.app`). Care events (seven days of one care home from
`carepulse.care_history`) are spread over the same seconds; the location store is order-free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from kafka import KafkaProducer

from carepulse import care_history, events, topics
from carepulse.care_history import CareActivity, topic_and_key
from indicators.quality import ALL_INDICATOR_IDS, INDICATOR_IDS
from indicators.recompute import recompute
from tests.factories import RED_VITALS, observation_set
from tests.kafka_helpers import (
    TopicTail,
    WorkerProcess,
    distinct_by_event_id,
    end_offset_report,
    own_broker,
    parse_all,
)

pytestmark = pytest.mark.e2e

STREAM_S = 100.0
KILLS = 5
RESIDENTS = 48
MEDIUM_VITALS = dict(respiration_rate=22, pulse=115, temperature=38.5)  # 2 + 2 + 1 = 5: medium
FAST_RULES = Path(__file__).parents[1] / "e2e" / "fast_escalation.toml"  # deadlines 4 s, lateness 1 s
SOURCE = events.Source(gateway_id="gw-faults", device_id="tablet-faults")


# -- the input --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Script:
    log: list[events.Event]                         # everything produced, once each
    schedule: list[tuple[float, events.Event]]      # (seconds after the stream starts, event)
    location_id: str
    expected: dict[str, list[tuple[str, str]]]      # resident -> [(kind, status)] of its escalation events
    sets: set[str]                                  # observation set event ids


def _ack(resident: str, location: str, at: datetime) -> events.EscalationAcknowledgement:
    return events.EscalationAcknowledgement(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id=location,
        resident_id=resident, acknowledged_by="nurse-faults", action="GP called")


def build_script(now: datetime) -> Script:
    """`now`: when the stream starts (event time of the live part)."""
    profile = dataclasses.replace(care_history.replay_profiles()[0],
                                  location_id=f"loc-faults-{uuid.uuid4().hex[:6]}")
    location = profile.location_id
    end = now - timedelta(minutes=3)
    history = CareActivity([profile], start=end - timedelta(days=7), seed=5).advance(end)
    # Only what the location's indicators are made of; NEWS2 comes from the scripted residents below.
    care = [e for e in history if topic_and_key(e)[0] in (topics.CARE_EVENTS, topics.RESIDENTS)]

    resident_events: list[events.Event] = []
    expected: dict[str, list[tuple[str, str]]] = {}
    second = timedelta(seconds=1)
    for i in range(RESIDENTS):
        resident = f"res-faults-{uuid.uuid4().hex[:10]}"
        at = now + timedelta(seconds=(STREAM_S - 20) * i / RESIDENTS)
        match i % 4:
            case 0:  # stable: scored, never escalated
                resident_events += [observation_set(resident, location_id=location, occurred_at=at),
                                    observation_set(resident, location_id=location, occurred_at=at + 2 * second)]
                expected[resident] = []
            case 1:  # red, acknowledged a second later (deadline 4 s)
                resident_events += [observation_set(resident, location_id=location, occurred_at=at, **RED_VITALS),
                                    _ack(resident, location, at + second)]
                expected[resident] = [("escalation", "raised"), ("escalation", "acknowledged")]
            case 2:  # red, never acknowledged: overdue 4 s later
                resident_events += [observation_set(resident, location_id=location, occurred_at=at, **RED_VITALS)]
                expected[resident] = [("escalation", "raised"), ("escalation_overdue", "overdue")]
            case 3:  # medium, then red a second later (upgraded), acknowledged a second after that
                resident_events += [
                    observation_set(resident, location_id=location, occurred_at=at, **MEDIUM_VITALS),
                    observation_set(resident, location_id=location, occurred_at=at + second, **RED_VITALS),
                    _ack(resident, location, at + 2 * second)]
                expected[resident] = [("escalation", "raised"), ("escalation", "upgraded"), ("escalation", "acknowledged")]
    resident_events.sort(key=lambda e: e.occurred_at)
    # Care events spread evenly over the run; each resident event sent at its own event time (a live stream).
    schedule = sorted([(STREAM_S * k / len(care), e) for k, e in enumerate(care)]
                      + [((e.occurred_at - now).total_seconds(), e) for e in resident_events],
                      key=lambda item: item[0])
    sets = {str(e.event_id) for e in resident_events if isinstance(e, events.ObservationSet)}
    return Script(care + resident_events, schedule, location, expected, sets)


class SteadyProducer(threading.Thread):
    """Sends the schedule to every broker at its moment (each event once per broker)."""

    def __init__(self, bootstraps: list[str], schedule: list[tuple[float, events.Event]]) -> None:
        super().__init__(name="steady-producer", daemon=True)
        self.bootstraps = bootstraps
        self.schedule = schedule
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producers = [KafkaProducer(bootstrap_servers=b, acks="all", linger_ms=5) for b in self.bootstraps]
            began = time.monotonic()
            for at, event in self.schedule:
                delay = at - (time.monotonic() - began)
                if delay > 0:
                    for producer in producers:
                        producer.flush(timeout=30)
                    time.sleep(delay)
                spec, key = topic_and_key(event)
                for producer in producers:
                    producer.send(spec.name, key=key.encode(), value=events.to_json(event))
                self.sent += 1
            for producer in producers:
                producer.flush(timeout=30)
                producer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


# -- reading the outputs back -----------------------------------------------------------------------------
class Outputs:
    def __init__(self, bootstrap: str, script: Script) -> None:
        self.script = script
        self.escalations = TopicTail(bootstrap, topics.ESCALATIONS.name)
        self.scores = TopicTail(bootstrap, topics.NEWS2_SCORES.name)
        self.indicators = TopicTail(bootstrap, topics.INDICATORS.name)

    def read(self) -> None:
        for tail in (self.escalations, self.scores, self.indicators):
            tail.read()

    def escalation_events(self) -> list:
        residents = self.script.expected
        return [e for e in parse_all([r.value for r in self.escalations.records]) if e.resident_id in residents]

    def score_events(self) -> list:
        return [e for e in parse_all([r.value for r in self.scores.records]) if e.location_id == self.script.location_id]

    def latest_indicators(self) -> dict[str, events.IndicatorUpdate]:
        latest = {}
        for record in self.indicators.records:
            update = events.any_event_adapter.validate_json(record.value)
            if update.location_id == self.script.location_id:
                latest[record.key.decode()] = update
        return latest

    def close(self) -> None:
        for tail in (self.escalations, self.scores, self.indicators):
            tail.close()


def escalation_outcome(parsed: list) -> dict[str, list[tuple[str, str]]]:
    """Per resident, the (kind, status) of each *distinct* escalation event, in event-time order."""
    by_resident: dict[str, list] = defaultdict(list)
    for event in sorted(distinct_by_event_id(parsed).values(), key=lambda e: (e.occurred_at, str(e.event_id))):
        status = "overdue" if isinstance(event, events.EscalationOverdue) else event.status
        by_resident[event.resident_id].append((event.event_type, status))
    return dict(by_resident)


def doubled(parsed: list) -> list:
    """(episode, status) pairs published under more than one event id: the same escalation twice."""
    ids: dict[tuple, set] = defaultdict(set)
    for event in parsed:
        status = "overdue" if isinstance(event, events.EscalationOverdue) else event.status
        ids[(str(event.episode_id), status)].add(str(event.event_id))
    return [pair for pair, event_ids in ids.items() if len(event_ids) > 1]


def published(update: events.IndicatorUpdate) -> dict:
    return {"window_start": update.window_start, "window_end": update.window_end, "numerator": update.numerator,
            "denominator": update.denominator, "value": update.value, "status": update.status,
            "details": update.details, "rules_version": update.rules_version}


def oracle(log: list, location: str, as_of: datetime, indicator_ids: list[str]) -> dict[str, dict]:
    return {f"{v.location_id}|{v.indicator_id}": {
        "window_start": v.window_start, "window_end": v.window_end, "numerator": v.numerator,
        "denominator": v.denominator, "value": v.value, "status": v.status.value,
        "details": json.loads(json.dumps(v.details)), "rules_version": v.rules_version}
        for v in recompute(log, as_of=as_of, indicator_ids=indicator_ids) if v.location_id == location}


def differences(script: Script, faulted: Outputs, clean: Outputs) -> list:
    """Everything still different from what the input must give; empty when both runs are complete."""
    problems: list = []
    for name, outputs in (("faulted", faulted), ("fault-free", clean)):
        outcome = escalation_outcome(outputs.escalation_events())
        wrong = {r: (outcome.get(r, []), want) for r, want in script.expected.items() if outcome.get(r, []) != want}
        if wrong:
            problems.append((name, "escalations", len(wrong), list(wrong.items())[:2]))
        scored = {str(e.observation_set_id) for e in outputs.score_events()}
        if scored != script.sets:
            problems.append((name, "sets not scored", len(script.sets - scored), "unknown", len(scored - script.sets)))
        indicators = outputs.latest_indicators()
        streamed = sorted({u.indicator_id for u in indicators.values()}, key=ALL_INDICATOR_IDS.index)
        if not set(INDICATOR_IDS) <= set(streamed):
            problems.append((name, "indicators missing", sorted(set(INDICATOR_IDS) - set(streamed))))
            continue
        as_of = {u.window_end for u in indicators.values()}
        if len(as_of) != 1:
            problems.append((name, "indicators at several instants", sorted(as_of)))
            continue
        derived = [e for e in outputs.score_events() + outputs.escalation_events()]
        expected = oracle(script.log + derived, script.location_id, as_of.pop(), streamed)
        got = {key: published(u) for key, u in indicators.items()}
        if got != expected:
            problems.append((name, "indicators differ from the recomputation",
                             [(k, got[k], expected.get(k)) for k in got if got[k] != expected.get(k)][:2]))
    if not problems:
        faulted_now = {k: published(u) for k, u in faulted.latest_indicators().items()}
        clean_now = {k: published(u) for k, u in clean.latest_indicators().items()}
        if faulted_now != clean_now:
            problems.append(("indicators differ between the runs",
                             [(k, faulted_now[k], clean_now.get(k)) for k in faulted_now if faulted_now[k] != clean_now.get(k)][:2]))
    return problems


def changelog_under_reporting(bootstrap: str, group: str) -> dict[str, dict[int, tuple[int, int]]]:
    """Changelog partitions whose ListOffsets end is not the true end (see `end_offset_report`)."""
    short = {}
    for table in ("resident-state", "location-state"):
        report = end_offset_report(bootstrap, f"{group}-{table}-changelog")
        assert report, f"no changelog topic for {table}"
        wrong = {p: ends for p, ends in report.items() if ends[0] != ends[1]}
        if wrong:
            short[table] = wrong
    return short


def _worker(bootstrap: str, tmp_path, group: str, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(bootstrap, tmp_path / f"{name}.log", group, {
        "CAREPULSE_ESCALATION_RULES_PATH": str(FAST_RULES),
        "F_DATADIR": str(tmp_path / f"{name}-data"),
        "CAREPULSE_SESSION_TIMEOUT_S": "6",
        # Indicators as of the minute after the newest event, in both runs, however long the run takes.
        "CAREPULSE_INDICATORS_WALL_CLOCK_LAG_S": "86400",
        **env,
    })


# -- the test ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(420)
def test_five_worker_kills_lose_and_double_nothing(tmp_path):
    faulted_broker = own_broker(tmp_path / "faulted-broker.log")
    clean_broker = own_broker(tmp_path / "clean-broker.log")
    group = f"faults-kill-{uuid.uuid4().hex[:8]}"
    workers = [_worker(faulted_broker.bootstrap, tmp_path, group, "worker-a"),
               _worker(faulted_broker.bootstrap, tmp_path, group, "worker-b")]
    clean_worker = _worker(clean_broker.bootstrap, tmp_path, f"faults-clean-{uuid.uuid4().hex[:8]}", "worker-clean")
    faulted = clean = None
    restarts = Counter()
    try:
        for worker in (*workers, clean_worker):
            worker.start()
        time.sleep(12)  # both members joined before the stream starts: the first kill is a real rebalance
        script = build_script(events.utc_now())
        faulted = Outputs(faulted_broker.bootstrap, script)
        clean = Outputs(clean_broker.bootstrap, script)
        producer = SteadyProducer([faulted_broker.bootstrap, clean_broker.bootstrap], script.schedule)
        began = time.monotonic()
        producer.start()
        for kill in range(KILLS):
            time.sleep(max(0.0, 10 + kill * STREAM_S / KILLS - (time.monotonic() - began)))
            victim = workers[kill % 2]
            victim.kill()
            time.sleep(4)  # the survivor's session sees the member vanish; then the victim comes back
            victim.log_path = tmp_path / f"{['worker-a', 'worker-b'][kill % 2]}-{kill}.log"
            victim.start()
            restarts[kill % 2] += 1
        producer.join(timeout=STREAM_S + 60)
        assert producer.error is None, producer.error
        assert producer.sent == len(script.schedule)

        deadline = time.monotonic() + 120
        problems: list = ["not read yet"]
        while problems and time.monotonic() < deadline:
            time.sleep(3)
            faulted.read()
            clean.read()
            problems = differences(script, faulted, clean)
        logs = "\n".join(w.log()[-1500:] for w in workers)
        if problems:  # for the post-mortem: what differs, the raw escalations concerned, the changelog ends
            wrong = {item[0] for p in problems if len(p) > 3 and p[1] == "escalations" for item in p[3]}
            (tmp_path / "problems.json").write_text(json.dumps({
                "problems": problems,
                "under_reporting": changelog_under_reporting(faulted_broker.bootstrap, group),
                "faulted": [e.model_dump(mode="json") for e in faulted.escalation_events() if e.resident_id in wrong],
                "clean": [e.model_dump(mode="json") for e in clean.escalation_events() if e.resident_id in wrong],
            }, default=str, indent=1))
        assert not problems, f"{json.dumps(problems, default=str, indent=1)[:6000]}\n{logs}"

        # Accounting, spelled out (what `differences` found equal).
        faulted_escalations, clean_escalations = faulted.escalation_events(), clean.escalation_events()
        assert doubled(faulted_escalations) == [] and doubled(clean_escalations) == []
        assert set(distinct_by_event_id(faulted_escalations)) == set(distinct_by_event_id(clean_escalations))
        expected_count = sum(len(v) for v in script.expected.values())
        assert len(distinct_by_event_id(faulted_escalations)) == expected_count
        assert {str(e.observation_set_id) for e in faulted.score_events()} == script.sets
        assert dict(restarts) == {0: 3, 1: 2}

        # Recovery read every changelog to its true end: ListOffsets answered the real end everywhere.
        assert changelog_under_reporting(faulted_broker.bootstrap, group) == {}
        print(f"\nworker kills: {len(script.log)} events produced ({len(script.sets)} observation sets, "
              f"{len(script.log) - len(script.sets)} others), {KILLS} SIGKILLs, "
              f"{len(faulted_escalations)} escalation messages = {expected_count} distinct "
              f"({len(faulted_escalations) - expected_count} repeated ids), "
              f"{len(faulted.latest_indicators())} indicators equal to the fault-free run and the recomputation")
    finally:
        for worker in (*workers, clean_worker):
            if worker.process is not None:
                worker.stop()
        for outputs in (faulted, clean):
            if outputs is not None:
                outputs.close()
        faulted_broker.stop()
        clean_broker.stop()


def test_the_end_offset_check_catches_under_reporting(tmp_path):
    """The changelog check above can fail: records produced several to a batch make the embedded broker's
    ListOffsets answer short of the true end (streaming.md §3.5.2), one record per batch does not."""
    broker = own_broker(tmp_path / "broker.log", partitions=1)
    try:
        for topic, batch_size in (("several-per-batch", 16384), ("one-per-batch", 1)):
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=200,
                                     batch_size=batch_size)
            for n in range(10):
                producer.send(topic, value=str(n).encode(), partition=0)
            producer.flush(timeout=30)
            producer.close()
        listed, true_end = end_offset_report(broker.bootstrap, "several-per-batch")[0]
        assert true_end == 10 and listed < true_end
        assert end_offset_report(broker.bootstrap, "one-per-batch")[0] == (10, 10)
    finally:
        broker.stop()


def test_seeking_back_to_committed_offsets_skips_a_partition_never_committed(tmp_path):
    """Why the worker seeks never-committed partitions to their beginning itself after a rebalance
    (`rewind_partitions_never_committed` in streams.app): the pinned aiokafka's seek back to the committed
    offsets, which Faust relies on to re-read what it took from the consumer during recovery, rewinds a
    partition with a commit but leaves one without where the consumer got to. A kill run lost an
    acknowledgement that way. If a later aiokafka rewinds both, this fails and the workaround can go."""
    broker = own_broker(tmp_path / "broker.log", partitions=1)

    async def positions_after_seek_to_committed() -> dict[str, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            parts = {name: TopicPartition(name, 0) for name in ("committed", "never-committed")}
            consumer.assign(list(parts.values()))
            taken: Counter = Counter()
            give_up = time.monotonic() + 30
            while sum(taken.values()) < 6 and time.monotonic() < give_up:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    taken[tp.topic] += len(records)
            assert taken == {"committed": 3, "never-committed": 3}
            await consumer.commit({parts["committed"]: OffsetAndMetadata(1, "")})
            await consumer.seek_to_committed()
            return {name: await consumer.position(tp) for name, tp in parts.items()}
        finally:
            await consumer.stop()

    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for topic in ("committed", "never-committed"):
            for _ in range(3):
                producer.send(topic, value=b"x", partition=0)
        producer.flush(timeout=30)
        producer.close()
        assert asyncio.run(positions_after_seek_to_committed()) == {"committed": 1, "never-committed": 3}
    finally:
        broker.stop()
