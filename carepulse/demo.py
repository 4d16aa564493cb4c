"""``carepulse demo``: the embedded broker, a worker, a simulated care home publishing through the
gateway's store-and-forward producer, and a live view of escalations and dead letters.

One process tree: the broker and the worker are child processes that die with the demo; Ctrl-C
stops everything in order (simulator, gateway drain, worker, broker).
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from datetime import datetime, timezone

from kafka import KafkaConsumer

from carepulse import events, topics
from carepulse.broker import BrokerError, EmbeddedBroker, ensure_topics, wait_until_ready
from carepulse.processes import spawn, stop
from carepulse.settings import Settings
from carepulse.simulation import CareHome
from gateway.buffer import DurableBuffer
from gateway.publisher import Publisher

OBSERVATION_INTERVAL_S = 3.0


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
    publisher = Publisher(settings.bootstrap, DurableBuffer(run_dir / "gateway-buffer.sqlite")).start()
    home = CareHome(gateway_id=settings.gateway_id)

    say("carepulse demo is running")
    say(f"  broker    {settings.bootstrap} ({'embedded Tansu, in memory' if broker else 'external'})")
    say(f"  care home {home.location_id}: {len(home.residents)} residents; {home.residents[0].resident_id} "
        "is deteriorating and should turn red within a minute")
    say("  pipeline  gateway -> observation-sets -> worker -> news2-scores, escalations; rejected input -> dead-letters")
    say("  watch     carepulse tail escalations | news2-scores | dead-letters   (in another terminal)")
    say(f"  logs      {run_dir}/broker.log, worker.log")
    say("Ctrl-C to stop.\n")

    watcher = threading.Thread(target=_watch, args=(settings, started, stopping), daemon=True)
    watcher.start()
    _publish_rejected_example(publisher, home)
    try:
        while not stopping.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            if worker.poll() is not None:
                say(f"carepulse: the worker exited with status {worker.returncode}; see {run_dir}/worker.log")
                return 1
            for observation in home.observe(datetime.now(timezone.utc)):
                publisher.publish(topics.OBSERVATION_SETS, observation.resident_id, observation)
            stopping.wait(OBSERVATION_INTERVAL_S)
    finally:
        say("\nstopping: gateway, worker, broker ...")
        stopping.set()
        publisher.stop()
        stop(worker, signal.SIGTERM, timeout_s=15)
        if broker is not None:
            broker.stop()
        say("stopped")
    return 0


def _publish_rejected_example(publisher: Publisher, home: CareHome) -> None:
    """One physiologically impossible reading (SpO2 104 %), to show that it is rejected, not scored."""
    now = datetime.now(timezone.utc)
    sample = home.observe(now)[-1].model_copy(update={"spo2": 104})
    publisher.publish(topics.OBSERVATION_SETS, sample.resident_id, sample)


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
                    say(f"[{elapsed:6.1f} s] {colour} escalation ({event.risk}, NEWS2 {event.total}) for "
                        f"{event.resident_id} at {event.location_id}: {event.response}")
                    if event.risk == "high" and first_high:
                        first_high = False
                        say(f"           first red escalation {elapsed:.1f} s after the demo started")
                elif isinstance(event, events.DeadLetter):
                    say(f"[{elapsed:6.1f} s] dead letter from {event.stage}: {event.reason}")
    finally:
        consumer.close()
