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
