"""The gateway under faults (issue 10): a long broker outage, a SIGKILL while it buffers, a nearly full disk.

Each test runs `carepulse gateway` as a real process against a real Tansu broker that the gateway reaches only
through a TCP proxy the test can cut (the rig of ``tests/e2e/test_gateway_service.py``: the broker keeps its
data in memory, so cutting the path, not stopping the broker, is the outage). The gateway runs the simulated
care home (emulated Bluetooth devices read over bumble's virtual link, and the simulated carer's tablet), and
the test adds a tablet of its own that posts at a high rate.

Accounting, in every test, over every event the gateway produced:
- *produced*: every row the gateway's buffer committed, recorded by the ``ledger`` trigger inside the same
  transaction (see the e2e module), and every entry the test's tablet holds;
- *delivered*: every message from this gateway on the topics the ledger names, read back from the broker;
- *lost* = produced event ids never delivered: must be 0; *unknown* = delivered ids nothing produced: must be 0;
- *duplicates on the wire* = deliveries minus distinct event ids: allowed (at-least-once; consumers drop
  repeats by event id), counted and reported, not hidden;
- a tablet entry is the tablet's until it is answered 202: one answered 507, or not answered at all because
  the gateway died, is sent again with the same event id, as the intake's contract says a tablet does.

Time is compressed: the long outage is minutes of care (entries dated across `OUTAGE_CARE_MINUTES`, at a
large home's rate) delivered in seconds, and it lasts long enough for the gateway's producer to time out
(`request_timeout_ms` and `max_block_ms` are 10 s) and reconnect. The nearly full disk is a real 6 MiB tmpfs,
mounted in a user namespace of the gateway's own (``unshare --user --map-root-user --mount``, no root
needed where unprivileged user namespaces are allowed), so the gateway sees the kernel's real free-space
figures and real ENOSPC; the test reaches the files through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import pickle
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.registry import Registry
from tests.e2e.test_gateway_service import (
    LOOPBACK,
    Buffer,
    GatewayProcess,
    ProxiedBroker,
    Row,
    _gateway_id,
    eventually,
    install_ledger,
    read_until_all,
    running_proxied_broker,
)
from tests.kafka_helpers import free_port

pytestmark = pytest.mark.e2e

#: Care time the long outage stands for: its entries are dated across it.
OUTAGE_CARE_MINUTES = 30
#: Entries the test's tablets post during the long outage: one observation round every minute for 60 residents
#: over `OUTAGE_CARE_MINUTES`, a large home's traffic.
OUTAGE_ENTRIES = 1800
#: Wall time the long outage lasts at least: past the producer's 10 s request and metadata timeouts.
OUTAGE_WALL_S = 14.0
RESIDENTS = 12
CONCURRENCY = 12


@pytest.fixture(scope="module")
def proxied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedBroker]:
    """This module's broker, reachable only through a proxy the tests cut (tests/e2e/test_gateway_service.py)."""
    with running_proxied_broker(tmp_path_factory.mktemp("proxied-broker")) as broker:
        yield broker


# -- the test's tablet ---------------------------------------------------------------------------------
@dataclass
class Tablet:
    """A carer's tablet: each entry has its own event id; the tablet keeps an entry until the gateway answered
    202, and sends a kept one again with the same id."""

    location_id: str
    token: str
    residents: list[str]
    answers: dict[str, int | None] = field(default_factory=dict)  # event id -> last HTTP status (None: none)
    bodies: dict[str, tuple[str, dict]] = field(default_factory=dict)  # event id -> (resident, body)
    refusals: list[dict] = field(default_factory=list)  # the JSON body of every refusal

    def new_entries(self, count: int, care_span: timedelta) -> list[str]:
        start = datetime.now(UTC) - care_span
        ids = []
        for i in range(count):
            event_id = str(uuid.uuid4())
            self.bodies[event_id] = (self.residents[i % len(self.residents)], {
                "event_id": event_id, "occurred_at": (start + care_span * i / count).isoformat(),
                "recorded_by": "carer-faults", "respiration_rate": 12 + i % 10, "consciousness": "A",
                "on_oxygen": False,
            })
            ids.append(event_id)
        return ids

    def kept(self) -> list[str]:
        return [event_id for event_id in self.bodies if self.answers.get(event_id) != 202]

    def send(self, port: int, event_ids: list[str]) -> Counter:
        """Post the entries (CONCURRENCY at a time); returns how many got each answer (None: no answer)."""
        return asyncio.run(self._send(port, event_ids))

    async def _send(self, port: int, event_ids: list[str]) -> Counter:
        limit = asyncio.Semaphore(CONCURRENCY)
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=10,
                                     headers={"Authorization": f"Bearer {self.token}"}) as client:
            async def post(event_id: str) -> None:
                resident, body = self.bodies[event_id]
                async with limit:
                    try:
                        response = await client.post(f"/v1/residents/{resident}/observations", json=body)
                    except httpx.HTTPError:
                        self.answers[event_id] = None
                        return
                self.answers[event_id] = response.status_code
                if response.status_code != 202:
                    self.refusals.append(response.json())

            await asyncio.gather(*(post(event_id) for event_id in event_ids))
        return Counter(self.answers[event_id] for event_id in event_ids)


def prepare(data_dir: Path, residents: int = RESIDENTS) -> tuple[Buffer, Tablet]:
    """The ledger on the gateway's buffer, and a tablet of the test's own with its residents, before the start."""
    buffer = Buffer(install_ledger(data_dir))
    location = f"loc-faults-{uuid.uuid4().hex[:6]}"
    registry = Registry(data_dir / "gateway" / "registry.sqlite")
    try:
        ids = [f"res-faults-{uuid.uuid4().hex[:8]}" for _ in range(residents)]
        for resident in ids:
            registry.add_resident(resident, location)
        token = registry.provision_tablet(f"tablet-{location}", location)
    finally:
        registry.close()
    return buffer, Tablet(location, token, ids)


# -- accounting ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accounting:
    produced: int  # distinct event ids: the ledger's and the tablet's
    buffered_rows: int
    deliveries: int
    lost: int
    unknown: int
    duplicates_on_wire: int


def account(bootstrap: str, ledger: list[Row], gateway_id: str, tablet: Tablet) -> Accounting:
    """Read back every topic the ledger names, check that each key's events first arrived in the order the
    gateway enqueued them, and count (see the module docstring)."""
    seq_of = {row.value: row.seq for row in ledger}
    delivered: list[str] = []
    for topic in sorted({row.topic for row in ledger}):
        wanted = {row.value for row in ledger if row.topic == topic}
        ours = [d for d in read_until_all(bootstrap, topic, wanted, timeout_s=60, settle_s=1.0)
                if json.loads(d.value)["source"]["gateway_id"] == gateway_id]
        first_seqs: dict[bytes | None, list[int]] = {}
        for d in ours:  # partition-offset order; a key lives on one partition
            if d.value in seq_of:
                first_seqs.setdefault(d.key, []).append(seq_of.pop(d.value))
        for key, seqs in first_seqs.items():
            assert seqs == sorted(seqs), f"{topic}: key {key!r}'s events arrived out of enqueue order"
        delivered += [json.loads(d.value)["event_id"] for d in ours]
    produced = {row.event_id for row in ledger} | set(tablet.bodies)
    return Accounting(
        produced=len(produced), buffered_rows=len(ledger), deliveries=len(delivered),
        lost=len(produced - set(delivered)), unknown=len(set(delivered) - produced),
        duplicates_on_wire=len(delivered) - len(set(delivered)),
    )


def drained(buffer: Buffer) -> bool:
    return not buffer.pending_seqs()


def report(name: str, started: float, accounting: Accounting, **facts: object) -> None:
    details = ", ".join(f"{key} {value}" for key, value in facts.items())
    print(f"\n{name}: {accounting}; {details}; {time.monotonic() - started:.1f} s")


# -- the tests ----------------------------------------------------------------------------------------
def test_a_long_outage_is_buffered_and_replayed_with_nothing_lost(proxied_broker, tmp_path):
    started = time.monotonic()
    proxy = proxied_broker.proxy
    gateway_id = _gateway_id()
    buffer, tablet = prepare(tmp_path)
    gateway = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=True).start()
    try:
        eventually(lambda: buffer.acknowledged_count() >= 10, timeout_s=30,
                   what="the simulated home's first readings to reach the broker", log=gateway.log)
        proxy.cut()
        cut_at, cut_seq = time.monotonic(), buffer.enqueued_max_seq()
        answers = tablet.send(gateway.port, tablet.new_entries(OUTAGE_ENTRIES, timedelta(minutes=OUTAGE_CARE_MINUTES)))
        posting_s = time.monotonic() - cut_at
        assert answers == {202: OUTAGE_ENTRIES}, tablet.refusals[:3]
        time.sleep(max(0.0, OUTAGE_WALL_S - (time.monotonic() - cut_at)))
        during = buffer.enqueued_max_seq()
        # Nothing enqueued after the cut can have been acknowledged: the whole outage is in the buffer.
        assert set(range(cut_seq + 1, during + 1)) <= buffer.pending_seqs()
        assert during - cut_seq >= OUTAGE_ENTRIES + 10, "the simulated home kept sending during the outage"
        assert "broker unreachable from gateway" in gateway.log()

        proxy.restore()
        eventually(lambda: drained(buffer), timeout_s=60, what="the backlog to drain", log=gateway.log)
        assert gateway.stop() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
        proxy.restore()

    accounting = account(proxied_broker.bootstrap, buffer.ledger(), gateway_id, tablet)
    assert (accounting.lost, accounting.unknown) == (0, 0)
    assert accounting.produced == accounting.buffered_rows  # no tablet retries here: one row per event
    report("long outage", started, accounting, buffered_during_outage=during - cut_seq,
           tablet_posting_s=round(posting_s, 1), faults="1 outage")


def test_a_gateway_killed_while_buffering_replays_everything_it_accepted(proxied_broker, tmp_path):
    started = time.monotonic()
    proxy = proxied_broker.proxy
    gateway_id = _gateway_id()
    buffer, tablet = prepare(tmp_path)
    gateway = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=True).start()
    restarted: GatewayProcess | None = None
    try:
        eventually(lambda: buffer.acknowledged_count() >= 5, timeout_s=30,
                   what="the simulated home's first readings to reach the broker", log=gateway.log)
        proxy.cut()
        cut_seq = buffer.enqueued_max_seq()
        entries = tablet.new_entries(1200, timedelta(minutes=20))
        posting = threading.Thread(target=tablet.send, args=(gateway.port, entries))
        posting.start()
        # SIGKILL in the middle of the stream, with requests in flight.
        eventually(lambda: buffer.enqueued_max_seq() - cut_seq >= 400, timeout_s=30,
                   what="entries to pile up in the buffer", log=gateway.log)
        gateway.kill()
        posting.join(timeout=60)
        ledger_at_kill = buffer.ledger()
        answers = Counter(tablet.answers.values())
        accepted = {event_id for event_id, status in tablet.answers.items() if status == 202}
        # Every 202 was durable: the killed gateway had committed each of them.
        assert accepted <= {row.event_id for row in ledger_at_kill}
        assert set(range(cut_seq + 1, ledger_at_kill[-1].seq + 1)) <= buffer.pending_seqs()
        assert answers[202] >= 300 and answers[None] >= 1, answers  # killed mid-stream

        restarted = GatewayProcess(proxied_broker.bootstrap, tmp_path, gateway_id, simulate=False).start()
        kept = tablet.kept()
        assert tablet.send(restarted.port, kept) == {202: len(kept)}  # the tablet sends what it kept
        proxy.restore()
        eventually(lambda: drained(buffer), timeout_s=60, what="the restarted gateway to replay the buffer",
                   log=restarted.log)
        assert restarted.stop() == 0
    finally:
        for process in (gateway, restarted):
            if process is not None and process.process is not None:
                process.kill()
        proxy.restore()

    ledger = buffer.ledger()
    assert ledger[:len(ledger_at_kill)] == ledger_at_kill  # the restart replayed, it rewrote nothing
    accounting = account(proxied_broker.bootstrap, ledger, gateway_id, tablet)
    assert (accounting.lost, accounting.unknown) == (0, 0)
    report("SIGKILL while buffering", started, accounting, answered_202_before_kill=answers[202],
           unanswered_at_kill=answers[None], resent_after_restart=len(kept), faults="1 outage + 1 SIGKILL")


# -- a nearly full disk ------------------------------------------------------------------------------
DISK_BYTES = 6 * 1024 * 1024
#: Small enough for the disk to bind first; its device reserve is a tenth of it (gateway.buffer).
DISK_TEST_BUFFER_MAX_BYTES = 2 * 1024 * 1024


def _user_namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                           check=False)
    return probe.returncode == 0


class SmallDiskGateway(GatewayProcess):
    """The gateway with its data directory on a `DISK_BYTES` tmpfs in a mount namespace of its own. The
    seed directory (registry, buffer with its ledger) is copied onto the tmpfs before the gateway starts."""

    def __init__(self, bootstrap: str, seed_dir: Path, mount_point: Path, gateway_id: str, metrics_port: int):
        super().__init__(bootstrap, mount_point.parent, gateway_id, simulate=True)  # its log stays outside
        self.mount_point = mount_point
        mount_point.mkdir()
        self.env.update({"CAREPULSE_DATA_DIR": str(mount_point),
                         "CAREPULSE_GATEWAY_BUFFER_MAX_BYTES": str(DISK_TEST_BUFFER_MAX_BYTES),
                         "CAREPULSE_GATEWAY_METRICS_PORT": str(metrics_port)})
        self.command = [
            "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            'mount -t tmpfs -o size="$1" tmpfs "$2" && cp -a "$3"/. "$2"/ && shift 3 && exec "$@"',
            "sh", str(DISK_BYTES), str(mount_point), str(seed_dir), *self.command,
        ]

    def on_disk(self, relative: str) -> Path:
        """A path on the gateway's tmpfs, as seen from outside its mount namespace."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / self.mount_point.relative_to("/") / relative

    def disk_free_bytes(self) -> int:
        return shutil.disk_usage(self.on_disk("gateway")).free

    def buffer(self) -> NamespacedBuffer:
        assert self.process is not None
        return NamespacedBuffer(self.mount_point / "gateway" / "buffer.sqlite", self.process.pid)


class NamespacedBuffer(Buffer):
    """`Buffer`'s read-only queries, run inside the gateway's namespaces (``nsenter``): SQLite resolves the
    ``/proc/<pid>/root`` link to a path outside them, where the tmpfs is not mounted."""

    QUERY = ("import pickle, sqlite3, sys\n"
             "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
             "sys.stdout.buffer.write(pickle.dumps(db.execute(sys.argv[2]).fetchall()))")

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(path)
        self.pid = pid

    def _query(self, sql: str) -> list[tuple]:
        result = subprocess.run(
            ["nsenter", "--target", str(self.pid), "--user", "--mount", "--preserve-credentials",
             sys.executable, "-c", self.QUERY, str(self.path), sql], capture_output=True, check=True)
        return pickle.loads(result.stdout)


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://{LOOPBACK}:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _fill(path: Path, leave_free_bytes: int, free_bytes: int) -> None:
    """Grow the file at `path` (another program's file on the gateway's disk) until about `leave_free_bytes`
    are left, or to the last block (ENOSPC) when that is 0."""
    to_write = free_bytes - leave_free_bytes if leave_free_bytes else 2**62
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as filler:
        try:
            while to_write > 0:
                to_write -= filler.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC and not leave_free_bytes, error


@pytest.mark.skipif(not _user_namespaces_work(), reason="needs `unshare --user --mount` and `nsenter` (user "
                    "namespaces) to give the gateway a small filesystem of its own without root")
def test_a_nearly_full_disk_refuses_tablets_first_and_loses_no_reading_silently(proxied_broker, tmp_path):
    started = time.monotonic()
    proxy = proxied_broker.proxy
    gateway_id = _gateway_id()
    seed = tmp_path / "seed"
    _, tablet = prepare(seed, residents=4)
    metrics_port = free_port()
    gateway = SmallDiskGateway(proxied_broker.bootstrap, seed, tmp_path / "disk", gateway_id, metrics_port)
    gateway.start()
    buffer = gateway.buffer()
    filler = gateway.on_disk("other-program.log")
    try:
        eventually(lambda: buffer.acknowledged_count() >= 5, timeout_s=30,
                   what="the simulated home's first readings to reach the broker", log=gateway.log)
        proxy.cut()
        # 1. Tablets fill the disk until the gateway refuses them: the reserve for devices is still free.
        answers: Counter = Counter()
        while answers[507] < 20:
            answers += tablet.send(gateway.port, tablet.new_entries(200, timedelta(minutes=10)))
            assert sum(answers.values()) < 10_000, "the gateway never refused a tablet entry"
        assert set(answers) == {202, 507}, answers
        assert all(set(body) == {"error"} and "nearly full disk" in body["error"] for body in tablet.refusals)
        readings_before = buffer.enqueued_max_seq()
        eventually(lambda: buffer.enqueued_max_seq() - readings_before >= 5, timeout_s=20,
                   what="device readings to go on into the reserve", log=gateway.log)

        # 2. Another program takes the disk down to its last blocks: device readings are refused too, each one
        # logged as LOST with its bytes; then it takes every block (real ENOSPC); the gateway keeps running.
        _fill(filler, leave_free_bytes=1024 * 1024, free_bytes=gateway.disk_free_bytes())
        eventually(lambda: len(_lost_lines(gateway.log())) >= 3, timeout_s=30,
                   what="device readings refused at the disk's headroom", log=gateway.log)
        _fill(filler, leave_free_bytes=0, free_bytes=gateway.disk_free_bytes())
        assert gateway.disk_free_bytes() < 4096
        lost_before = len(_lost_lines(gateway.log()))
        eventually(lambda: len(_lost_lines(gateway.log())) >= lost_before + 3, timeout_s=30,
                   what="device readings refused on a full disk", log=gateway.log)
        assert gateway.health() is not None  # alive and answering
        proxy.restore()  # the broker is back while the disk is still full: acks may or may not find room
        time.sleep(2)

        # 3. The disk is freed: the backlog drains, the tablet sends what it kept, and it is accepted.
        filler.unlink()
        eventually(lambda: drained(buffer), timeout_s=60, what="the backlog to drain", log=gateway.log)
        kept = tablet.kept()
        assert tablet.send(gateway.port, kept) == {202: len(kept)}
        eventually(lambda: drained(buffer), timeout_s=30, what="the resent entries to be sent", log=gateway.log)
        ledger = buffer.ledger()  # the tmpfs goes with the gateway's namespace: read it first
        assert buffer._query("PRAGMA integrity_check") == [("ok",)]
        rejected = _metric(metrics_port, "carepulse_gateway_buffer_rejected_total")
        assert gateway.stop() == 0
    finally:
        if gateway.process is not None:
            gateway.kill()
        proxy.restore()

    log = gateway.log()
    lost = _lost_lines(log)
    # Every refusal is accounted for: a 507 to a tablet (the test's, or the simulated carer's, which logs it)
    # or a device reading logged as LOST with its bytes. None is silent.
    simulated_507 = sum(int(n) for n in re.findall(r"simulated round \d+: (\d+) of \d+ residents' observations "
                                                   r"failed \(first: RuntimeError: the intake answered 507\)", log))
    assert rejected == answers[507] + simulated_507 + len(lost)
    assert all(re.search(r"bytes [0-9a-f]+: gateway buffer .* (is on a nearly full disk|could not store)", line)
               for line in lost)
    for alarm in ("ERROR gateway.publisher: gateway buffer is refusing tablet entries",
                  "CRITICAL gateway.publisher: gateway buffer is refusing device readings"):
        assert alarm in log, alarm
    accounting = account(proxied_broker.bootstrap, ledger, gateway_id, tablet)
    assert (accounting.lost, accounting.unknown) == (0, 0)  # the tablet's entries: all delivered in the end
    report("nearly full disk", started, accounting, tablet_507=answers[507], simulated_tablet_507=simulated_507,
           device_readings_logged_lost=len(lost), faults="1 outage + disk to its headroom + disk full (ENOSPC)")


def _lost_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "LOST value 0x" in line]
