"""Benchmark the whole pipeline: throughput, red-alert latency, recovery and memory (issue 9).

Every figure is measured on one embedded broker in one run, next to the raw client limit on the same
broker, because the machines are shared and noisy (streaming.md §3.5): a throughput is reported with the
rate a plain aiokafka consumer decodes the same JSON at, a latency with a plain aiokafka relay over the
same number of broker hops.

    .venv/bin/python bench/pipeline.py                      # everything, with the issue's sizes
    .venv/bin/python bench/pipeline.py --soak-s 60 --recovery-residents 20000   # a quicker look

Phases:
1. raw: a plain aiokafka consumer reads the load (every input topic) and validates each message with the
   event contracts, as the worker must;
2. pipeline: one worker (NEWS2 assembly, escalations, every indicator) consumes the same load; its
   sustained rate is the slope of its own ``carepulse_worker_events_in_total`` between 10 % and 90 %;
3. soak: the load produced at 80 % of the measured pipeline rate for ``--soak-s``; the worker's consumer
   lag is sampled and its trend reported;
4. latency: red manual observations posted to a real gateway's intake at ``--latency-rate`` per second over
   a background load; gateway → escalation on the topic, → the feed's live stream; and a plain relay
   (produce → consume + produce → consume) as the baseline;
5. recovery: a worker holding state for ``--recovery-residents`` residents is SIGKILLed; the time until a
   replacement has restored the table and escalates a new red set, and whether it still recognises
   the inputs it had seen (restored deduplication state);
6. memory: the worker's resident set size against the number of residents, and the changelog bytes per
   resident.

Results: a printed table and ``bench/results.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from carepulse import events, topics  # noqa: E402
from carepulse.broker import EmbeddedBroker, ensure_topics  # noqa: E402
from carepulse.processes import spawn, stop  # noqa: E402
from carepulse.settings import Settings  # noqa: E402

INPUT_TOPICS = (topics.READINGS.name, topics.OBSERVATION_SETS.name, topics.RESIDENTS.name, topics.CARE_EVENTS.name)
SOURCE = events.Source(gateway_id="gw-bench")
PHASES = ("throughput", "soak", "latency", "recovery", "news2")
RED = dict(respiration_rate=26, spo2=90, systolic_bp=95, pulse=125, consciousness="C", temperature=39.2,
           on_oxygen=False)


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- load ---------------------------------------------------------------------------------------------------

def resident_ids(count: int, prefix: str = "res-b") -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(count)]


def load(residents: int, locations: int, per_resident: int, start: datetime, seed: int = 9) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) messages in event-time order: each resident admitted, then `per_resident`
    inputs spread over a day — oximeter readings (a wearable), NEWS2 sets from the tablet, drinks from a
    smart cup, call bells raised and answered — the mix a care home sends."""
    rng = random.Random(seed)
    out: list[tuple[datetime, str, bytes, bytes]] = []
    ids = resident_ids(residents)
    for i, resident in enumerate(ids):
        location = f"loc-b-{i % locations:04d}"
        admitted = start - timedelta(days=1)
        record = events.ResidentRecord(event_id=uuid.uuid4(), occurred_at=admitted, received_at=admitted, source=SOURCE,
                                       location_id=location, resident_id=resident, status="admitted",
                                       sex=rng.choice(["female", "male"]))
        out.append((admitted, topics.RESIDENTS.name, resident.encode(), events.to_json(record)))
        for n in range(per_resident):
            at = start + timedelta(seconds=rng.uniform(0, 86_400))
            kind = rng.random()
            common = dict(event_id=uuid.uuid4(), occurred_at=at, received_at=at, source=SOURCE, location_id=location)
            if kind < 0.4:
                event = events.DeviceReading(**common, resident_id=resident, characteristic="plx_spot_check_measurement",
                                             values={"spo2_pct": rng.randint(94, 99), "pulse_rate_bpm": rng.randint(60, 90)})
                out.append((at, topics.READINGS.name, resident.encode(), events.to_json(event)))
            elif kind < 0.6:
                event = events.ObservationSet(**common, resident_id=resident, respiration_rate=rng.randint(12, 20),
                                              spo2=rng.randint(95, 99), spo2_scale=1, on_oxygen=False,
                                              systolic_bp=rng.randint(111, 150), pulse=rng.randint(55, 90),
                                              consciousness="A", temperature=round(rng.uniform(36.2, 37.8), 1))
                out.append((at, topics.OBSERVATION_SETS.name, resident.encode(), events.to_json(event)))
            elif kind < 0.85:
                event = events.FluidIntake(**common, resident_id=resident, offered_ml=200, consumed_ml=rng.randint(0, 200),
                                           method="smart_cup", recorded_by="cup")
                out.append((at, topics.CARE_EVENTS.name, location.encode(), events.to_json(event)))
            else:
                call = f"c-{resident}-{n}"
                raised = events.CallBell(**common, resident_id=resident, call_id=call, phase="raised")
                answered_at = at + timedelta(seconds=rng.randint(30, 600))
                answered = events.CallBell(**{**common, "event_id": uuid.uuid4(), "occurred_at": answered_at},
                                           resident_id=resident, call_id=call, phase="answered")
                out.append((at, topics.CARE_EVENTS.name, location.encode(), events.to_json(raised)))
                out.append((answered_at, topics.CARE_EVENTS.name, location.encode(), events.to_json(answered)))
    out.sort(key=lambda m: m[0])
    return [(topic, key, value) for _, topic, key, value in out]


async def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]], rate_per_s: float | None = None,
                  stop_at: float | None = None, stopping: threading.Event | None = None) -> int:
    """Send `messages` (cycling through them when rate-limited with `stop_at`), at most `rate_per_s`, until
    `stop_at` or `stopping` is set."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        while True:
            for topic, key, value in messages:
                if (stop_at is not None and time.monotonic() >= stop_at) or (stopping and stopping.is_set()):
                    return sent
                if rate_per_s:
                    ahead = sent / rate_per_s - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await producer.send(topic, value, key=key)
                sent += 1
            if stop_at is None:
                return sent
    finally:
        await producer.stop()


# --- the processes under test ----------------------------------------------------------------------------

class Stack:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.settings = Settings(broker_port=free_port(), data_dir=work, topic_partitions=4)
        self.broker = EmbeddedBroker(self.settings, log_path=work / "broker.log")
        self.processes: list[subprocess.Popen] = []

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def start(self) -> None:
        self.broker.start()
        ensure_topics(self.bootstrap, self.settings.topic_partitions)

    def env(self, **values: str) -> dict[str, str]:
        return {**os.environ, "CAREPULSE_KAFKA_BOOTSTRAP": self.bootstrap, "CAREPULSE_LOG_LEVEL": "WARNING",
                "CAREPULSE_WORKER_METRICS_PORT": "0", "CAREPULSE_GATEWAY_METRICS_PORT": "0",
                "CAREPULSE_FEED_METRICS_PORT": "0", **{f"CAREPULSE_{k.upper()}": v for k, v in values.items()}}

    def spawn(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        process = spawn([sys.executable, "-m", "carepulse", *command], log_path=self.work / f"{name}.log",
                        env=self.env(**env))
        self.processes.append(process)
        return process

    def worker(self, group: str, metrics_port: int, **env: str) -> subprocess.Popen:
        return self.spawn(f"worker-{group}-{len(self.processes)}", ["worker"], worker_id=group,
                          worker_metrics_port=str(metrics_port), **env)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                stop(process, signal.SIGTERM, timeout_s=15)
        if self.broker.process is not None:
            self.broker.stop()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def consumed(port: int) -> float:
    try:
        samples = scrape(port)
    except httpx.HTTPError:
        return 0.0
    return sum(v for (name, labels), v in samples.items()
               if name == "carepulse_worker_events_in_total" and dict(labels).get("topic") in INPUT_TOPICS)


def lag(port: int) -> float:
    samples = scrape(port)
    return sum(v for (name, labels), v in samples.items()
               if name == "carepulse_worker_consumer_lag_messages" and dict(labels).get("topic") in INPUT_TOPICS)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait(condition, timeout_s: float, what: str, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --- phases ---------------------------------------------------------------------------------------------

async def raw_limit(bootstrap: str, expected: int) -> dict:
    """Messages per second a plain aiokafka consumer reads and validates with the event contracts."""
    consumer = AIOKafkaConsumer(*INPUT_TOPICS, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=500)
    await consumer.start()
    count, started = 0, None
    try:
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                started = started or time.monotonic()
                for record in records:
                    events.any_event_adapter.validate_json(record.value)
                    count += 1
        elapsed = time.monotonic() - started
    finally:
        await consumer.stop()
    return {"messages": count, "seconds": round(elapsed, 2), "per_s": round(count / elapsed)}


def pipeline_throughput(stack: Stack, expected: int, profile: bool, group: str = "bench-throughput",
                        **env: str) -> dict:
    port = free_port()
    worker = stack.worker(group, port, **env)
    samples: list[tuple[float, float]] = []
    wait(lambda: consumed(port) > 0, 180, "the worker to start consuming")
    spy = None
    if profile and (py_spy := _py_spy()):
        spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.pid), "--duration", "30", "--format", "raw",
                                "--output", str(stack.work / "profile.txt"), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        value = consumed(port)
        samples.append((time.monotonic(), value))
        if value >= expected:
            break
        time.sleep(1)
    if spy:
        spy.wait(timeout=60)
    low = next(s for s in samples if s[1] >= 0.1 * expected)
    high = next(s for s in samples if s[1] >= 0.9 * expected)
    rate = (high[1] - low[1]) / (high[0] - low[0])
    return {"worker": worker, "port": port, "messages": int(samples[-1][1]), "per_s": round(rate),
            "rss_bytes": rss_bytes(worker.pid), "hot_spots": _hot_spots(stack.work / "profile.txt") if spy else []}


def _py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


def _hot_spots(path: Path, top: int = 8) -> list[str]:
    """Own-time leaders from py-spy's raw (collapsed stack) output: the innermost frame of each sample."""
    if not path.exists():
        return []
    totals: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.split(";")[-1]
        totals[frame] = totals.get(frame, 0) + int(count)
    whole = sum(totals.values()) or 1
    return [f"{100 * n / whole:.1f}% {frame}" for frame, n in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]


def soak(stack: Stack, port: int, messages, rate: float, seconds: float) -> dict:
    stop_at = time.monotonic() + seconds
    thread = threading.Thread(target=lambda: asyncio.run(produce(stack.bootstrap, messages, rate, stop_at)), daemon=True)
    thread.start()
    points = []
    while time.monotonic() < stop_at:
        time.sleep(5)
        try:
            points.append((time.monotonic(), lag(port)))
        except httpx.HTTPError:
            pass
    thread.join()
    t0 = points[0][0]
    xs, ys = [p[0] - t0 for p in points], [p[1] for p in points]
    slope = statistics.linear_regression(xs, ys).slope if len(points) > 2 else 0.0
    return {"rate_per_s": round(rate), "seconds": seconds, "lag_first": ys[0], "lag_last": ys[-1], "lag_max": max(ys),
            "lag_slope_per_min": round(slope * 60, 1)}


async def relay_baseline(bootstrap: str, samples: int) -> list[float]:
    """Latency of produce → relay (consume + produce) → consume: the hops of reading → worker → escalation."""
    a, b = f"bench-relay-a-{uuid.uuid4().hex[:6]}", f"bench-relay-b-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    relay_in = AIOKafkaConsumer(a, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    sink = AIOKafkaConsumer(b, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    for client in (producer, relay_in, sink):
        await client.start()

    async def relay() -> None:
        async for record in relay_in:
            await producer.send(b, record.value)

    task = asyncio.create_task(relay())
    latencies = []
    try:
        await asyncio.sleep(2)
        for _ in range(samples):
            sent = time.monotonic()
            await producer.send_and_wait(a, json.dumps({"t": sent}).encode())
            await sink.getone()
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        for client in (relay_in, sink, producer):
            await client.stop()
    return latencies


def red_alert_latency(stack: Stack, samples: int, rate: float, background) -> dict:
    """Gateway intake → escalation on the topic, and → the feed's live stream, under background load."""
    from feed import auth, db
    from gateway.registry import Registry

    gateway_dir = stack.work / "gw"
    registry = Registry(gateway_dir / "gateway" / "registry.sqlite")
    residents = [f"res-red-{i:05d}" for i in range(samples)]
    warm_up = "res-red-warm-up"  # measured only once the worker has restored its tables and escalates
    for resident in [warm_up, *residents]:
        registry.add_resident(resident, "loc-red")
    token = registry.provision_tablet("tablet-bench", "loc-red")
    registry.close()
    intake_port, feed_port = free_port(), free_port()
    stack.spawn("gateway", ["gateway", "--no-simulate"], data_dir=str(gateway_dir), gateway_port=str(intake_port),
                ble_transport="virtual")
    feed_settings = stack.settings.model_copy(update={"data_dir": stack.work / "feed"})
    engine = db.make_engine(db.database_url(feed_settings))
    db.migrate(engine)
    auth.register_location(engine, "loc-red", provider_id="prov-bench", name="bench", now=events.utc_now())
    _, feed_key = auth.create_key(engine, role="provider:prov-bench", name="bench", now=events.utc_now())
    engine.dispose()
    stack.spawn("feed", ["feed", "serve"], data_dir=str(stack.work / "feed"), feed_port=str(feed_port),
                feed_consumer_group=f"feed-bench-{uuid.uuid4().hex[:6]}")
    wait(lambda: _ok(f"http://127.0.0.1:{intake_port}/v1/health"), 60, "the gateway intake")
    wait(lambda: _ok(f"http://127.0.0.1:{feed_port}/health"), 60, "the feed")

    on_topic: dict[str, float] = {}
    on_stream: dict[str, float] = {}
    stop_reading = threading.Event()

    def read_escalations() -> None:
        async def run() -> None:
            consumer = AIOKafkaConsumer(topics.ESCALATIONS.name, bootstrap_servers=stack.bootstrap,
                                        auto_offset_reset="latest", fetch_max_wait_ms=100)
            await consumer.start()
            try:
                while not stop_reading.is_set():
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for record in records:
                            data = json.loads(record.value)
                            if data.get("risk") == "high" and data.get("status") == "raised":
                                on_topic.setdefault(data["resident_id"], time.monotonic())
            finally:
                await consumer.stop()
        asyncio.run(run())

    def read_stream() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.Client(timeout=httpx.Timeout(5, read=None)) as client:
            with client.stream("GET", f"http://127.0.0.1:{feed_port}/v1/stream",
                               headers={"Authorization": f"Bearer {feed_key}"}) as response:
                name = None
                for line in response.iter_lines():
                    if stop_reading.is_set():
                        return
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and name == "red_alert":
                        data = json.loads(line.split(":", 1)[1])
                        if data.get("resident_id"):
                            on_stream.setdefault(data["resident_id"], time.monotonic())

    threads = [threading.Thread(target=read_escalations, daemon=True), threading.Thread(target=read_stream, daemon=True)]
    for thread in threads:
        thread.start()
    background_stop = time.monotonic() + samples / rate + 60
    loader = threading.Thread(target=lambda: asyncio.run(produce(stack.bootstrap, background[0], background[1],
                                                                 background_stop, stop_reading)), daemon=True)
    loader.start()
    posted: dict[str, float] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{intake_port}", headers={"Authorization": f"Bearer {token}"}) as client:
        body = {"occurred_at": events.utc_now().isoformat(), "recorded_by": "nurse-bench", **RED}
        client.post(f"/v1/residents/{warm_up}/observations", json=body).raise_for_status()
        wait(lambda: warm_up in on_topic and warm_up in on_stream, 300, "the warm-up red alert")
        for resident in residents:
            body = {"occurred_at": events.utc_now().isoformat(), "recorded_by": "nurse-bench", **RED}
            posted[resident] = time.monotonic()
            response = client.post(f"/v1/residents/{resident}/observations", json=body)
            response.raise_for_status()
            time.sleep(1 / rate)
    wait(lambda: all(r in on_topic and r in on_stream for r in residents), 120, "every red alert", 1)
    stop_reading.set()
    loader.join(timeout=10)
    to_topic = [on_topic[r] - posted[r] for r in residents]
    to_stream = [on_stream[r] - posted[r] for r in residents]
    return {"to_escalations_topic": _percentiles(to_topic), "to_feed_stream": _percentiles(to_stream)}


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)

    return {"n": len(values), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}


def recovery(stack: Stack, residents: int, memory_points: list[int]) -> dict:
    """A worker holding state for `residents` residents is SIGKILLed; a replacement restores and escalates."""
    port = free_port()
    group = f"bench-recovery-{uuid.uuid4().hex[:6]}"
    worker = stack.worker(group, port)
    ids = resident_ids(residents, prefix="res-r")
    now = events.utc_now()
    messages = []
    for resident in ids:
        event = events.ObservationSet(event_id=uuid.uuid4(), occurred_at=now, received_at=now, source=SOURCE,
                                      location_id="loc-r", resident_id=resident, respiration_rate=16, spo2=97,
                                      spo2_scale=1, on_oxygen=False, systolic_bp=125, pulse=72, consciousness="A",
                                      temperature=36.8)
        messages.append((topics.OBSERVATION_SETS.name, resident.encode(), events.to_json(event)))
    memory = []
    wait(lambda: _ok(f"http://127.0.0.1:{port}/metrics"), 120, "worker metrics")
    done = 0
    for point in sorted({*memory_points, residents}):
        if point > residents:
            continue
        asyncio.run(produce(stack.bootstrap, messages[done:point]))
        wait(lambda p=point: consumed(port) >= p and lag(port) == 0, 3600, f"{point} residents' state", 2)
        time.sleep(3)
        memory.append({"residents": point, "rss_bytes": rss_bytes(worker.pid)})
        done = point
    changelog = asyncio.run(_changelog_bytes(stack.bootstrap, f"{group}-resident-state-changelog"))
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    replacement_port = free_port()
    replacement = stack.worker(group, replacement_port)
    probe = f"res-probe-{uuid.uuid4().hex[:6]}"
    red = events.ObservationSet(event_id=uuid.uuid4(), occurred_at=events.utc_now(), received_at=events.utc_now(),
                                source=SOURCE, location_id="loc-r", resident_id=probe, spo2_scale=1, **RED)
    found: dict[str, float] = {}

    async def watch() -> None:
        consumer = AIOKafkaConsumer(topics.ESCALATIONS.name, bootstrap_servers=stack.bootstrap,
                                    auto_offset_reset="latest", fetch_max_wait_ms=100)
        await consumer.start()
        await asyncio.sleep(1)
        await produce(stack.bootstrap, [(topics.OBSERVATION_SETS.name, probe.encode(), events.to_json(red))])
        try:
            while probe not in found:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if json.loads(record.value).get("resident_id") == probe:
                            found[probe] = time.monotonic()
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(watch(), 600))
    recovered_s = found[probe] - killed_at
    # Restored deduplication state: 1,000 inputs it had already processed produce no new scores.
    wait(lambda: lag(replacement_port) == 0, 600, "the replacement to catch up", 2)
    before = consumed(replacement_port)
    scores_before = asyncio.run(_count(stack.bootstrap, topics.NEWS2_SCORES.name))
    asyncio.run(produce(stack.bootstrap, messages[:1000]))
    wait(lambda: consumed(replacement_port) - before >= 1000 and lag(replacement_port) == 0, 300, "the replayed inputs")
    time.sleep(3)
    new_scores = asyncio.run(_count(stack.bootstrap, topics.NEWS2_SCORES.name)) - scores_before
    return {"residents": residents, "recovery_s": round(recovered_s, 1), "replayed_inputs": 1000,
            "scores_from_replayed_inputs": new_scores, "changelog": changelog, "memory": memory,
            "rss_after_recovery_bytes": rss_bytes(replacement.pid)}


async def _changelog_bytes(bootstrap: str, topic: str) -> dict:
    latest: dict[bytes, int] = {}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=3000, max_records=5000):
            for records in batch.values():
                for record in records:
                    latest[record.key] = len(record.value or b"")
    finally:
        await consumer.stop()
    keys = len(latest) or 1
    return {"keys": len(latest), "bytes_per_key": round(sum(latest.values()) / keys)}


async def _count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


def news2_rate() -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_news2.py"), "--vectorized-sets", "2000000",
                             "--scalar-sets", "50000"], capture_output=True, text=True, check=True)
    return {"output": result.stdout.strip().splitlines()}


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=5000)
    parser.add_argument("--locations", type=int, default=100)
    parser.add_argument("--per-resident", type=int, default=20, help="inputs per resident in the load")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--latency-rate", type=float, default=2.0, help="red observations per second")
    parser.add_argument("--recovery-residents", type=int, default=100_000)
    parser.add_argument("--memory-points", default="10000", help="residents at which to sample RSS, comma-separated")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--compare-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the pipeline with normal producer batching (Apache Kafka's setting)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated subset of the phases (a partial run updates --out)")
    args = parser.parse_args()

    phases = set(args.phases.split(","))
    unknown = phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    # A partial run adds to the last results (same file) rather than replacing them.
    results: dict = json.loads(args.out.read_text()) if phases != set(PHASES) and args.out.exists() else {}
    results |= {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(),
                "args": vars(args) | {"out": str(args.out)}}
    stacks: list[Stack] = []

    def fresh_stack(name: str) -> Stack:
        """Each phase on its own embedded broker: no phase pays for another's backlog or table recovery."""
        stack = Stack(Path(tempfile.mkdtemp(prefix=f"carepulse-bench-{name}-")))
        stacks.append(stack)
        stack.start()
        return stack

    try:
        messages = load(args.residents, args.locations, args.per_resident, events.utc_now() - timedelta(days=1))
        if phases & {"throughput", "soak"}:
            stack = fresh_stack("throughput")
            asyncio.run(produce(stack.bootstrap, messages))
            print(f"load: {len(messages):,} messages", flush=True)
            results["raw"] = asyncio.run(raw_limit(stack.bootstrap, len(messages)))
            print(f"raw: {results['raw']}", flush=True)
            pipeline = pipeline_throughput(stack, len(messages), profile=not args.no_profile)
            worker, port = pipeline.pop("worker"), pipeline.pop("port")
            results["pipeline"] = pipeline
            results["ratio"] = round(pipeline["per_s"] / results["raw"]["per_s"], 3)
            print(f"pipeline: {pipeline} ratio {results['ratio']}", flush=True)
            if args.compare_batching:
                # The same load with normal producer batching, as on Apache Kafka (CAREPULSE_ONE_RECORD_PER_BATCH
                # works around the embedded broker's end-offset under-reporting, streaming.md §3.5.2).
                batched = pipeline_throughput(stack, len(messages), profile=False, group="bench-batched",
                                              one_record_per_batch="false")
                stop(batched.pop("worker"), signal.SIGTERM, timeout_s=30)
                batched.pop("port")
                results["pipeline_batched"] = batched
                print(f"pipeline, normal batching: {batched}", flush=True)
            if "soak" in phases and args.soak_s > 0:
                results["soak"] = soak(stack, port, messages, 0.8 * pipeline["per_s"], args.soak_s)
                print(f"soak: {results['soak']}", flush=True)
            stop(worker, signal.SIGTERM, timeout_s=30)
            stack.close()
        if "latency" in phases:
            stack = fresh_stack("latency")
            relay = asyncio.run(relay_baseline(stack.bootstrap, args.latency_samples))
            results["latency"] = {"relay_baseline": _percentiles(relay)}
            stack.worker(f"bench-latency-{uuid.uuid4().hex[:6]}", free_port())
            background_rate = 0.2 * results.get("pipeline", {}).get("per_s", 1000)
            results["latency"] |= red_alert_latency(stack, args.latency_samples, args.latency_rate,
                                                    (messages, background_rate))
            results["latency"]["background_per_s"] = round(background_rate)
            results["latency"]["ratio_p99_topic_to_relay"] = round(
                results["latency"]["to_escalations_topic"]["p99_ms"] / results["latency"]["relay_baseline"]["p99_ms"], 2)
            print(f"latency: {results['latency']}", flush=True)
            stack.close()
        if "recovery" in phases:
            points = [int(p) for p in args.memory_points.split(",") if p]
            results["recovery"] = recovery(fresh_stack("recovery"), args.recovery_residents, points)
            print(f"recovery: {results['recovery']}", flush=True)
        if "news2" in phases:
            results["news2"] = news2_rate()
    finally:
        for stack in stacks:
            stack.close()
        results["finished"] = datetime.now(timezone.utc).isoformat()
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results in {args.out}; logs in {', '.join(str(stack.work) for stack in stacks)}")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    rows = []
    if "pipeline" in results:
        rows += [("raw limit (aiokafka consumer + event validation)", f"{results['raw']['per_s']:,} msg/s", ""),
                 ("pipeline, one worker", f"{results['pipeline']['per_s']:,} msg/s", "≥ 0.25 × raw"),
                 ("ratio", f"{results['ratio']:.3f}", "≥ 0.25")]
        if "pipeline_batched" in results:
            rows.append(("pipeline, one worker, normal batching", f"{results['pipeline_batched']['per_s']:,} msg/s", ""))
    if "soak" in results:
        soak_ = results["soak"]
        rows.append((f"lag at 80 % ({soak_['rate_per_s']:,}/s) for {soak_['seconds']:.0f} s",
                     f"slope {soak_['lag_slope_per_min']}/min, max {soak_['lag_max']:.0f}", "flat"))
    if "latency" in results:
        lat = results["latency"]
        for name in ("relay_baseline", "to_escalations_topic", "to_feed_stream"):
            if name in lat:
                rows.append((f"latency {name.replace('_', ' ')}", f"p50 {lat[name]['p50_ms']} / p95 {lat[name]['p95_ms']} "
                             f"/ p99 {lat[name]['p99_ms']} ms", "p99 ≤ 1.5 × relay" if name == "to_escalations_topic" else ""))
    if "recovery" in results:
        rec = results["recovery"]
        rows.append((f"recovery, {rec['residents']:,} residents", f"{rec['recovery_s']} s", "≤ 10 s"))
        rows.append(("state per resident (changelog)", f"{rec['changelog']['bytes_per_key']} B", "≤ 1 KiB"))
        for point in rec["memory"]:
            rows.append((f"worker RSS at {point['residents']:,} residents", f"{point['rss_bytes'] / 2**20:.0f} MiB", ""))
    width = max(len(r[0]) for r in rows) if rows else 0
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<40} {target}")


if __name__ == "__main__":
    raise SystemExit(main())
