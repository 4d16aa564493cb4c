"""The durable buffer's admission (hazard H-22): who is refused first, when the disk runs short, and what a
write the disk refuses leaves behind. Limits are pure and tested as tables; the rest on real SQLite files."""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

import pytest

from gateway.buffer import BufferFull, BufferLevel, BufferWriteFailed, DurableBuffer, Limits, Priority

LIMITS = Limits(max_bytes=1000, reserve_bytes=100, disk_headroom_bytes=50)
ROOMY_DISK = 10**9
RETRIED, DEVICE = Priority.RETRIED, Priority.DEVICE


@pytest.mark.parametrize(
    ("priority", "size_bytes", "add_bytes", "disk_free_bytes", "refused"),
    [
        (RETRIED, 0, 900, ROOMY_DISK, None),  # up to the reserve exactly
        (RETRIED, 1, 900, ROOMY_DISK, ("is full (1 of 1000 bytes; the last 100 bytes are kept for device "
                                       "readings): the broker has been unreachable too long or the disk limit "
                                       "is too small")),
        (DEVICE, 1, 900, ROOMY_DISK, None),  # a device reading may use the reserve
        (DEVICE, 0, 1000, ROOMY_DISK, None),  # up to the limit exactly
        (DEVICE, 1, 1000, ROOMY_DISK, ("is full (1 of 1000 bytes): the broker has been unreachable too long or "
                                       "the disk limit is too small")),
        (RETRIED, 0, 10, 160, None),  # leaves headroom + reserve free
        (RETRIED, 0, 10, 159, ("is on a nearly full disk (159 bytes free; 50 bytes are kept for the buffer's "
                               "own upkeep and 100 bytes kept for device readings): free disk space on the gateway")),
        (DEVICE, 0, 10, 159, None),
        (DEVICE, 0, 10, 60, None),  # leaves the headroom free
        (DEVICE, 0, 10, 59, ("is on a nearly full disk (59 bytes free; 50 bytes are kept for the buffer's own "
                             "upkeep): free disk space on the gateway")),
    ],
)
def test_tablet_entries_are_refused_before_device_readings(priority, size_bytes, add_bytes, disk_free_bytes,
                                                           refused):
    assert LIMITS.refusal(priority, size_bytes, add_bytes, disk_free_bytes) == refused


@pytest.mark.parametrize(
    ("size_bytes", "disk_free_bytes", "level"),
    [
        (0, ROOMY_DISK, BufferLevel.NORMAL),
        (799, ROOMY_DISK, BufferLevel.NORMAL),
        (800, ROOMY_DISK, BufferLevel.FILLING),  # 80 %, as the CarePulseGatewayBufferNearlyFull alert
        (899, ROOMY_DISK, BufferLevel.FILLING),
        (900, ROOMY_DISK, BufferLevel.RETRIED_REFUSED),
        (999, ROOMY_DISK, BufferLevel.RETRIED_REFUSED),
        (1000, ROOMY_DISK, BufferLevel.DEVICE_REFUSED),
        (0, 251, BufferLevel.NORMAL),
        (0, 250, BufferLevel.FILLING),  # headroom + twice the reserve
        (0, 150, BufferLevel.RETRIED_REFUSED),
        (0, 50, BufferLevel.DEVICE_REFUSED),
        (1000, 0, BufferLevel.DEVICE_REFUSED),
    ],
)
def test_the_level_says_what_the_buffer_still_admits(size_bytes, disk_free_bytes, level):
    assert LIMITS.level(size_bytes, disk_free_bytes) == level


def test_the_reserve_of_a_real_buffer_takes_only_device_readings(tmp_path):
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=100, reserve_bytes=40)
    buffer.append("readings", b"k", b"t" * 60)  # a tablet entry, up to the reserve
    with pytest.raises(BufferFull, match=r"is full \(60 of 100 bytes; the last 40 bytes are kept"):
        buffer.append("readings", b"k", b"t")
    buffer.append("readings", b"k", b"d" * 40, priority=DEVICE)
    with pytest.raises(BufferFull, match=r"is full \(100 of 100 bytes\)"):
        buffer.append("readings", b"k", b"d", priority=DEVICE)
    assert [row.value[:1] for row in buffer.pending(10)] == [b"t", b"d"]
    assert (buffer.depth(), buffer.size_bytes(), buffer.level()) == (2, 100, BufferLevel.DEVICE_REFUSED)


def test_the_free_space_of_the_disk_bounds_the_buffer_too(tmp_path):
    free = DurableBuffer(tmp_path / "probe.sqlite").disk_free_bytes()
    assert free > 0
    # A reserve larger than the whole disk: tablet entries are refused for the disk, device readings are not.
    short = DurableBuffer(tmp_path / "short.sqlite", max_bytes=2**62, reserve_bytes=2 * free)
    with pytest.raises(BufferFull, match=r"is on a nearly full disk \(\d+ bytes free; .* kept for device"):
        short.append("readings", None, b"t")
    short.append("readings", None, b"d", priority=DEVICE)
    assert short.level() == BufferLevel.RETRIED_REFUSED
    # Headroom larger than the disk: nothing is accepted.
    full = DurableBuffer(tmp_path / "full.sqlite", disk_headroom_bytes=2 * free)
    with pytest.raises(BufferFull, match=r"is on a nearly full disk \(\d+ bytes free; \d+ bytes are kept for the "
                                         r"buffer's own upkeep\): free disk space on the gateway"):
        full.append("readings", None, b"d", priority=DEVICE)
    assert (full.depth(), full.level()) == (0, BufferLevel.DEVICE_REFUSED)


class FileSizeLimit:
    """RLIMIT_FSIZE (``ulimit -f``) for this process while in the block: the kernel refuses, with EFBIG, any
    write that would grow a file past `max_bytes`, as a full disk refuses one with ENOSPC. (CPython ignores
    SIGXFSZ, so the write fails instead of killing the process.)"""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __enter__(self) -> None:
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_bytes, self.saved[1]))

    def __exit__(self, *_: object) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)


def _integrity(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchall()


def test_a_write_the_disk_refuses_is_a_clear_refusal_and_leaves_the_buffer_intact(tmp_path):
    path = tmp_path / "buffer.sqlite"
    buffer = DurableBuffer(path)
    with FileSizeLimit(256 * 1024):
        stored = 0
        with pytest.raises(BufferFull, match=r"could not store the message: disk I/O error \(the disk holding it "
                                             r"is full or failing\); free disk space on the gateway"):
            while True:
                buffer.append("readings", None, stored.to_bytes(4, "big") * 100, priority=DEVICE)
                stored += 1
        # Far more than the ~15 that fit the write-ahead log alone: on the first refusal the buffer checkpointed the
        # log into the database and truncated it, which made room. Nothing of the refused message is stored.
        assert stored > 50
        assert buffer.depth() == stored and buffer.size_bytes() == 400 * stored
        seqs = [row.seq for row in buffer.pending(stored + 1)]
        with pytest.raises(BufferWriteFailed, match=f"could not remove {stored} acknowledged messages: disk I/O "
                                                    "error; they will be sent again"):
            buffer.ack(seqs)  # the log and the database both reached the limit: not even a delete fits
        assert buffer.depth() == stored  # all kept, to be sent again
    buffer.ack(seqs)  # the disk has room again
    buffer.append("readings", None, b"after", priority=DEVICE)
    assert (buffer.depth(), buffer.size_bytes()) == (1, 5)
    buffer.close()
    assert _integrity(path) == [("ok",)]
    reopened = DurableBuffer(path)
    assert [row.value for row in reopened.pending(10)] == [b"after"]
