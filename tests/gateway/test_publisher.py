"""Store-and-forward publishing against a real broker process."""

from __future__ import annotations

import logging
import time

import pytest

from carepulse import events, topics
from carepulse.metrics import GatewayMetrics
from gateway.buffer import BufferFull, BufferLevel, DurableBuffer, Priority
from gateway.publisher import BUFFER_LEVEL_MESSAGES, BufferAlarm, Publisher
from tests.factories import observation_set, unique_resident
from tests.kafka_helpers import free_port, parse_all, read_topic


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
    with pytest.raises(BufferFull, match="is full \\(60 of 100 bytes; the last 10 bytes are kept for device"):
        buffer.append("observation-sets", b"k", b"y" * 60)
    assert buffer.depth() == 1
    assert buffer.size_bytes() == 60


# -- metrics ---------------------------------------------------------------------------------------------
def test_metrics_count_what_entered_the_buffer_and_what_the_broker_acknowledged(broker, tmp_path):
    residents = [unique_resident() for _ in range(2)]
    sets = _sets(30, residents)
    falls_topic = topics.CARE_EVENTS
    metrics = GatewayMetrics()
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=10_000_000)
    publisher = Publisher(broker.bootstrap, buffer, metrics=metrics)
    before = time.time()
    for event in sets:
        publisher.publish(topics.OBSERVATION_SETS, event.resident_id, event)
    publisher.publish_raw(falls_topic.name, b"loc-metrics", b'{"not": "checked here"}')
    # Not started yet: everything is in, nothing out.
    assert metrics.value("carepulse_gateway_events_in_total", topic="observation-sets") == 30
    assert metrics.value("carepulse_gateway_events_in_total", topic="care-events") == 1
    assert metrics.value("carepulse_gateway_events_out_total", topic="observation-sets") == 0
    assert before <= metrics.value("carepulse_gateway_last_event_timestamp_seconds") <= time.time()

    publisher.start()
    publisher.stop(drain_timeout_s=30)
    assert buffer.depth() == 0
    assert metrics.value("carepulse_gateway_events_out_total", topic="observation-sets") == 30
    assert metrics.value("carepulse_gateway_events_out_total", topic="care-events") == 1
    assert metrics.value("carepulse_gateway_events_out_total", topic="readings") == 0
    # The gauges after the last sending round: an empty buffer, and its limit.
    assert metrics.value("carepulse_gateway_buffer_messages") == 0
    assert metrics.value("carepulse_gateway_buffer_bytes") == 0
    assert metrics.value("carepulse_gateway_buffer_oldest_age_seconds") == 0
    assert metrics.value("carepulse_gateway_buffer_limit_bytes") == 10_000_000
    assert metrics.value("carepulse_gateway_buffer_rejected_total") == 0


def test_metrics_show_the_backlog_while_the_broker_is_unreachable_and_count_refusals_when_full(tmp_path):
    sets = _sets(6, [unique_resident()])
    size = len(events.to_json(sets[0]))
    assert {len(events.to_json(e)) for e in sets} == {size}
    metrics = GatewayMetrics()
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=5 * size, reserve_bytes=0)
    for event in sets[:4]:  # left by the last run, a minute ago
        buffer.append(topics.OBSERVATION_SETS.name, None, events.to_json(event), now=time.time() - 60)
    # Not started: the broker is unreachable, so nothing leaves the buffer anyway.
    publisher = Publisher(f"127.0.0.1:{free_port()}", buffer, metrics=metrics)
    publisher.publish(topics.OBSERVATION_SETS, sets[4].resident_id, sets[4])
    assert metrics.value("carepulse_gateway_events_in_total", topic="observation-sets") == 1
    assert metrics.value("carepulse_gateway_buffer_messages") == 5
    assert metrics.value("carepulse_gateway_buffer_bytes") == 5 * size
    assert metrics.value("carepulse_gateway_buffer_limit_bytes") == 5 * size
    assert 60 <= metrics.value("carepulse_gateway_buffer_oldest_age_seconds") < 70

    with pytest.raises(BufferFull):
        publisher.publish(topics.OBSERVATION_SETS, sets[5].resident_id, sets[5])
    assert metrics.value("carepulse_gateway_buffer_rejected_total") == 1
    assert metrics.value("carepulse_gateway_events_in_total", topic="observation-sets") == 1  # not accepted
    assert metrics.value("carepulse_gateway_buffer_messages") == 5
    assert metrics.value("carepulse_gateway_events_out_total", topic="observation-sets") == 0


def test_the_buffer_state_survives_a_reopen(tmp_path):
    path = tmp_path / "buffer.sqlite"
    first = DurableBuffer(path)
    first.append("readings", None, b"a" * 10, now=100.0)
    first.append("readings", None, b"b" * 20, now=150.0)
    first.ack([first.pending(1)[0].seq])
    first.close()
    reopened = DurableBuffer(path)
    assert (reopened.depth(), reopened.size_bytes(), reopened.oldest_age_s(now=160.0)) == (1, 20, 10.0)
    reopened.ack([reopened.pending(1)[0].seq, 999])  # an unknown seq changes nothing
    assert (reopened.depth(), reopened.size_bytes(), reopened.oldest_age_s()) == (0, 0, 0.0)


# -- the buffer's level alarm -----------------------------------------------------------------------------
N, F, T, D = (BufferLevel.NORMAL, BufferLevel.FILLING, BufferLevel.RETRIED_REFUSED,
              BufferLevel.DEVICE_REFUSED)


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([N, N], [None, None]),
        ([F, F, T, T, D, D], [F, None, T, None, D, None]),  # one line per change, not per check
        ([D, N], [D, N]),  # straight to the worst (e.g. a disk filled by something else) and back
        ([F, N, N, F], [F, N, None, F]),  # a second outage reports again
    ],
)
def test_buffer_alarm_reports_each_change_of_level_once(levels, expected):
    alarm = BufferAlarm()
    assert [alarm.check(level) for level in levels] == expected


def test_every_buffer_level_has_a_message_as_urgent_as_what_is_refused():
    assert {level: severity for level, (severity, _) in BUFFER_LEVEL_MESSAGES.items()} == {
        N: logging.INFO, F: logging.WARNING, T: logging.ERROR, D: logging.CRITICAL}


def test_each_level_is_logged_once_when_the_append_that_reaches_it_happens(tmp_path, caplog):
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=1000, reserve_bytes=100)
    metrics = GatewayMetrics()
    publisher = Publisher(f"127.0.0.1:{free_port()}", buffer, metrics=metrics)  # not started
    levels_after, gauge_after = [], []
    for _ in range(9):  # tablet entries, up to the reserve
        publisher.publish_raw("readings", None, b"t" * 100)
        levels_after.append(publisher.alarm.level)
        gauge_after.append(metrics.value("carepulse_gateway_buffer_level"))
    with pytest.raises(BufferFull):
        publisher.publish_raw("readings", None, b"t" * 100)
    assert metrics.value("carepulse_gateway_buffer_level") == T
    publisher.publish_raw("readings", None, b"d" * 100, priority=Priority.DEVICE)  # into the reserve, filling it
    assert metrics.value("carepulse_gateway_buffer_level") == D
    with pytest.raises(BufferFull):
        publisher.publish_raw("readings", None, b"d", priority=Priority.DEVICE)
    assert levels_after == gauge_after == [N] * 7 + [F, T]  # 800 bytes: 80 %; 900: the tablets' limit
    assert metrics.value("carepulse_gateway_buffer_level") == D
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (severity, f"{message} ({size} of 1000 bytes, {depth} messages; {free} bytes free on its disk)")
        for (severity, message), size, depth, free in zip(
            (BUFFER_LEVEL_MESSAGES[F], BUFFER_LEVEL_MESSAGES[T], BUFFER_LEVEL_MESSAGES[D]), (800, 900, 1000),
            (8, 9, 10), [_free_in(record.getMessage()) for record in caplog.records])
    ]
    buffer.ack([row.seq for row in buffer.pending(100)])  # what a sending round does once the broker is back
    publisher.record_buffer()
    assert (publisher.alarm.level, metrics.value("carepulse_gateway_buffer_level")) == (N, N)


def _free_in(message: str) -> int:
    """The free disk figure a level line reports (it moves with whatever else writes to the disk)."""
    return int(message.rsplit("; ", 1)[1].split(" ")[0])
