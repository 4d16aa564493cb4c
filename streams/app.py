"""The carepulse Faust worker: ``carepulse worker`` or ``faust -A streams.app worker``.

One agent owns each resident's state: it consumes the resident-keyed, co-partitioned topics (device
readings and manual observations, observation sets, resident context, clinical actions), hands each
event to `streams.resident.ResidentProcessor`, sends what it returns and stores the state in a
changelog-backed table, so a restarted or rebalanced worker continues where the last one stopped. A
timer judges deadlines (assembly windows, escalations and observations overdue) on the same state.

Processing is at-least-once (Faust cannot use transactions on the embedded broker, streaming.md
§3.5.1), so handling is idempotent: inputs are deduplicated by ``event_id`` and derived events get ids
derived from their inputs. Outputs are sent before the state is stored: a crash in between repeats an
event id, it never loses an escalation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

import faust
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from carepulse import events, topics
from carepulse.broker import ensure_topics
from carepulse.settings import Settings
from indicators import escalation, news2
from streams.resident import Output, ResidentProcessor, ResidentState

log = logging.getLogger(__name__)

#: The resident-keyed topics the resident agent consumes (all co-partitioned by resident_id).
RESIDENT_INPUTS = (topics.READINGS, topics.OBSERVATION_SETS, topics.RESIDENTS, topics.CLINICAL_ACTIONS)
TICK_INTERVAL_S = 1.0


class CarepulseApp(faust.App):
    """A Faust app that creates the catalog's topics before its consumers subscribe."""

    carepulse_settings: Settings

    async def on_first_start(self) -> None:
        await asyncio.to_thread(
            ensure_topics, self.carepulse_settings.bootstrap, self.carepulse_settings.topic_partitions
        )
        await super().on_first_start()

    async def on_started(self) -> None:
        # aiokafka's producer starts out tracking metadata for every topic, but the first send to a
        # topic created after it started (Faust's changelogs) narrows its tracked set to that topic.
        # Sends to the other topics then stall for the whole request timeout while the sender
        # refreshes metadata in a tight loop. Tracking every topic we produce to up front avoids it.
        produced = [spec.name for spec in topics.CATALOG] + [
            table.changelog_topic.get_topic_name() for table in self.tables.values()
        ]
        await self.producer._ensure_producer().client.set_topics(produced)
        await super().on_started()


def create_app(settings: Settings) -> CarepulseApp:
    app = CarepulseApp(
        settings.worker_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap.split(",")],
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_request_timeout=max(30.0, settings.session_timeout_s * 3),
        producer_max_batch_size=64 if settings.one_record_per_batch else 16384,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    app.carepulse_settings = settings
    _register(app, settings, escalation.load_rules(settings.escalation_rules_path))
    return app


def _raw_topic(app: faust.App, settings: Settings, *specs: topics.TopicSpec) -> faust.TopicT:
    return app.topic(
        *(spec.name for spec in specs),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=specs[0].partition_count(settings.topic_partitions),
    )


def _register(app: faust.App, settings: Settings, rules: escalation.EscalationRules) -> None:
    inputs = _raw_topic(app, settings, *RESIDENT_INPUTS)
    outputs = {spec.name: _raw_topic(app, settings, spec) for spec in topics.CATALOG}
    # Keyed by the same bytes as the input messages and placed by the same partitioner, so a resident's
    # state lives in the changelog partition matching its input partition, and the timer may write it.
    resident_states = app.Table(
        "resident-state", default=dict, partitions=settings.topic_partitions,
        key_type=bytes, use_partitioner=True,
    )
    processor = ResidentProcessor(rules, settings.worker_id)
    # The agent and the timer both read-modify-write resident state around awaited sends.
    state_lock = asyncio.Lock()
    clocks = _PartitionClocks()

    async def send(results: list[Output]) -> None:
        for output in results:
            await outputs[output.topic.name].send(key=output.key.encode(), value=events.to_json(output.event))

    async def dead_letter(topic: str, key: bytes | None, payload: bytes, reason: str) -> None:
        log.warning("dead letter from worker.resident on %s: %s", topic, reason)
        letter = dead_letter_event("worker.resident", topic, key, payload, reason, settings.worker_id)
        await outputs[topics.DEAD_LETTERS.name].send(key=letter.stage.encode(), value=events.to_json(letter))

    @app.agent(inputs, name="residents")
    async def residents(stream: faust.StreamT) -> None:
        async for message in stream.events():
            topic = message.message.topic
            try:
                event = parse_resident_event(topic, message.value, message.key)
            except ValueError as exc:
                await dead_letter(topic, message.key, message.value, str(exc))
                continue
            key = event.resident_id.encode()
            # Before handling: the timer must never judge this event's resident on a clock that has not seen it.
            clocks.saw(topic, message.message.partition, event.occurred_at)
            async with state_lock:
                state = ResidentState.from_json(resident_states[key])
                try:
                    state, results = processor.handle(state, event, events.utc_now())
                except news2.ImpossibleValue as exc:
                    await dead_letter(topic, message.key, message.value, f"impossible value: {exc}")
                    continue
                await send(results)
                resident_states[key] = state.to_json()

    @app.timer(interval=TICK_INTERVAL_S)
    async def judge_deadlines() -> None:
        now = events.utc_now()
        active = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.READINGS.name}
        judged_at = {partition: clocks.judgement(partition, now, rules) for partition in active}
        for key in list(resident_states.keys()):
            partition = partition_of(key, settings.topic_partitions)
            if partition not in active:
                continue  # another worker owns this resident now
            async with state_lock:
                state, results = processor.tick(ResidentState.from_json(resident_states[key]), judged_at[partition], now)
                if results:
                    await send(results)
                    resident_states[key] = state.to_json()


class _PartitionClocks:
    """Event time per input partition, for judging deadlines.

    Each input topic-partition's clock is the latest event time processed from it. A partition's event time
    is the slowest of its inputs that are still flowing: Faust does not interleave its input topics by
    timestamp, so when one topic's backlog is read ahead of another's, the one behind must hold time back
    (else a replay would expire another resident's window early). An input idle for `idle_after_s` stops
    holding time back; when every input of the partition is idle, the wall clock moves time on
    (`escalation.judgement_clock`).
    """

    def __init__(self) -> None:
        self._stream_time: dict[tuple[str, int], datetime] = {}
        self._last_event_monotonic: dict[tuple[str, int], float] = {}

    def saw(self, topic: str, partition: int, occurred_at: datetime) -> None:
        current = self._stream_time.get((topic, partition))
        self._stream_time[(topic, partition)] = occurred_at if current is None else max(current, occurred_at)
        self._last_event_monotonic[(topic, partition)] = time.monotonic()

    def judgement(self, partition: int, now: datetime, rules: escalation.EscalationRules) -> datetime | None:
        inputs = [
            (stream_time, time.monotonic() - self._last_event_monotonic[key])
            for key, stream_time in self._stream_time.items()
            if key[1] == partition
        ]
        flowing = [stream_time for stream_time, idle_for_s in inputs if idle_for_s < rules.idle_after_s]
        if flowing:
            return escalation.judgement_clock(min(flowing), now, 0.0, rules)
        latest = max((stream_time for stream_time, _ in inputs), default=None)
        return escalation.judgement_clock(latest, now, float("inf"), rules)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives `key`, as producers and the table use."""
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


def parse_resident_event(topic: str, payload: bytes, key: bytes | None) -> events.ResidentEvent:
    """The event in `payload`, which must be one of the models the catalog allows on `topic`, keyed by its
    resident (so that every input of a resident, and its state, land in the same partition)."""
    spec = topics.by_name(topic)
    try:
        event = events.any_event_adapter.validate_json(payload)
    except ValidationError as exc:
        raise ValueError(f"invalid event: {events.describe_validation_error(exc)}") from None
    if not isinstance(event, spec.value_models):
        raise ValueError(f"a {event.event_type} event does not belong on topic {topic}")
    if key != event.resident_id.encode():
        raise ValueError(f"message key {key!r} is not the event's resident_id; resident topics are keyed by resident")
    return event


def dead_letter_event(
    stage: str, topic: str, key: bytes | None, payload: bytes, reason: str, worker_id: str
) -> events.DeadLetter:
    return events.DeadLetter(
        event_id=events.derived_event_id("dead-letter", stage, topic, payload.hex()),
        occurred_at=events.utc_now(),
        received_at=events.utc_now(),
        source=events.Source(gateway_id=worker_id),
        reason=reason,
        stage=stage,
        original_topic=topic,
        original_key=key.decode("utf-8", "backslashreplace") if key is not None else None,
        original_payload=payload.decode("utf-8", "backslashreplace"),
    )


app = create_app(Settings())
