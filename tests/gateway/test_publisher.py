"""Store-and-forward publishing against a real broker process."""

from __future__ import annotations

import time

from carepulse import events, topics
from gateway.buffer import BufferFull, DurableBuffer
from gateway.publisher import Publisher
from tests.factories import observation_set, unique_resident
from tests.kafka_helpers import free_port, parse_all, read_topic

import pytest


def _sets(count: int, residents: list[str]) -> list[events.ObservationSet]:
    return [observation_set(residents[i % len(residents)], pulse=60 + i % 40) for i in range(count)]


def _delivered(bootstrap: str, sent: list[events.ObservationSet]) -> list[events.ObservationSet]:
    wanted = {e.event_id for e in sent}
    values = read_topic(bootstrap, topics.OBSERVATION_SETS.name, timeout_s=60, settle_s=1,
                        until=lambda vs: wanted <= {e.event_id for e in parse_all(vs, skip_invalid=True)})
    return [e for e in parse_all(values, skip_invalid=True) if e.event_id in wanted]


def test_every_event_is_delivered_in_order_per_resident_and_leaves_the_buffer(broker, tmp_path):
    residents = [unique_resident() for _ in range(3)]
    sent = _sets(150, residents)
    buffer = DurableBuffer(tmp_path / "buffer.sqlite")
    publisher = Publisher(broker.bootstrap, buffer).start()
    for event in sent:
        publisher.publish(topics.OBSERVATION_SETS, event.resident_id, event)
    publisher.stop(drain_timeout_s=30)
    assert buffer.depth() == 0
    delivered = _delivered(broker.bootstrap, sent)
    assert sorted(e.event_id for e in delivered) == sorted(e.event_id for e in sent)  # each exactly once
    for resident in residents:
        assert [e.event_id for e in delivered if e.resident_id == resident] == [
            e.event_id for e in sent if e.resident_id == resident
        ]


def test_buffer_written_while_broker_unreachable_is_replayed_by_the_next_gateway_process(broker, tmp_path):
    residents = [unique_resident()]
    sent = _sets(20, residents)
    path = tmp_path / "buffer.sqlite"
    offline = Publisher(f"127.0.0.1:{free_port()}", DurableBuffer(path), retry_backoff_s=0.1).start()
    for event in sent:
        offline.publish(topics.OBSERVATION_SETS, event.resident_id, event)
    time.sleep(1)
    offline.stop(drain_timeout_s=0.5)
    assert DurableBuffer(path).depth() == 20  # nothing acknowledged, nothing dropped

    replaying = Publisher(broker.bootstrap, DurableBuffer(path)).start()
    replaying.stop(drain_timeout_s=30)
    assert [e.event_id for e in _delivered(broker.bootstrap, sent)] == [e.event_id for e in sent]


def test_full_buffer_refuses_new_messages_with_a_reason(tmp_path):
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=100)
    buffer.append("observation-sets", b"k", b"x" * 60)
    with pytest.raises(BufferFull, match="is full \\(60 of 100 bytes\\)"):
        buffer.append("observation-sets", b"k", b"y" * 60)
    assert buffer.depth() == 1
    assert buffer.size_bytes() == 60
