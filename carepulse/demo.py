"""``carepulse demo``: the embedded broker, a worker, the gateway with a simulated care home (emulated
Bluetooth devices on a virtual link, and the carers' tablet entries through the gateway's intake API),
and a live view of escalations and dead letters.

One process tree: the broker, the worker and the gateway are child processes that die with the demo;
Ctrl-C stops everything in order (gateway, which keeps unsent readings in its buffer, worker, broker).
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

from kafka import KafkaConsumer, KafkaProducer

from carepulse import events, topics
from carepulse.broker import BrokerError, EmbeddedBroker, ensure_topics, wait_until_ready
from carepulse.processes import spawn, stop
from carepulse.settings import Settings, child_environment
from carepulse.simulation import CareHome



def say(message: str) -> None:
    print(message, flush=True)


def run_demo(settings: Settings, duration_s: float | None = None) -> int:
    started = time.monotonic()
    run_dir = settings.data_dir / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)  # the embedded broker starts empty, so does the demo's gateway
    run_dir.mkdir(parents=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    broker = EmbeddedBroker(settings, log_path=run_dir / "broker.log") if settings.uses_embedded_broker else None
    try:
        if broker is not None:
            broker.start()
        else:
            wait_until_ready(settings.bootstrap)
    except BrokerError as exc:
        say(f"carepulse: {exc}")
        return 2
    ensure_topics(settings.bootstrap, settings.topic_partitions)
    worker = spawn([sys.executable, "-m", "carepulse", "worker"], log_path=run_dir / "worker.log")
    gateway = spawn(
        [sys.executable, "-m", "carepulse", "gateway", "--simulate"],
        log_path=run_dir / "gateway.log",
        env=child_environment(data_dir=str(run_dir), ble_transport="virtual"),
    )
    home = CareHome(gateway_id=settings.gateway_id)

    say("carepulse demo is running")
    say(f"  broker    {settings.bootstrap} ({'embedded Tansu, in memory' if broker else 'external'})")
    say(f"  care home {home.location_id}: {len(home.residents)} residents with emulated Bluetooth oximeters, "
        "BP cuffs and thermometers; carers' entries through the tablet intake")
    say(f"            {home.residents[0].resident_id} is deteriorating and should turn red within a minute")
    say(f"  gateway   tablet intake API http://{settings.gateway_host}:{settings.gateway_port}/docs")
    say("  pipeline  devices -> gateway -> readings -> worker (NEWS2 sets, escalations) -> news2-scores, escalations;")
    say("            rejected input -> dead-letters")
    say("  watch     .venv/bin/carepulse tail escalations | news2-scores | observation-sets | dead-letters")
    say(f"  logs      {run_dir}/broker.log, worker.log, gateway.log")
    say("Ctrl-C to stop.\n")

    watcher = threading.Thread(target=_watch, args=(settings, started, stopping), daemon=True)
    watcher.start()
    _publish_rejected_example(settings, home)
    try:
        while not stopping.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            for name, process in (("worker", worker), ("gateway", gateway)):
                if process.poll() is not None:
                    say(f"carepulse: the {name} exited with status {process.returncode}; see {run_dir}/{name}.log")
                    return 1
            stopping.wait(0.5)
    finally:
        say("\nstopping: gateway, worker, broker ...")
        stopping.set()
        stop(gateway, signal.SIGTERM, timeout_s=15)
        stop(worker, signal.SIGTERM, timeout_s=15)
        if broker is not None:
            broker.stop()
        say("stopped")
    return 0


def _publish_rejected_example(settings: Settings, home: CareHome) -> None:
    """One physiologically impossible reading (SpO2 104 %), to show that it is rejected, not scored."""
    now = datetime.now(timezone.utc)
    resident = home.residents[-1].resident_id
    impossible = events.ManualObservation(
        event_id=uuid.uuid4(), occurred_at=now, received_at=now,
        source=events.Source(gateway_id=settings.gateway_id, device_id="demo-bad-entry"),
        location_id=home.location_id, resident_id=resident, recorded_by="demo", spo2=104,
    )
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(topics.READINGS.name, key=resident.encode(), value=events.to_json(impossible))
    producer.flush()
    producer.close()


def _watch(settings: Settings, started: float, stopping: threading.Event) -> None:
    consumer = KafkaConsumer(
        topics.ESCALATIONS.name,
        topics.DEAD_LETTERS.name,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    seen: set[str] = set()
    first_high = True
    try:
        while not stopping.is_set():
            for message in consumer:
                elapsed = time.monotonic() - started
                event = events.any_event_adapter.validate_json(message.value)
                if str(event.event_id) in seen:
                    continue
                seen.add(str(event.event_id))
                if isinstance(event, events.Escalation):
                    colour = "RED" if event.risk == "high" else "AMBER"
                    total = f"NEWS2 {event.total}" if event.total is not None else "set still incomplete"
                    say(f"[{elapsed:6.1f} s] {colour} escalation {event.status} ({event.risk}, {total}) for "
                        f"{event.resident_id} at {event.location_id}: {event.response}")
                    if event.risk == "high" and first_high:
                        first_high = False
                        say(f"           first red escalation {elapsed:.1f} s after the demo started")
                elif isinstance(event, events.EscalationOverdue):
                    say(f"[{elapsed:6.1f} s] OVERDUE: the {event.risk} escalation for {event.resident_id} was not "
                        f"acknowledged by {event.deadline_at:%H:%M:%S}")
                elif isinstance(event, events.DeadLetter):
                    say(f"[{elapsed:6.1f} s] dead letter from {event.stage}: {event.reason}")
    finally:
        consumer.close()
