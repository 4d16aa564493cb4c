"""The gateway's durable store-and-forward buffer: SQLite in WAL mode.

Every message is committed here (``synchronous=FULL``: on disk before `append` returns) before the
gateway tries to send it, and leaves only after the broker has acknowledged it. A gateway killed at
any moment therefore replays, in order, everything not yet acknowledged; the worst case is a
message sent twice with the same ``event_id``, which consumers deduplicate.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class BufferFull(RuntimeError):
    """The buffer reached its size limit; the message was not accepted (and the caller must keep it)."""


@dataclass(frozen=True)
class Buffered:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    enqueued_at: float  # Unix seconds


class DurableBuffer:
    """A FIFO of messages on disk, bounded by `max_bytes` of payload."""

    def __init__(self, path: Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,"
            " enqueued_at REAL NOT NULL)"
        )
        # Kept in memory so the state gauges (read after every sending round) cost no table scan; one process
        # writes a buffer file, so these stay exact.
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM outbox").fetchone()

    def append(self, topic: str, key: bytes | None, value: bytes, now: float | None = None) -> int:
        with self._lock:
            if self._bytes + len(value) > self.max_bytes:
                raise BufferFull(
                    f"gateway buffer {self.path} is full ({self._bytes} of {self.max_bytes} bytes): "
                    "the broker has been unreachable too long or the disk limit is too small"
                )
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, key, value, enqueued_at) VALUES (?, ?, ?, ?)",
                (topic, key, value, time.time() if now is None else now),
            )
            self._bytes += len(value)
            self._count += 1
            return cursor.lastrowid

    def pending(self, limit: int) -> list[Buffered]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, key, value, enqueued_at FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Buffered(*row) for row in rows]

    def ack(self, seqs: list[int]) -> None:
        """Remove acknowledged messages."""
        if not seqs:
            return
        with self._lock:
            freed = self._db.execute(
                f"SELECT COALESCE(SUM(LENGTH(value)), 0) FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})",
                seqs,
            ).fetchone()[0]
            deleted = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs)
            self._bytes -= freed
            self._count -= deleted.rowcount

    def depth(self) -> int:
        """Messages not yet acknowledged."""
        return self._count

    def size_bytes(self) -> int:
        """Payload bytes of those messages (what `max_bytes` bounds)."""
        return self._bytes

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest unacknowledged message was enqueued; 0 when the buffer is empty."""
        with self._lock:
            # The lowest seq is the oldest message (FIFO): one index lookup, not a scan.
            row = self._db.execute("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (time.time() if now is None else now) - row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
