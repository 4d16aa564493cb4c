"""The carepulse Faust worker: ``carepulse worker`` or ``faust -A streams.app worker``.

One agent owns each resident's state: it consumes the resident-keyed, co-partitioned topics (device
readings and manual observations, observation sets, resident context, clinical actions), hands each
event to `streams.resident.ResidentProcessor`, sends what it returns and stores the state in a
changelog-backed table, so a restarted or rebalanced worker continues where the last one stopped. A
timer judges deadlines (assembly windows, escalations and observations overdue) on the same state.

Another owns each location's care-quality indicators: a relay re-keys resident records, NEWS2 results,
escalations and urinalysis results by location onto ``location-events``; the location agent folds those,
the location-keyed ``care-events`` and ``location-profiles`` into `streams.location.LocationStore` (a
changelog-backed table), and a timer publishes each indicator whenever its value or window changes
(``indicators``), the value at each local midnight (``indicators.history``) and each location's live
capacity when it changes (``capacity``).

Processing is at-least-once (Faust cannot use transactions on the embedded broker, streaming.md
§3.5.1), so handling is idempotent: inputs are deduplicated by ``event_id`` and derived events get ids
derived from their inputs. Outputs are sent before the state is stored: a crash in between repeats an
event id, it never loses an escalation.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import faust
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from carepulse import events, metrics, topics
from carepulse.broker import ensure_topics
from carepulse.settings import Settings
from indicators import escalation, news2, quality
from streams import alerts
from streams.clocks import InputProgress, PartitionClocks
from streams.location import IndicatorBoard, LocationStore, TooLate
from streams.resident import Output, ResidentProcessor, ResidentState

log = logging.getLogger(__name__)

#: The resident-keyed topics the resident agent consumes (all co-partitioned by resident_id).
RESIDENT_INPUTS = (topics.READINGS, topics.OBSERVATION_SETS, topics.RESIDENTS, topics.CLINICAL_ACTIONS)
#: Resident-keyed topics whose events also feed a location's indicators, relayed onto LOCATION_EVENTS: resident
#: records, NEWS2 results, escalations and, of the clinical actions, urinalysis results (issue 11).
RELAYED_TO_LOCATIONS = (topics.RESIDENTS, topics.NEWS2_SCORES, topics.ESCALATIONS, topics.CLINICAL_ACTIONS)
#: The location-keyed topics the location agent consumes (co-partitioned by location_id); a location's profile
#: gives its registered beds (the small-home falls window), its setting (continuity of carers) and capacity.
LOCATION_INPUTS = (topics.CARE_EVENTS, topics.LOCATION_EVENTS, topics.LOCATION_PROFILES)
TICK_INTERVAL_S = 1.0
#: How often the worker measures its consumer lag for /metrics.
LAG_INTERVAL_S = 5.0


class CarepulseApp(faust.App):
    """A Faust app that creates the catalog's topics before its consumers subscribe."""

    carepulse_settings: Settings

    async def on_first_start(self) -> None:
        settings = self.carepulse_settings
        await asyncio.to_thread(ensure_topics, settings.bootstrap, settings.topic_partitions)
        metrics.serve_metrics_or_log(settings.worker_metrics_port, metrics.WORKER.registry, settings.metrics_host,
                                     role="worker")
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
    # Every agent's inputs, not only the resident agent's: see the handler.
    app.on_partitions_assigned.connect(rewind_partitions_never_committed)
    outputs = {spec.name: _raw_topic(app, settings, spec) for spec in topics.CATALOG}
    # One reading of each rules file: the resident and location sides must judge by the same rules.
    quality_rules = quality.load_rules(settings.quality_rules_path)
    _register(app, settings, escalation.load_rules(settings.escalation_rules_path), quality_rules, outputs)
    _register_locations(app, settings, quality_rules, outputs)
    return app


_CATALOG_TOPICS = {spec.name for spec in topics.CATALOG}


async def rewind_partitions_never_committed(sender: faust.App, assigned: set, **_: object) -> None:
    """Records fetched while a rebalance and its changelog recovery run can be taken from the consumer
    without reaching the agents; Faust relies on its seek back to the committed offsets once recovery is
    done (`Consumer.perform_seek`). But aiokafka's `seek_to_committed` seeks only partitions with a committed
    offset above 0, so such records of a partition that has none yet were lost for good: the kill test lost
    an acknowledgement at offset 0 of a clinical-actions partition, and the red escalation it answered went
    overdue (H-16). Those partitions are sought to their beginning too; an input read twice is recognised
    by its event id."""
    consumer = sender.consumer
    if getattr(consumer.seek_to_committed, "rewinds_never_committed", False):
        return
    seek_to_committed = consumer.seek_to_committed

    async def seek_to_committed_or_beginning() -> dict:
        committed = await seek_to_committed()
        for tp, offset in committed.items():
            if not offset and tp.topic in _CATALOG_TOPICS:
                await consumer.seek(tp, 0)  # below the log start, the consumer resets to the earliest
        return committed

    seek_to_committed_or_beginning.rewinds_never_committed = True
    consumer.seek_to_committed = seek_to_committed_or_beginning


def _raw_topic(app: faust.App, settings: Settings, *specs: topics.TopicSpec) -> faust.TopicT:
    return app.topic(
        *(spec.name for spec in specs),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=specs[0].partition_count(settings.topic_partitions),
    )


def _register(app: faust.App, settings: Settings, rules: escalation.EscalationRules,
              quality_rules: quality.QualityRules, outputs: dict[str, faust.TopicT]) -> None:
    inputs = _raw_topic(app, settings, *RESIDENT_INPUTS)
    # Keyed by the same bytes as the input messages and placed by the same partitioner, so a resident's
    # state lives in the changelog partition matching its input partition, and the timer may write it.
    resident_states = app.Table(
        "resident-state", default=dict, partitions=settings.topic_partitions,
        key_type=bytes, use_partitioner=True,
    )
    processor = ResidentProcessor(rules, settings.worker_id, quality_rules=quality_rules)
    # The agent and the timer both read-modify-write resident state around awaited sends.
    state_lock = asyncio.Lock()
    clocks = PartitionClocks()
    async def send(results: list[Output]) -> None:
        for output in results:
            await publish(output.topic, output.key, output.event)
            if isinstance(output.event, (events.Escalation, events.EscalationOverdue)):
                metrics.WORKER.escalation_event(output.event)
                alert = alerts.for_escalation(output.event, events.utc_now(), settings.worker_id)
                if alert is not None:
                    await publish(topics.ALERTS, alert.location_id, alert)

    async def publish(spec: topics.TopicSpec, key: str, event: events.Event) -> None:
        await outputs[spec.name].send(key=key.encode(), value=events.to_json(event))
        metrics.WORKER.event_out(spec.name)

    async def dead_letter(topic: str, key: bytes | None, payload: bytes, reason: str) -> None:
        await send_dead_letter(outputs, "worker.resident", topic, key, payload, reason, settings.worker_id)

    @app.agent(inputs, name="residents")
    async def residents(stream: faust.StreamT) -> None:
        async for message in stream.events():
            topic, partition = message.message.topic, message.message.partition
            clocks.processed(topic, partition, message.message.offset)
            try:
                event = parse_keyed_event(topic, message.value, message.key)
            except ValueError as exc:
                await dead_letter(topic, message.key, message.value, str(exc))
                continue
            metrics.WORKER.observe_event_in(topic, event.occurred_at, events.utc_now())
            key = event.resident_id.encode()
            # Before handling: the timer must never judge this event's resident on a clock that has not seen it.
            clocks.saw(topic, partition, event.occurred_at)
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
        if app.rebalancing or app.in_recovery:
            return  # state and clocks are being handed over: judge once this worker knows what it owns
        now = events.utc_now()
        assignment = app.consumer.assignment()
        active = {tp.partition for tp in assignment if tp.topic == topics.READINGS.name}
        clocks.keep_only(active)
        progress = await _input_progress(app, clocks, assignment)
        judged_at = {partition: clocks.judgement(partition, now, rules, progress.get(partition, {}))
                     for partition in active}
        for key in list(resident_states.keys()):
            partition = partition_of(key, settings.topic_partitions)
            if partition not in active or judged_at[partition] is None:
                continue  # another worker owns this resident now, or its inputs are not read far enough
            async with state_lock:
                state, results = processor.tick(ResidentState.from_json(resident_states[key]), judged_at[partition], now)
                if results:
                    await send(results)
                    resident_states[key] = state.to_json()


def _register_locations(app: faust.App, settings: Settings, rules: quality.QualityRules,
                        outputs: dict[str, faust.TopicT]) -> None:
    # Keys are "<location>" and "<location>|<day>|<resident>": written only by the location agent, so each
    # lands in the changelog partition of the location's input partition (Faust's default placement).
    table = app.Table("location-state", default=None, partitions=settings.topic_partitions, key_type=str)
    store = LocationStore(table, rules)
    board = IndicatorBoard(store, worker_id=settings.worker_id,
                           wall_clock_lag=timedelta(seconds=settings.indicators_wall_clock_lag_s),
                           refresh=timedelta(seconds=settings.indicators_refresh_s))
    future_tolerance = timedelta(seconds=settings.indicators_future_tolerance_s)
    state_lock = asyncio.Lock()

    async def dead_letter(topic: str, key: bytes | None, payload: bytes, reason: str) -> None:
        await send_dead_letter(outputs, "worker.location", topic, key, payload, reason, settings.worker_id)

    @app.agent(_raw_topic(app, settings, *RELAYED_TO_LOCATIONS), name="relay-to-locations")
    async def relay_to_locations(stream: faust.StreamT) -> None:
        async for message in stream.events():
            try:
                event = events.any_event_adapter.validate_json(message.value)
            except ValidationError:
                continue  # the resident agent dead-letters what is invalid on its inputs; ours are valid
            if isinstance(event, topics.LOCATION_EVENTS.value_models):
                await outputs[topics.LOCATION_EVENTS.name].send(key=event.location_id.encode(), value=message.value)

    @app.agent(_raw_topic(app, settings, *LOCATION_INPUTS), name="locations")
    async def locations(stream: faust.StreamT) -> None:
        async for message in stream.events():
            topic = message.message.topic
            try:
                event = parse_keyed_event(topic, message.value, message.key)
                metrics.WORKER.observe_event_in(topic, event.occurred_at, events.utc_now())
                if event.occurred_at > events.utc_now() + future_tolerance:
                    raise ValueError(f"occurred_at {event.occurred_at.isoformat()} is in the future; "
                                     "the device or system clock that stamped it is wrong")
                async with state_lock:
                    store.apply(event)
                    store.prune(event.location_id)
            except (ValueError, TooLate) as exc:
                await dead_letter(topic, message.key, message.value, str(exc))
                continue
            board.applied(event)

    @app.timer(interval=TICK_INTERVAL_S)
    async def publish_indicators() -> None:
        if app.rebalancing or app.in_recovery:
            board.forget()  # the tables are moving: evaluate everything again once they are restored
            return
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.CARE_EVENTS.name}
        now = events.utc_now()
        for location_id in board.locations():
            if partition_of(location_id.encode(), settings.topic_partitions) not in owned:
                continue
            # Between locations the agents run: a red reading must not wait for every home's indicators.
            await asyncio.sleep(0)
            async with state_lock:
                updates = board.updates(location_id, now)
            for spec, key, event in updates:
                await outputs[spec.name].send(key=key.encode(), value=events.to_json(event))
                metrics.WORKER.event_out(spec.name)

    @app.timer(interval=LAG_INTERVAL_S)
    async def measure_lag() -> None:
        """Messages not yet consumed per input topic (high watermark minus position), for /metrics."""
        if app.rebalancing:
            return
        lags = {}
        for tp in app.consumer.assignment():
            try:
                position = await app.consumer.position(tp)
                highwater = app.consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - revoked meanwhile: a metric must never stop the worker
                continue
            if position is not None and highwater is not None:  # no highwater before the first fetch
                lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        metrics.WORKER.set_consumer_lag(lags, topics_consumed={tp.topic for tp in app.consumer.assignment()})


async def _input_progress(app: faust.App, clocks: PartitionClocks, assignment: set
                          ) -> dict[int, dict[str, InputProgress]]:
    """Per partition, how far each of the resident agent's inputs has been read (see `streams.clocks`).

    Before the agent has processed anything from an input since the assignment, the consumer's position
    cannot say: it moves when messages are fetched and queued for the agent, not when they are processed
    (a kill test caught an acknowledgement queued behind a position already at the end). Faust's read
    offset can: it is the offset the stream was sought to after recovery (the next to read) and then the
    last one queued, so it stays below the high watermark while anything is queued. It is internal to the
    pinned faust-streaming; where it is missing the input counts as unread unless it is empty."""
    inputs = {spec.name for spec in RESIDENT_INPUTS}
    read_offsets = getattr(app.consumer, "_read_offset", {})
    progress: dict[int, dict[str, InputProgress]] = {}
    for tp in assignment:
        if tp.topic not in inputs:
            continue
        next_offset = clocks.next_offset(tp.topic, tp.partition)
        try:
            highwater = app.consumer.highwater(tp)
            if next_offset is None:
                next_offset = read_offsets.get(tp)
            if next_offset is None and highwater == 0:
                next_offset = await app.consumer.position(tp)
        except Exception:  # noqa: BLE001 - revoked meanwhile: unknown progress, so not read to its end
            next_offset = highwater = None
        progress.setdefault(tp.partition, {})[tp.topic] = InputProgress(next_offset, highwater)
    return progress


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives `key`, as producers and the table use."""
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


def parse_keyed_event(topic: str, payload: bytes, key: bytes | None) -> events.Event:
    """The event in `payload`, which must be one of the models the catalog allows on `topic` and carry the
    message key in the field the topic is keyed by (resident_id or location_id), so that every input of a
    resident or a location, and its state, land in the same partition."""
    spec = topics.by_name(topic)
    try:
        event = events.any_event_adapter.validate_json(payload)
    except ValidationError as exc:
        raise ValueError(f"invalid event: {events.describe_validation_error(exc)}") from None
    if not isinstance(event, spec.value_models):
        raise ValueError(f"a {event.event_type} event does not belong on topic {topic}")
    if key != str(getattr(event, spec.key)).encode():
        # The key is not in the reason: reasons are logged, and a key is a resident id (the dead letter keeps it).
        raise ValueError(f"the message key is not the event's {spec.key}; {topic} is keyed by {spec.key}")
    return event


async def send_dead_letter(outputs: dict[str, faust.TopicT], stage: str, topic: str, key: bytes | None,
                           payload: bytes, reason: str, worker_id: str) -> None:
    log.warning("dead letter from %s on %s: %s", stage, topic, reason)
    letter = dead_letter_event(stage, topic, key, payload, reason, worker_id)
    await outputs[topics.DEAD_LETTERS.name].send(key=letter.stage.encode(), value=events.to_json(letter))
    metrics.WORKER.dead_letter(stage, reason)
    metrics.WORKER.event_out(topics.DEAD_LETTERS.name)


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
