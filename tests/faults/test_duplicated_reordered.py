"""Duplicated and reordered delivery within the lateness bound (issue 10, fault tests).

Two brokers get the same events. The *clean* one gets each event once, in event-time order. The
*faulted* one gets about a third of them two or three times (at-least-once redelivery), in an order
shuffled as far as the lateness bound allows: a resident's events may be displaced by up to the allowed
lateness against every other event (so an acknowledgement can arrive before the observation set it
answers, and residents and topics interleave differently), while each resident's events on one topic keep
their order, as Kafka and the gateway's in-order buffer guarantee; a location's care events, which the
indicators merge order-free, are shuffled across two hours. One worker per broker. The outputs must be
identical: the same distinct escalation and NEWS2 events (same derived ids, same content), each expected
escalation exactly once, and the same indicators.

Escalation rules for the test: deadlines 60 s, lateness 30 s (generated from tests/e2e/fast_escalation.toml),
events dated in the quarter hour before the run, so every deadline has passed by the time the stream ends
and is judged on the wall clock once the inputs are read.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from carepulse import care_history, events, topics
from carepulse.care_history import CareActivity, topic_and_key
from indicators.quality import INDICATOR_IDS
from tests.factories import NORMAL_VITALS, RED_VITALS, observation_set
from tests.kafka_helpers import TopicTail, WorkerProcess, distinct_by_event_id, own_broker, parse_all

pytestmark = pytest.mark.e2e

LATENESS_S = 30
DEADLINE_S = 60
RESIDENTS = 24
MEDIUM_VITALS = dict(respiration_rate=22, pulse=115, temperature=38.5)  # 2 + 2 + 1 = 5: medium
#: Chosen so that several acknowledgements are delivered ahead of the sets they answer (asserted).
SEED = 3
SOURCE = events.Source(gateway_id="gw-reorder", device_id="tablet-reorder")
FAST_RULES = Path(__file__).parents[1] / "e2e" / "fast_escalation.toml"


def _rules_file(tmp_path: Path) -> Path:
    text = FAST_RULES.read_text()
    text = text.replace('rules_version = "test-fast.1"', 'rules_version = "test-reorder.1"')
    text = text.replace("{ value = 4, source", f"{{ value = {DEADLINE_S}, source")
    text = text.replace("allowed_s = { value = 1,", f"allowed_s = {{ value = {LATENESS_S},")
    assert text.count(f"{{ value = {DEADLINE_S}, source") == 3 and f"allowed_s = {{ value = {LATENESS_S}," in text
    path = tmp_path / "escalation-reorder.toml"
    path.write_text(text)
    return path


def _ack(resident: str, location: str, at: datetime) -> events.EscalationAcknowledgement:
    return events.EscalationAcknowledgement(
        event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id=location,
        resident_id=resident, acknowledged_by="nurse-reorder", action="GP called")


@dataclasses.dataclass
class Script:
    log: list[events.Event]                          # every event once, in event-time order
    location_id: str
    expected: dict[str, list[tuple[str, str]]]       # resident -> [(kind, status)] of its escalation events
    sets: set[str]


def build_script(now: datetime) -> Script:
    profile = dataclasses.replace(care_history.replay_profiles()[0], location_id=f"loc-reorder-{uuid.uuid4().hex[:6]}")
    location = profile.location_id
    start = now - timedelta(minutes=15)
    history = CareActivity([profile], start=start - timedelta(days=7), seed=11).advance(start)
    care = [e for e in history if topic_and_key(e)[0] in (topics.CARE_EVENTS, topics.RESIDENTS)]
    scripted: list[events.Event] = []
    expected: dict[str, list[tuple[str, str]]] = {}
    s = timedelta(seconds=1)
    for i in range(RESIDENTS):
        resident = f"res-reorder-{uuid.uuid4().hex[:10]}"
        at = start + timedelta(seconds=15 * i)
        match i % 4:
            case 0:  # stable: scored, never escalated
                scripted += [observation_set(resident, location_id=location, occurred_at=at),
                             observation_set(resident, location_id=location, occurred_at=at + 40 * s, **NORMAL_VITALS)]
                expected[resident] = []
            case 1:  # red, acknowledged 10 s later (within the lateness bound: may be read first)
                scripted += [observation_set(resident, location_id=location, occurred_at=at, **RED_VITALS),
                             _ack(resident, location, at + 10 * s)]
                expected[resident] = [("escalation", "raised"), ("escalation", "acknowledged")]
            case 2:  # red, never acknowledged
                scripted += [observation_set(resident, location_id=location, occurred_at=at, **RED_VITALS)]
                expected[resident] = [("escalation", "raised"), ("escalation_overdue", "overdue")]
            case 3:  # medium, red 25 s later, acknowledged 10 s after that
                scripted += [observation_set(resident, location_id=location, occurred_at=at, **MEDIUM_VITALS),
                             observation_set(resident, location_id=location, occurred_at=at + 25 * s, **RED_VITALS),
                             _ack(resident, location, at + 35 * s)]
                expected[resident] = [("escalation", "raised"), ("escalation", "upgraded"),
                                      ("escalation", "acknowledged")]
    # Sorted by time alone (a stable sort), so the delivery drawn from a seed does not depend on random ids.
    log = sorted(care + scripted, key=lambda e: e.occurred_at)
    sets = {str(e.event_id) for e in scripted if isinstance(e, events.ObservationSet)}
    return Script(log, location, expected, sets)


def faulted_delivery(log: list[events.Event], seed: int) -> list[events.Event]:
    """The log redelivered and reordered within the lateness bound (see the module docstring). The
    scripted residents' events draw from a random source of their own, so how they are reordered depends
    on the seed alone, not on how many care events the simulated week holds."""
    resident_rng, care_rng, rng = (random.Random(f"{seed}/{part}") for part in ("residents", "care", "repeats"))

    def displaced(event: events.Event) -> datetime:
        spec, _ = topic_and_key(event)
        if spec.key == "location_id":
            return event.occurred_at + timedelta(seconds=care_rng.uniform(0, 2 * 3600))
        if isinstance(event, (events.ObservationSet, events.EscalationAcknowledgement)):
            return event.occurred_at + timedelta(seconds=resident_rng.uniform(0, LATENESS_S))
        return event.occurred_at + timedelta(seconds=care_rng.uniform(0, LATENESS_S))

    order = sorted(log, key=displaced)
    # Each resident's events on one topic keep their order (one partition, an in-order producer).
    streams: dict[tuple[str, str], list[events.Event]] = defaultdict(list)
    for event in log:
        spec, key = topic_and_key(event)
        if spec.key == "resident_id":
            streams[(spec.name, key)].append(event)
    taken: Counter[tuple[str, str]] = Counter()
    delivery = []
    for event in order:
        spec, key = topic_and_key(event)
        if spec.key == "resident_id":
            event = streams[(spec.name, key)][taken[(spec.name, key)]]
            taken[(spec.name, key)] += 1
        delivery.append(event)
    # Redelivery: a third of the events again (some twice more), a little later.
    for position in reversed(range(len(delivery))):
        roll = rng.random()
        for _ in range(2 if roll < 0.05 else 1 if roll < 0.33 else 0):
            delivery.insert(min(len(delivery), position + rng.randint(1, 300)), delivery[position])
    return delivery


def acknowledgements_first(delivery: list[events.Event]) -> int:
    """Acknowledgements delivered before an observation set of their resident that was taken before them."""
    delivered_sets: dict[str, list[datetime]] = defaultdict(list)
    sets_taken: dict[str, list[datetime]] = defaultdict(list)
    for event in delivery:
        if isinstance(event, events.ObservationSet):
            sets_taken[event.resident_id].append(event.occurred_at)
    first = 0
    for event in delivery:
        if isinstance(event, events.ObservationSet):
            delivered_sets[event.resident_id].append(event.occurred_at)
        elif isinstance(event, events.EscalationAcknowledgement):
            earlier = [t for t in sets_taken[event.resident_id] if t < event.occurred_at]
            first += any(t not in delivered_sets[event.resident_id] for t in earlier)
    return first


def send(bootstrap: str, delivery: list[events.Event]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for event in delivery:
            spec, key = topic_and_key(event)
            producer.send(spec.name, key=key.encode(), value=events.to_json(event))
        producer.flush(timeout=60)
    finally:
        producer.close()


class Outputs:
    def __init__(self, bootstrap: str, script: Script) -> None:
        self.script = script
        self.tails = {name: TopicTail(bootstrap, name) for name in
                      (topics.ESCALATIONS.name, topics.NEWS2_SCORES.name, topics.INDICATORS.name)}

    def read(self) -> None:
        for tail in self.tails.values():
            tail.read()

    def parsed(self, topic: str) -> list:
        return parse_all([r.value for r in self.tails[topic].records])

    def escalations(self) -> list:
        return [e for e in self.parsed(topics.ESCALATIONS.name) if e.resident_id in self.script.expected]

    def scores(self) -> list:
        return [e for e in self.parsed(topics.NEWS2_SCORES.name) if e.location_id == self.script.location_id]

    def indicators(self) -> dict[str, dict]:
        latest = {}
        for update in self.parsed(topics.INDICATORS.name):
            if update.location_id == self.script.location_id:
                latest[update.indicator_id] = update.model_dump(
                    mode="json", include={"window_start", "window_end", "numerator", "denominator", "value",
                                          "status", "details", "rules_version"})
        return latest

    def outcome(self) -> dict[str, list[tuple[str, str]]]:
        by_resident: dict[str, list] = {resident: [] for resident in self.script.expected}
        for event in sorted(distinct_by_event_id(self.escalations()).values(),
                            key=lambda e: (e.occurred_at, str(e.event_id))):
            status = "overdue" if isinstance(event, events.EscalationOverdue) else event.status
            by_resident[event.resident_id].append((event.event_type, status))
        return by_resident

    def complete(self) -> bool:
        return (self.outcome() == self.script.expected
                and {str(e.observation_set_id) for e in self.scores()} == self.script.sets
                and set(INDICATOR_IDS) <= set(self.indicators()))

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()


def content(parsed: list) -> dict[str, dict]:
    """Distinct events by id, without the time they were received (the only field a redelivery may change)."""
    return {event_id: event.model_dump(mode="json", exclude={"received_at"})
            for event_id, event in distinct_by_event_id(parsed).items()}


@pytest.mark.timeout(240)
def test_duplicated_and_reordered_delivery_gives_the_outputs_of_the_clean_run(tmp_path):
    rules = _rules_file(tmp_path)
    brokers = {run: own_broker(tmp_path / f"{run}-broker.log") for run in ("clean", "faulted")}
    # One worker id for both (each on its own broker): it is the `source` of what they publish.
    workers = {run: WorkerProcess(brokers[run].bootstrap, tmp_path / f"worker-{run}.log", "reorder-worker", {
        "CAREPULSE_ESCALATION_RULES_PATH": str(rules),
        "F_DATADIR": str(tmp_path / f"worker-{run}-data"),
        "CAREPULSE_SESSION_TIMEOUT_S": "6",
        # Indicators as of the minute after the newest event in both runs, however long each takes.
        "CAREPULSE_INDICATORS_WALL_CLOCK_LAG_S": "86400",
    }) for run in brokers}
    outputs: dict[str, Outputs] = {}
    try:
        for worker in workers.values():
            worker.start()
        script = build_script(events.utc_now())
        delivery = faulted_delivery(script.log, seed=SEED)
        repeats = len(delivery) - len(script.log)
        assert repeats > len(script.log) // 4 and Counter(map(id, delivery)).most_common(1)[0][1] == 3
        early_acks = acknowledgements_first(delivery)
        assert early_acks >= 4  # the seed puts acknowledgements ahead of the sets they answer
        send(brokers["clean"].bootstrap, script.log)
        send(brokers["faulted"].bootstrap, delivery)
        outputs = {run: Outputs(brokers[run].bootstrap, script) for run in brokers}

        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            for run_outputs in outputs.values():
                run_outputs.read()
            if all(run_outputs.complete() for run_outputs in outputs.values()):
                break
            time.sleep(2)
        time.sleep(8)  # anything doubled or spurious that would follow
        for run_outputs in outputs.values():
            run_outputs.read()

        clean, faulted = outputs["clean"], outputs["faulted"]
        for run, run_outputs in outputs.items():
            wrong = {r: (got, script.expected[r]) for r, got in run_outputs.outcome().items()
                     if got != script.expected[r]}
            assert not wrong, (run, list(wrong.items())[:3], workers[run].log()[-3000:])
        assert content(faulted.escalations()) == content(clean.escalations())
        assert content(faulted.scores()) == content(clean.scores())
        assert {str(e.observation_set_id) for e in faulted.scores()} == script.sets
        assert faulted.indicators() == clean.indicators()
        escalations = len(distinct_by_event_id(faulted.escalations()))
        print(f"\nduplicated and reordered: {len(script.log)} events, {repeats} redelivered "
              f"({len(delivery)} sent, {early_acks} acknowledgements ahead of their sets), {len(script.sets)} observation sets scored once each, {escalations} "
              f"distinct escalation events identical to the clean run, {len(faulted.indicators())} indicators equal")
    finally:
        for worker in workers.values():
            if worker.process is not None:
                worker.stop()
        for run_outputs in outputs.values():
            run_outputs.close()
        for broker in brokers.values():
            broker.stop()
