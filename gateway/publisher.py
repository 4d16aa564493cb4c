"""Store-and-forward publishing from the gateway to Kafka (kafka-python).

`publish` commits the event to the durable buffer and returns; a background thread sends buffered
messages in order with ``acks=all`` and an idempotent producer, keyed by resident, and removes each
from the buffer only once the broker has acknowledged it. While the broker is unreachable the buffer
grows and the sender retries with back-off; when the path returns it replays the buffer in order.

Ordering: one round of at most `batch_size` messages is in flight at a time, and the producer retries
a round until every message in it is acknowledged (idempotent retries keep per-partition order).

Refusals: `publish` passes the event's `Priority` to the buffer. Tablet entries (the default,
`Priority.RETRIED`) are refused first, so that device readings (`Priority.DEVICE`, which nobody sends
again) keep the buffer's reserve (hazard H-22, `gateway.buffer`). The sender thread never stops on an error:
a broker it cannot reach, or a disk that refuses to remove acknowledged messages (they are sent again),
is logged and retried after a back-off. Each change of the buffer's `BufferLevel` is logged once, at a
log level as urgent as what is refused (`BUFFER_LEVEL_MESSAGES`), when the append, refusal or round that
caused it happens.

Metrics (`carepulse.metrics.GatewayMetrics`, the process-wide `GATEWAY` unless one is passed): every message
accepted into the buffer (``carepulse_gateway_events_in_total``, and the last-event time), every refusal of
a full buffer, every message the broker acknowledged (``..._events_out_total``), and the buffer's depth, size,
oldest age and level (``carepulse_gateway_buffer_level``, the `BufferLevel`) after every append, refusal and
sending round, and every second while a round waits for the
broker (during an outage the round waits, and the gauges must still show the backlog growing). Recording a
metric never raises into the sender.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError

from carepulse import events
from carepulse.metrics import GATEWAY, GatewayMetrics
from carepulse.topics import TopicSpec
from gateway.buffer import (
    DEVICE_RESERVE_FRACTION,
    FILLING_FRACTION,
    BufferFull,
    BufferLevel,
    BufferWriteFailed,
    DurableBuffer,
    Priority,
)

log = logging.getLogger(__name__)

#: Wait after the buffer's disk refused a write: each retry sends the same round again (duplicates on the wire),
#: so it is slower than the broker back-off, while whoever frees the disk gets to it.
STORAGE_RETRY_S = 5.0


class BufferAlarm:
    """Decides when to log the buffer's level: once per change, not on every check, so a long outage gives one
    line per level on the way up (and one on the way down) rather than a line every few seconds. Checked from
    the intake's, the central's and the sender's threads alike."""

    def __init__(self) -> None:
        self.level = BufferLevel.NORMAL
        self._lock = threading.Lock()

    def check(self, level: BufferLevel) -> BufferLevel | None:
        """`level` when it differs from the last one checked, else None."""
        with self._lock:
            if level == self.level:
                return None
            self.level = level
            return level


#: What each level means for whoever reads the gateway's log; the log level says how urgent it is.
BUFFER_LEVEL_MESSAGES: dict[BufferLevel, tuple[int, str]] = {
    BufferLevel.NORMAL: (logging.INFO, "gateway buffer is back to normal: every input is accepted"),
    BufferLevel.FILLING: (
        logging.WARNING,
        (f"gateway buffer is filling (over {FILLING_FRACTION:.0%} of its limit, or its disk is getting short): "
         f"the broker has not taken events for a while; tablet entries will be refused when "
         f"{DEVICE_RESERVE_FRACTION:.0%} is left"),
    ),
    BufferLevel.RETRIED_REFUSED: (
        logging.ERROR,
        ("gateway buffer is refusing tablet entries (507; the tablets keep them and send them again); device "
         "readings use the reserve kept for them"),
    ),
    BufferLevel.DEVICE_REFUSED: (
        logging.CRITICAL,
        ("gateway buffer is refusing device readings: each one arriving now is LOST (and logged with its "
         "bytes); restore the broker connection or free disk space now"),
    ),
}


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        buffer: DurableBuffer,
        *,
        client_id: str = "carepulse-gateway",
        batch_size: int = 500,
        retry_backoff_s: float = 0.5,
        metrics: GatewayMetrics = GATEWAY,
        now: Callable[[], datetime] = events.utc_now,
    ) -> None:
        self.bootstrap = bootstrap
        self.buffer = buffer
        self.client_id = client_id
        self.batch_size = batch_size
        self.retry_backoff_s = retry_backoff_s
        self.sent_total = 0
        self.metrics = metrics
        self.now = now
        self.alarm = BufferAlarm()
        self._producer: KafkaProducer | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-publisher", daemon=True)

    # -- producer side -------------------------------------------------------------------------
    def publish(self, spec: TopicSpec, key: str | None, event: events.Event, *,
                priority: Priority = Priority.RETRIED) -> int:
        """Buffer `event` durably for `spec`'s topic; returns its buffer sequence number.

        Raises `BufferFull` (counted on ``carepulse_gateway_buffer_rejected_total``) when the buffer refuses it
        at `priority`: a `Priority.RETRIED` caller keeps the event and sends it again later, a
        `Priority.DEVICE` caller has lost it and must say so."""
        return self.publish_raw(spec.name, key.encode() if key is not None else None, events.to_json(event),
                                priority=priority)

    def publish_raw(self, topic: str, key: bytes | None, value: bytes, *,
                    priority: Priority = Priority.RETRIED) -> int:
        try:
            seq = self.buffer.append(topic, key, value, priority=priority)
        except BufferFull:
            self.metrics.buffer_rejected.inc()
            self.record_buffer()  # the first refusal raises the alarm at once
            raise
        self.metrics.event_in(topic, self.now())
        self.record_buffer()
        self._wake.set()
        return seq

    # -- sender thread ---------------------------------------------------------------------------
    def start(self) -> Publisher:
        self.record_buffer()  # a buffer replayed from the last run is visible at once
        self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop sending; waits up to `drain_timeout_s` for the buffer to empty first."""
        deadline = time.monotonic() + drain_timeout_s
        while self.buffer.depth() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=drain_timeout_s + 5)
        if self._producer is not None:
            self._producer.close(timeout=1)
            self._producer = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.send_round()
            except (KafkaError, OSError) as exc:
                log.warning("broker unreachable from gateway (%s); readings stay buffered and will be replayed", exc)
                self._reset_producer()
                self._back_off()
                continue
            except BufferWriteFailed as exc:
                log.error("%s", exc)
                self._back_off(STORAGE_RETRY_S)
                continue
            except sqlite3.Error as exc:
                log.error("gateway buffer %s could not be read (%s); retrying", self.buffer.path, exc)
                self._back_off(STORAGE_RETRY_S)
                continue
            if not sent:
                self._wake.wait(0.5)
                self._wake.clear()

    def _back_off(self, at_least_s: float = 0.0) -> None:
        self.record_buffer()
        self._stop.wait(max(self.retry_backoff_s, at_least_s))

    def send_round(self) -> int:
        """Send the oldest buffered messages and remove those the broker acknowledged; returns how many."""
        rows = self.buffer.pending(self.batch_size)
        if not rows:
            return 0
        producer = self._connect()
        futures = [(row.seq, producer.send(row.topic, key=row.key, value=row.value)) for row in rows]
        while not all(future.is_done for _, future in futures):
            producer.flush(timeout=1.0)
            self.record_buffer()
            if self._stop.is_set() and not all(future.is_done for _, future in futures):
                return 0  # unacknowledged messages stay in the buffer for the next start
        acked = [seq for seq, future in futures if future.succeeded()]
        self.buffer.ack(acked)
        self.sent_total += len(acked)
        self._record_forwarded(row.topic for row, (_, future) in zip(rows, futures) if future.succeeded())
        self.record_buffer()
        if len(acked) < len(futures):
            failed = next(future.exception for _, future in futures if future.failed())
            raise KafkaError(f"{len(futures) - len(acked)} of {len(futures)} messages not acknowledged: {failed}")
        return len(acked)

    def record_buffer(self) -> None:
        """Set the buffer gauges (depth, bytes, oldest age, limit, level) from the buffer as it is now, and log
        its level when that changed (`BufferAlarm`, `BUFFER_LEVEL_MESSAGES`)."""
        try:
            self.metrics.set_buffer(self.buffer.depth(), self.buffer.size_bytes(), self.buffer.oldest_age_s(),
                                    self.buffer.max_bytes)
            level = self.buffer.level()
            self.metrics.set_buffer_level(level)
            change = self.alarm.check(level)
            if change is not None:
                severity, message = BUFFER_LEVEL_MESSAGES[change]
                log.log(severity, "%s (%d of %d bytes, %d messages; %d bytes free on its disk)", message,
                        self.buffer.size_bytes(), self.buffer.max_bytes, self.buffer.depth(),
                        self.buffer.disk_free_bytes())
        except Exception:  # a metric or a log line must never stop the sender, nor refuse an input
            log.debug("could not record the buffer's state", exc_info=True)

    def _record_forwarded(self, topics_acked: Iterable[str]) -> None:
        for topic, count in Counter(topics_acked).items():
            self.metrics.events_forwarded(topic, count)

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                # Never expire a message inside the producer: the durable buffer is the source of truth
                # and the round waits until the broker is back.
                delivery_timeout_ms=2**31 - 1,
                request_timeout_ms=10_000,
                max_block_ms=10_000,
                reconnect_backoff_max_ms=2_000,
            )
        return self._producer

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except KafkaError:  # closing a producer that never connected
                pass
