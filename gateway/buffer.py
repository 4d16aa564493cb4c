"""The gateway's durable store-and-forward buffer: SQLite in WAL mode.

Every message is committed here (``synchronous=FULL``: on disk before `append` returns) before the
gateway tries to send it, and leaves only after the broker has acknowledged it. A gateway killed at
any moment therefore replays, in order, everything not yet acknowledged; the worst case is a
message sent twice with the same ``event_id``, which consumers deduplicate.

Admission (hazard H-22, docs/safety/hazard-log.md). The buffer is bounded twice: by ``max_bytes`` of
payload, and by the free space of the disk it lives on. When either runs short, input whose sender keeps
it and sends it again (`Priority.RETRIED`: a tablet entry, answered 507) is refused first; the last
``reserve_bytes`` of the limit, and of the disk, are kept for input that nobody sends again
(`Priority.DEVICE`: a BLE value or BTHome frame, and their dead letters). A device reading is refused only
when the reserve is used up as well, or the disk keeps less than ``disk_headroom_bytes`` free; then the
caller must make the loss loud (`gateway.ble.central` logs it with its bytes). The headroom is room for
SQLite itself: removing acknowledged messages and checkpointing the write-ahead log both write, so a disk
filled to the last byte by the buffer could never drain it.

A write the disk refuses anyway (another program filled it, a file-size limit, an I/O error) fails inside
SQLite's transaction, which SQLite rolls back: nothing half-written stays in the buffer. The buffer then
checkpoints and truncates its write-ahead log, which may free room, and tries once more. If that fails too,
`append` raises `BufferFull` with SQLite's reason, like any other refusal, and `ack` raises
`BufferWriteFailed`: the messages stay, to be sent again (a duplicate, never a loss).

Free disk space counts the pages SQLite freed inside the buffer's file as well: the file never shrinks, so
after a long outage it holds the room the outage took, and reuses it before it grows.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Share of ``max_bytes`` kept for device readings: tablet entries are refused above ``1 - 0.1`` of it.
DEVICE_RESERVE_FRACTION = 0.1
#: Free disk the buffer never fills itself. SQLite checkpoints its write-ahead log every
#: `WAL_CHECKPOINT_PAGES` pages (4 KiB each: 1 MiB), and a checkpoint may grow the database file by as much;
#: twice that leaves room for the deletes that acknowledgements make meanwhile.
DISK_HEADROOM_BYTES = 2 * 1024 * 1024
#: Pages of write-ahead log after which SQLite checkpoints it (SQLite's default is 1000): a smaller log needs
#: less headroom on a nearly full disk.
WAL_CHECKPOINT_PAGES = 256
#: Share of ``max_bytes`` above which the buffer reports `BufferLevel.FILLING` (the same 80 % as the
#: ``CarePulseGatewayBufferNearlyFull`` alert in deploy/prometheus/alerts.yml).
FILLING_FRACTION = 0.8


class BufferFull(RuntimeError):
    """The message was not accepted (limit, reserve, disk, or the disk refused the write): the caller keeps it
    or, if it cannot, must report its loss."""


class BufferWriteFailed(RuntimeError):
    """Acknowledged messages could not be removed (the disk refused the write); they stay and are sent again."""


class Priority(enum.IntEnum):
    """Who may use the buffer's reserve."""

    #: The sender keeps a refused entry and sends it again (a tablet, on a 507 answer).
    RETRIED = 0
    #: Nobody sends it again: BLE readings, BTHome events and their dead letters.
    DEVICE = 1


class BufferLevel(enum.IntEnum):
    """How much the buffer still admits, worst last."""

    NORMAL = 0
    #: Over `FILLING_FRACTION` of the limit, or the disk is getting short: tablet entries will be refused soon.
    FILLING = 1
    #: Tablet entries are refused; device readings use the reserve.
    RETRIED_REFUSED = 2
    #: Device readings are refused too: every one that arrives now is lost (and logged).
    DEVICE_REFUSED = 3


@dataclass(frozen=True)
class Limits:
    """The buffer's bounds; `refusal` and `level` are pure so they can be tested as a table."""

    max_bytes: int
    reserve_bytes: int
    disk_headroom_bytes: int = DISK_HEADROOM_BYTES

    def refusal(self, priority: Priority, size_bytes: int, add_bytes: int, disk_free_bytes: int) -> str | None:
        """Why a message of `add_bytes` is refused now, as the rest of a sentence, or None if it fits."""
        reserve = self.reserve_bytes if priority is Priority.RETRIED else 0
        if size_bytes + add_bytes > self.max_bytes - reserve:
            kept = f"; the last {reserve} bytes are kept for device readings" if reserve else ""
            return (f"is full ({size_bytes} of {self.max_bytes} bytes{kept}): the broker has been unreachable "
                    "too long or the disk limit is too small")
        if disk_free_bytes - add_bytes < self.disk_headroom_bytes + reserve:
            kept = f" and {reserve} bytes kept for device readings" if reserve else ""
            return (f"is on a nearly full disk ({disk_free_bytes} bytes free; {self.disk_headroom_bytes} bytes "
                    f"are kept for the buffer's own upkeep{kept}): free disk space on the gateway")
        return None

    def level(self, size_bytes: int, disk_free_bytes: int) -> BufferLevel:
        """The level of a buffer holding `size_bytes` on a disk with `disk_free_bytes` free."""
        if size_bytes >= self.max_bytes or disk_free_bytes <= self.disk_headroom_bytes:
            return BufferLevel.DEVICE_REFUSED
        if (size_bytes >= self.max_bytes - self.reserve_bytes
                or disk_free_bytes <= self.disk_headroom_bytes + self.reserve_bytes):
            return BufferLevel.RETRIED_REFUSED
        if (size_bytes >= self.max_bytes * FILLING_FRACTION
                or disk_free_bytes <= self.disk_headroom_bytes + 2 * self.reserve_bytes):
            return BufferLevel.FILLING
        return BufferLevel.NORMAL


@dataclass(frozen=True)
class Buffered:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    enqueued_at: float  # Unix seconds


class DurableBuffer:
    """A FIFO of messages on disk, bounded by `max_bytes` of payload and by its disk's free space."""

    def __init__(self, path: Path, max_bytes: int = 512 * 1024 * 1024, *, reserve_bytes: int | None = None,
                 disk_headroom_bytes: int = DISK_HEADROOM_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limits = Limits(
            max_bytes=max_bytes,
            reserve_bytes=int(max_bytes * DEVICE_RESERVE_FRACTION) if reserve_bytes is None else reserve_bytes,
            disk_headroom_bytes=disk_headroom_bytes,
        )
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,"
            " enqueued_at REAL NOT NULL)"
        )
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        # Kept in memory so the state gauges (read after every sending round) cost no table scan; one process
        # writes a buffer file, so these stay exact.
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM outbox").fetchone()

    @property
    def max_bytes(self) -> int:
        return self.limits.max_bytes

    def append(self, topic: str, key: bytes | None, value: bytes, now: float | None = None, *,
               priority: Priority = Priority.RETRIED) -> int:
        """Store a message durably; returns its sequence number.

        Raises `BufferFull` with the reason when it is refused (see the module docstring): nothing is stored.
        """
        with self._lock:
            refusal = self.limits.refusal(priority, self._bytes, len(value), self._disk_free_bytes())
            if refusal is not None:
                raise BufferFull(f"gateway buffer {self.path} {refusal}")
            row = (topic, key, value, time.time() if now is None else now)
            try:
                seq = self._write(lambda: self._db.execute(
                    "INSERT INTO outbox (topic, key, value, enqueued_at) VALUES (?, ?, ?, ?)", row).lastrowid)
            except sqlite3.OperationalError as error:
                raise BufferFull(f"gateway buffer {self.path} could not store the message: {error} (the disk "
                                 "holding it is full or failing); free disk space on the gateway") from error
            self._bytes += len(value)
            self._count += 1
            return seq

    def pending(self, limit: int) -> list[Buffered]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, key, value, enqueued_at FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Buffered(*row) for row in rows]

    def ack(self, seqs: list[int]) -> None:
        """Remove acknowledged messages. Raises `BufferWriteFailed` if the disk refuses: they all stay."""
        if not seqs:
            return
        placeholders = ",".join("?" * len(seqs))

        def delete() -> tuple[int, int]:
            self._db.execute("BEGIN IMMEDIATE")
            freed = self._db.execute(
                f"SELECT COALESCE(SUM(LENGTH(value)), 0) FROM outbox WHERE seq IN ({placeholders})", seqs,
            ).fetchone()[0]
            deleted = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({placeholders})", seqs).rowcount
            self._db.execute("COMMIT")
            return freed, deleted

        with self._lock:
            try:
                freed, deleted = self._write(delete)
            except sqlite3.OperationalError as error:
                raise BufferWriteFailed(
                    f"gateway buffer {self.path} could not remove {len(seqs)} acknowledged messages: {error}; "
                    "they will be sent again (consumers drop the duplicates by event_id)") from error
            self._bytes -= freed
            self._count -= deleted

    def _write(self, write: Callable[[], T]) -> T:
        """Run `write` (holding the lock); if the disk refuses it, roll back, checkpoint and try once more.

        A write-ahead log that grew to the end of a full disk blocks every write, deletes included, until a
        checkpoint copies it into the database and truncates it: that is the one way to make room from here.
        """
        try:
            return write()
        except sqlite3.OperationalError:  # SQLITE_FULL, SQLITE_IOERR: the statement was not applied
            self._rollback()
            with contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            return write()
        except sqlite3.OperationalError:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may leave an I/O error's transaction open
            self._db.execute("ROLLBACK")

    def depth(self) -> int:
        """Messages not yet acknowledged."""
        return self._count

    def size_bytes(self) -> int:
        """Payload bytes of those messages (what `max_bytes` bounds)."""
        return self._bytes

    def disk_free_bytes(self) -> int:
        """Room the buffer can still write into: the disk's free bytes for an unprivileged writer (the root-only
        reserve not counted), plus the pages SQLite freed inside the buffer's file. The file never shrinks, so
        after a long outage it holds the space the outage took; those free pages are reused before it grows."""
        with self._lock:
            return self._disk_free_bytes()

    def _disk_free_bytes(self) -> int:  # the lock held
        stats = os.statvfs(self.path.parent)
        free_pages = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return stats.f_bavail * stats.f_frsize + free_pages * self._page_size

    def level(self) -> BufferLevel:
        """What the buffer admits now (`Limits.level`)."""
        with self._lock:
            return self.limits.level(self._bytes, self._disk_free_bytes())

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest unacknowledged message was enqueued; 0 when the buffer is empty."""
        with self._lock:
            # The lowest seq is the oldest message (FIFO): one index lookup, not a scan.
            row = self._db.execute("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (time.time() if now is None else now) - row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
