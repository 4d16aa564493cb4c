"""Store-and-forward publishing from the gateway to Kafka (kafka-python).

`publish` commits the event to the durable buffer and returns; a background thread sends buffered
messages in order with ``acks=all`` and an idempotent producer, keyed by resident, and removes each
from the buffer only once the broker has acknowledged it. While the broker is unreachable the buffer
grows and the sender retries with back-off; when the path returns it replays the buffer in order.

Ordering: one round of at most `batch_size` messages is in flight at a time, and the producer retries
a round until every message in it is acknowledged (idempotent retries keep per-partition order).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

from carepulse import events
from carepulse.topics import TopicSpec
from gateway.buffer import DurableBuffer

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        buffer: DurableBuffer,
        *,
        client_id: str = "carepulse-gateway",
        batch_size: int = 500,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self.bootstrap = bootstrap
        self.buffer = buffer
        self.client_id = client_id
        self.batch_size = batch_size
        self.retry_backoff_s = retry_backoff_s
        self.sent_total = 0
        self._producer: KafkaProducer | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-publisher", daemon=True)

    # -- producer side -------------------------------------------------------------------------
    def publish(self, spec: TopicSpec, key: str | None, event: events.Event) -> int:
        """Buffer `event` durably for `spec`'s topic; returns its buffer sequence number."""
        seq = self.buffer.append(spec.name, key.encode() if key is not None else None, events.to_json(event))
        self._wake.set()
        return seq

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> int:
        seq = self.buffer.append(topic, key, value)
        self._wake.set()
        return seq

    # -- sender thread ---------------------------------------------------------------------------
    def start(self) -> Publisher:
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
                self._stop.wait(self.retry_backoff_s)
                continue
            if not sent:
                self._wake.wait(0.5)
                self._wake.clear()

    def send_round(self) -> int:
        """Send the oldest buffered messages and remove those the broker acknowledged; returns how many."""
        rows = self.buffer.pending(self.batch_size)
        if not rows:
            return 0
        producer = self._connect()
        futures = [(row.seq, producer.send(row.topic, key=row.key, value=row.value)) for row in rows]
        while not all(future.is_done for _, future in futures):
            producer.flush(timeout=1.0)
            if self._stop.is_set() and not all(future.is_done for _, future in futures):
                return 0  # unacknowledged messages stay in the buffer for the next start
        acked = [seq for seq, future in futures if future.succeeded()]
        self.buffer.ack(acked)
        self.sent_total += len(acked)
        if len(acked) < len(futures):
            failed = next(future.exception for _, future in futures if future.failed())
            raise KafkaError(f"{len(futures) - len(acked)} of {len(futures)} messages not acknowledged: {failed}")
        return len(acked)

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
