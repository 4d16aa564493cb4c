"""Helpers for tests that talk to a real broker process (never a mock)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from carepulse import events
from carepulse.processes import spawn, stop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[bytes]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 0.0,
) -> list[bytes]:
    """All values on `topic` from the beginning, read until `until(values)` holds (then `settle_s` more
    seconds, to catch duplicates that would follow) or the timeout passes."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    satisfied_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=250).values():
                values.extend(record.value for record in records)
            if satisfied_at is None and until(values):
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= settle_s:
                break
    finally:
        consumer.close()
    return values


def parse_all(values: list[bytes], *, skip_invalid: bool = False) -> list[events.Event]:
    """Every value as an event. Tests share one broker, and some publish garbage on purpose: a test that
    reads a topic others write garbage to passes `skip_invalid`."""
    parsed = []
    for value in values:
        try:
            parsed.append(events.any_event_adapter.validate_json(value))
        except ValidationError:
            if not skip_invalid:
                raise
    return parsed


class CarepulseProcess:
    """A `python -m carepulse <command>` child process against a real broker."""

    def __init__(self, command: list[str], bootstrap: str, log_path: Path, env: dict[str, str]):
        self.command = [sys.executable, "-m", "carepulse", *command]
        self.log_path = log_path
        # No /metrics endpoints unless a test asks for one: several processes run at once on one machine.
        self.env = {**os.environ, "CAREPULSE_KAFKA_BOOTSTRAP": bootstrap, "CAREPULSE_LOG_LEVEL": "INFO",
                    "CAREPULSE_WORKER_METRICS_PORT": "0", "CAREPULSE_GATEWAY_METRICS_PORT": "0",
                    "CAREPULSE_FEED_METRICS_PORT": "0", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self):
        self.process = spawn(self.command, log_path=self.log_path, env=self.env)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        code = stop(self.process, sig, timeout_s=30)
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class WorkerProcess(CarepulseProcess):
    """`carepulse worker` as a real child process against a real broker."""

    def __init__(self, bootstrap: str, log_path: Path, worker_id: str, extra_env: dict[str, str] | None = None):
        super().__init__(["worker"], bootstrap, log_path, {"CAREPULSE_WORKER_ID": worker_id, **(extra_env or {})})


# -- shared by the fault-injection tests (tests/faults) ----------------------------------------------------
class TopicTail:
    """Everything on some topics since the beginning (all partitions), read a little more at each call."""

    def __init__(self, bootstrap: str, *names: str) -> None:
        self.consumer = KafkaConsumer(*names, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False)
        self.records: list = []

    def read(self, idle_polls: int = 1) -> list:
        """The records read so far, after polling until `idle_polls` polls in a row returned nothing."""
        idle = 0
        while idle < idle_polls:
            batch = self.consumer.poll(timeout_ms=300)
            if not batch:
                idle += 1
            for records in batch.values():
                self.records.extend(records)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def own_broker(log_path: Path, partitions: int | None = None):
    """A started embedded Tansu broker of a test's own (free port, catalog topics created); `stop()` it."""
    from carepulse.broker import EmbeddedBroker, ensure_topics
    from carepulse.settings import Settings

    settings = Settings(broker_port=free_port(), **({"topic_partitions": partitions} if partitions else {}))
    broker = EmbeddedBroker(settings, log_path=log_path)
    broker.start()
    ensure_topics(broker.bootstrap, settings.topic_partitions)
    return broker


def end_offset_report(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition of `topic`: (end offset by ListOffsets, true end = last offset fetched + 1).

    The embedded broker's ListOffsets(latest) answers *base offset of the newest batch + 1* instead of the
    high watermark (streaming.md §3.5.2), so a partition whose last produced batch held n > 1 records
    reports an end n - 1 short. Faust trusts ListOffsets to know when changelog recovery is complete, so
    a short answer makes a restarted worker stop restoring its tables early. The two numbers differ exactly
    when that would happen."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        listed = consumer.end_offsets(partitions)
        last: dict[int, int] = {tp.partition: 0 for tp in partitions}
        idle = 0
        while idle < 3:
            batch = consumer.poll(timeout_ms=300, max_records=10_000)
            idle = 0 if batch else idle + 1
            for tp, records in batch.items():
                last[tp.partition] = max(last[tp.partition], records[-1].offset + 1)
        return {tp.partition: (listed[tp], last[tp.partition]) for tp in partitions}
    finally:
        consumer.close()


def distinct_by_event_id(parsed: list) -> dict:
    """Parsed events by event id: at-least-once delivery may repeat an id, which consumers deduplicate."""
    return {str(event.event_id): event for event in parsed}
