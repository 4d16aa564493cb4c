"""The carepulse Faust worker: ``carepulse worker`` or ``faust -A streams.app worker``.

Processing is at-least-once (Faust cannot use transactions on the embedded broker, streaming.md
§3.5.1), so every handler is idempotent: inputs are deduplicated by ``event_id`` against per-resident
state in a changelog-backed table, and derived events get ids derived from their inputs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import faust
from pydantic import ValidationError

from carepulse import events, topics
from carepulse.broker import ensure_topics
from carepulse.topics import CATALOG
from carepulse.settings import Settings
from indicators import news2
from streams.scoring import score_observation_set

log = logging.getLogger(__name__)

#: How many recent input ids each resident's state remembers for deduplication. Redelivery after a
#: crash or rebalance replays at most the uncommitted tail of a partition (Faust commits every
#: 2.8 s by default), far fewer than this many sets for one resident.
RECENT_IDS_PER_RESIDENT = 256


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
        produced = [spec.name for spec in CATALOG] + [table.changelog_topic.get_topic_name() for table in self.tables.values()]
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
    _register_agents(app, settings)
    return app


def _raw_topic(app: faust.App, spec: topics.TopicSpec, settings: Settings) -> faust.TopicT:
    return app.topic(
        spec.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partition_count(settings.topic_partitions),
    )


def _register_agents(app: faust.App, settings: Settings) -> None:
    observation_sets = _raw_topic(app, topics.OBSERVATION_SETS, settings)
    news2_scores = _raw_topic(app, topics.NEWS2_SCORES, settings)
    escalations = _raw_topic(app, topics.ESCALATIONS, settings)
    dead_letters = _raw_topic(app, topics.DEAD_LETTERS, settings)
    resident_state = app.Table("resident-state", default=dict, partitions=settings.topic_partitions)

    async def dead_letter(stage: str, spec: topics.TopicSpec, key: bytes | None, payload: bytes, reason: str) -> None:
        letter = dead_letter_event(stage, spec.name, key, payload, reason, settings.worker_id)
        log.warning("dead letter from %s: %s", stage, reason)
        await dead_letters.send(key=stage.encode(), value=events.to_json(letter))

    @app.agent(observation_sets, name="news2-scoring")
    async def score_sets(stream: faust.StreamT) -> None:
        async for event in stream.events():
            key, payload = event.key, event.value
            try:
                observation = events.parse(events.ObservationSet, payload)
            except ValidationError as exc:
                await dead_letter("worker.news2", topics.OBSERVATION_SETS, key, payload,
                                  f"invalid observation set: {events.describe_validation_error(exc)}")
                continue
            state = resident_state[observation.resident_id]
            recent = state.get("recent_ids", [])
            if str(observation.event_id) in recent:
                continue  # a redelivered or duplicated set: its outputs were already sent
            try:
                scored, escalation = score_observation_set(observation, events.utc_now())
            except news2.ImpossibleValue as exc:
                await dead_letter("worker.news2", topics.OBSERVATION_SETS, key, payload, f"impossible value: {exc}")
                continue
            resident_key = observation.resident_id.encode()
            # Outputs first, then the dedup record: a crash in between re-sends the same event ids
            # (deduplicable) rather than losing an escalation.
            await news2_scores.send(key=resident_key, value=events.to_json(scored))
            if escalation is not None:
                await escalations.send(key=resident_key, value=events.to_json(escalation))
            resident_state[observation.resident_id] = remember(state, str(observation.event_id))


def remember(state: Mapping, event_id: str) -> dict:
    """The resident state with `event_id` added to its bounded list of recent input ids."""
    recent = [*state.get("recent_ids", []), event_id][-RECENT_IDS_PER_RESIDENT:]
    return {**state, "recent_ids": recent}


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
