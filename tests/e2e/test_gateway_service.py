"""`carepulse gateway` as a real process, with the path to a real broker cut and restored by a TCP proxy.

The broker here is a dedicated Tansu process that *advertises the proxy's address*: Kafka clients connect
to the address the broker advertises in Metadata, so a broker advertising its own address would let the
gateway bypass the proxy after its first request, and cutting the proxy would not be an outage. The
broker is never restarted (its storage is memory); only the proxy goes down.

Accounting — what the gateway produced. Before the gateway first opens its buffer, the test adds a
``ledger`` table and an ``AFTER INSERT`` trigger on the buffer's ``outbox`` that copies every row (seq,
topic, key, value) into it. The trigger runs inside the INSERT's own transaction, so the ledger holds
exactly the rows the buffer committed: nothing the gateway acknowledged (HTTP 202, a BLE indication) can be
missing from it, and nothing appears in it that the buffer did not commit, even when the gateway is
SIGKILLed. Rows leave ``outbox`` on broker acknowledgement but never leave ``ledger``, and the ledger keeps
the buffer's ``seq``, the order the gateway enqueued in. Each delivered message is matched to its ledger row
by its exact bytes (the publisher sends the stored value unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer

from carepulse.broker import ensure_topics, tansu_binary, wait_until_ready
from carepulse.processes import spawn, stop
from carepulse.settings import Settings
from gateway.buffer import DurableBuffer
from tests.kafka_helpers import CarepulseProcess, free_port

pytestmark = pytest.mark.e2e

OUTAGE_S = 15.0
LOOPBACK = "127.0.0.1"


# -- the proxy ---------------------------------------------------------------------------------------
class TcpProxy:
    """A loopback TCP proxy on its own asyncio loop (in a thread) that can go down and come back.

    `cut` stops listening (new connections are refused) and resets every open connection, as a dropped
    uplink or a rebooted router does; `restore` listens again on the same port.
    """

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.listen_port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        """Listen again; nothing to do if it is listening (so a test's clean-up may always call it)."""
        if self._server is None:
            self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.listen_port,
                                                  reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections |= {client_writer, broker_writer}
        await asyncio.gather(self._pipe(client_reader, broker_writer),
                             self._pipe(broker_reader, client_writer))
        self._connections -= {client_writer, broker_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


@dataclass
class ProxiedBroker:
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        return self.proxy.address


@pytest.fixture(scope="module")
def proxied_broker(tmp_path_factory: pytest.TempPathFactory):
    """A Tansu broker listening on one port and advertising the proxy's, reachable only through the proxy."""
    with running_proxied_broker(tmp_path_factory.mktemp("proxied-broker")) as broker:
        yield broker


@contextlib.contextmanager
def running_proxied_broker(log_dir: Path) -> Iterator[ProxiedBroker]:
    """The `proxied_broker` fixture's broker and proxy, for other test modules' fixtures."""
    broker_port, proxy_port = free_port(), free_port()
    proxy = TcpProxy(proxy_port, broker_port).start()
    process = spawn(
        [tansu_binary(), "broker",
         "--listener-url", f"tcp://{LOOPBACK}:{broker_port}",
         "--advertised-listener-url", f"tcp://{LOOPBACK}:{proxy_port}",
         "--storage-engine", "memory://tansu/"],
        log_path=log_dir / "broker.log",
        parent_death_signal=signal.SIGINT,
    )
    try:
        wait_until_ready(proxy.address)
        ensure_topics(proxy.address, Settings().topic_partitions)
        yield ProxiedBroker(proxy)
    finally:
        stop(process, signal.SIGINT, timeout_s=5)  # Tansu stops on SIGINT and ignores SIGTERM
        proxy.close()


# -- the gateway process and its ledger --------------------------------------------------------------
def install_ledger(data_dir: Path) -> Path:
    """Create the gateway's buffer with the ledger trigger (see the module docstring); returns its path."""
    path = data_dir / "gateway" / "buffer.sqlite"
    DurableBuffer(path).close()  # the buffer's own schema, exactly as the gateway will find it
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE ledger ("
            " seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL);"
            "CREATE TRIGGER ledger_outbox AFTER INSERT ON outbox BEGIN"
            " INSERT INTO ledger (seq, topic, key, value)"
            " VALUES (NEW.seq, NEW.topic, NEW.key, NEW.value); END;"
        )
    return path


@dataclass(frozen=True)
class Row:
    seq: int
    topic: str
    key: bytes | None
    value: bytes

    @property
    def event_id(self) -> str:
        return json.loads(self.value)["event_id"]


class Buffer:
    """Read-only views of the gateway's buffer file while the gateway runs (or after it died)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def ledger(self) -> list[Row]:
        return [Row(*row) for row in self._query("SELECT seq, topic, key, value FROM ledger ORDER BY seq")]

    def enqueued_max_seq(self) -> int:
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM ledger")[0][0]

    def pending_seqs(self) -> set[int]:
        return {row[0] for row in self._query("SELECT seq FROM outbox")}

    def acknowledged_count(self) -> int:
        return self._query("SELECT (SELECT COUNT(*) FROM ledger) - (SELECT COUNT(*) FROM outbox)")[0][0]


class GatewayProcess(CarepulseProcess):
    """`python -m carepulse gateway` as a real child process."""

    def __init__(self, bootstrap: str, data_dir: Path, gateway_id: str, *, simulate: bool) -> None:
        self.port = free_port()
        super().__init__(
            ["gateway", "--simulate" if simulate else "--no-simulate"], bootstrap, data_dir / f"gateway-{self.port}.log",
            {
                "CAREPULSE_DATA_DIR": str(data_dir),
                "CAREPULSE_GATEWAY_PORT": str(self.port),
                "CAREPULSE_GATEWAY_ID": gateway_id,
                "CAREPULSE_BLE_TRANSPORT": "virtual",
            },
        )

    def start(self) -> GatewayProcess:
        super().start()
        eventually(lambda: self.health() is not None, timeout_s=30, what="the gateway's intake to answer",
                   log=self.log)
        return self

    def health(self) -> dict | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the gateway exited with {self.process.returncode}:\n{self.log()}")
        try:
            response = httpx.get(f"http://{LOOPBACK}:{self.port}/v1/health", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

def eventually(condition: Callable[[], bool], *, timeout_s: float, what: str,
               log: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{log()[-4000:]}")
        time.sleep(0.2)


# -- reading back what arrived -----------------------------------------------------------------------
@dataclass(frozen=True)
class Delivered:
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_until_all(bootstrap: str, topic: str, wanted: set[bytes], timeout_s: float = 60.0,
                   settle_s: float = 1.0) -> list[Delivered]:
    """Every message on `topic` from the beginning, until all `wanted` values were seen (then `settle_s`
    more, to catch duplicates that would follow), in partition-offset order."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    delivered: list[Delivered] = []
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout_s
    satisfied_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    delivered.append(Delivered(record.partition, record.offset, record.key, record.value))
                    seen.add(record.value)
            if satisfied_at is None and wanted <= seen:
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= settle_s:
                break
    finally:
        consumer.close()
    return sorted(delivered, key=lambda d: (d.partition, d.offset))


def assert_all_delivered_in_order(bootstrap: str, ledger: list[Row], gateway_id: str) -> None:
    """Every ledger row arrived at least once, nothing else from this gateway did, and per key (the resident,
    for readings) the first arrivals are in the order the gateway enqueued them."""
    assert ledger, "the gateway enqueued nothing"
    seq_of = {row.value: row.seq for row in ledger}
    for topic in sorted({row.topic for row in ledger}):
        rows = [row for row in ledger if row.topic == topic]
        delivered = read_until_all(bootstrap, topic, {row.value for row in rows})
        ours = [d for d in delivered if json.loads(d.value)["source"]["gateway_id"] == gateway_id]

        delivered_ids = {json.loads(d.value)["event_id"] for d in ours}
        produced_ids = {row.event_id for row in rows}
        assert delivered_ids == produced_ids, (
            f"{topic}: {len(produced_ids - delivered_ids)} produced events missing, "
            f"{len(delivered_ids - produced_ids)} unknown events delivered"
        )
        assert {d.value for d in ours} == {row.value for row in rows}

        first_seqs_by_key: dict[bytes | None, list[int]] = {}
        counted: set[bytes] = set()
        for d in ours:  # partition-offset order; one key lives on one partition
            if d.value not in counted:
                counted.add(d.value)
                first_seqs_by_key.setdefault(d.key, []).append(seq_of[d.value])
        for key, seqs in first_seqs_by_key.items():
            assert seqs == sorted(seqs), f"{topic}: a key's events arrived out of enqueue order"
        assert {row.key for row in rows} == set(first_seqs_by_key)


def _gateway_id() -> str:
    return f"gw-e2e-{uuid.uuid4().hex[:8]}"


# -- the tests ---------------------------------------------------------------------------------------
def test_an_outage_loses_nothing_and_keeps_each_residents_order(proxied_broker, tmp_path):
    proxy = proxied_broker.proxy
    gateway_id = _gateway_id()
    buffer = Buffer(install_ledger(tmp_path))
    gateway = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=True).start()
    try:
        eventually(lambda: buffer.acknowledged_count() >= 20, timeout_s=30,
                   what="the simulated home's first readings to reach the broker", log=gateway.log)

        proxy.cut()
        cut_seq = buffer.enqueued_max_seq()
        time.sleep(OUTAGE_S)  # the outage itself: devices and the tablet keep sending meanwhile
        during = buffer.enqueued_max_seq()
        assert during - cut_seq >= 20, "the simulator should keep enqueueing during the outage"
        # Nothing enqueued after the cut can have been acknowledged, so the backlog holds all of it.
        assert set(range(cut_seq + 1, during + 1)) <= buffer.pending_seqs()
        assert gateway.health()["buffer_depth"] >= during - cut_seq

        proxy.restore()
        restore_seq = buffer.enqueued_max_seq()
        eventually(lambda: min(buffer.pending_seqs(), default=restore_seq + 1) > restore_seq, timeout_s=60,
                   what="the backlog to drain after the proxy came back", log=gateway.log)
        assert gateway.stop() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()

    assert buffer.pending_seqs() == set(), "a clean stop with the broker reachable drains the buffer"
    assert_all_delivered_in_order(proxied_broker.bootstrap, buffer.ledger(), gateway_id)


def test_readings_buffered_before_a_sigkill_are_delivered_by_the_next_start(proxied_broker, tmp_path):
    proxy = proxied_broker.proxy
    gateway_id = _gateway_id()
    buffer = Buffer(install_ledger(tmp_path))
    gateway = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=True).start()
    try:
        eventually(lambda: buffer.acknowledged_count() >= 10, timeout_s=30,
                   what="the simulated home's first readings to reach the broker", log=gateway.log)
        proxy.cut()
        cut_seq = buffer.enqueued_max_seq()
        eventually(lambda: buffer.enqueued_max_seq() - cut_seq >= 20, timeout_s=30,
                   what="readings to pile up in the buffer during the outage", log=gateway.log)
        gateway.kill()
    finally:
        if gateway.process is not None:
            gateway.kill()
        proxy.restore()

    ledger = buffer.ledger()  # everything the killed gateway had committed
    assert buffer.pending_seqs() >= set(range(cut_seq + 1, ledger[-1].seq + 1))

    restarted = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=False).start()
    try:
        eventually(lambda: not buffer.pending_seqs(), timeout_s=60,
                   what="the restarted gateway to replay the buffer", log=restarted.log)
        assert restarted.stop() == 0
    finally:
        if restarted.process is not None:
            restarted.kill()

    assert buffer.ledger() == ledger, "the restarted gateway (without simulation) enqueues nothing new"
    assert_all_delivered_in_order(proxied_broker.bootstrap, ledger, gateway_id)
