"""The 7-byte GSS Date Time field ("Time Stamp" in every measurement here), both directions.

Layout [GSS-DT] (ble_health.md §4): year uint16 LE (1582-9999, 0 = unknown), month (1-12, 0 = unknown),
day (1-31, 0 = unknown), hours (0-23), minutes (0-59), seconds (0-59). There is no time zone, so the
result is naive device-local ISO text ``YYYY-MM-DDTHH:MM:SS`` for the gateway to store next to its own
receive time [NORDIC-DT], [LABMCP].

**Policy** (ble_health.md §4): year, month or day 0 decodes to ``None``; a component out of its range,
or a date that does not exist (2023-02-30), is a ``DecodeError``. Ranges are checked before the
unknown-date rule, so month 13 with year 0 is still an error: it means corruption, not "unknown".
"""

from __future__ import annotations

import datetime as dt

from gateway.codecs.errors import DecodeError

SIZE = 7

# (component, first valid, last valid, "date"/"time" for the message); 0 is also allowed for the date.
_RANGES = (
    ("year", 1582, 9999, "date"),
    ("month", 1, 12, "date"),
    ("day", 1, 31, "date"),
    ("hours", 0, 23, "time"),
    ("minutes", 0, 59, "time"),
    ("seconds", 0, 59, "time"),
)


def decode(data: bytes) -> str | None:
    """Device-local ISO text, or ``None`` when the device does not know the date."""
    if len(data) != SIZE:
        raise DecodeError(f"Date Time needs {SIZE} bytes, got {len(data)}")
    components = (int.from_bytes(data[0:2], "little"), *data[2:7])
    for value, (name, low, high, kind) in zip(components, _RANGES, strict=True):
        unknown = kind == "date" and value == 0
        if not unknown and not low <= value <= high:
            raise DecodeError(f"invalid {kind}: {name} {value}")
    year, month, day, hours, minutes, seconds = components
    if 0 in (year, month, day):
        return None
    try:
        moment = dt.datetime(year, month, day, hours, minutes, seconds)
    except ValueError:
        raise DecodeError(f"invalid date: {year:04d}-{month:02d}-{day:02d}") from None
    return moment.isoformat()


def encode(timestamp: str | dt.datetime | None) -> bytes:
    """The field for a naive local time (ISO text or datetime); ``None`` sends the all-zero "unknown".

    Date Time has whole seconds, so microseconds are dropped.
    """
    if timestamp is None:
        return bytes(SIZE)
    moment = dt.datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    if moment.tzinfo is not None:
        raise ValueError("Date Time is device-local and has no time zone; pass a naive time")
    if not 1582 <= moment.year <= 9999:
        raise ValueError(f"Date Time year must be 1582..9999, got {moment.year}")
    return moment.year.to_bytes(2, "little") + bytes(
        (moment.month, moment.day, moment.hour, moment.minute, moment.second)
    )
