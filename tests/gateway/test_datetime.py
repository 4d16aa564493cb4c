"""GSS Date Time (7 bytes): device-local ISO text, unknown dates, invalid components (ble_health.md §4)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError
from gateway.codecs import datetime as date_time


def _field(year: int, month: int, day: int, hours: int = 0, minutes: int = 0, seconds: int = 0) -> bytes:
    return year.to_bytes(2, "little") + bytes([month, day, hours, minutes, seconds])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes.fromhex("E807 01 02 0C 1E 2D"), "2024-01-02T12:30:45"),
        (_field(1582, 1, 1), "1582-01-01T00:00:00"),
        (_field(9999, 12, 31, 23, 59, 59), "9999-12-31T23:59:59"),
        (_field(2024, 2, 29), "2024-02-29T00:00:00"),
        # Year, month or day 0 means "unknown": the device clock is not set (§4 Policy).
        (_field(0, 0, 0), None),
        (_field(0, 5, 17, 8), None),
        (_field(2024, 0, 17, 8), None),
        (_field(2024, 5, 0, 8), None),
    ],
)
def test_decode(data: bytes, expected: str | None) -> None:
    assert date_time.decode(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_field(2024, 13, 1), "invalid date: month 13"),
        (_field(2024, 1, 32), "invalid date: day 32"),
        (_field(1581, 1, 1), "invalid date: year 1581"),
        (_field(1, 1, 1), "invalid date: year 1"),
        (_field(10000, 1, 1), "invalid date: year 10000"),
        (_field(2024, 1, 1, 24), "invalid time: hours 24"),
        (_field(2024, 1, 1, 0, 60), "invalid time: minutes 60"),
        (_field(2024, 1, 1, 0, 0, 60), "invalid time: seconds 60"),
        (_field(2023, 2, 29), "invalid date: 2023-02-29"),
        (_field(2024, 4, 31), "invalid date: 2024-04-31"),
        # Out of range beats "unknown": month 13 is corruption, not an unset clock.
        (_field(0, 13, 1), "invalid date: month 13"),
        (_field(0, 0, 0, 24), "invalid time: hours 24"),
        (bytes(6), "Date Time needs 7 bytes, got 6"),
    ],
)
def test_decode_rejects(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        date_time.decode(data)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-01-02T12:30:45", bytes.fromhex("E807 01 02 0C 1E 2D")),
        (dt.datetime(2024, 1, 2, 12, 30, 45, 999_999), bytes.fromhex("E807 01 02 0C 1E 2D")),
        (None, bytes(7)),
    ],
)
def test_encode(timestamp: str | dt.datetime | None, expected: bytes) -> None:
    assert date_time.encode(timestamp) == expected


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        ("2024-01-02T12:30:45+01:00", "Date Time is device-local and has no time zone; pass a naive time"),
        ("1500-01-01T00:00:00", "Date Time year must be 1582..9999, got 1500"),
    ],
)
def test_encode_rejects(timestamp: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        date_time.encode(timestamp)
    assert str(error.value) == message


@given(st.datetimes(min_value=dt.datetime(1582, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)))
def test_round_trip(moment: dt.datetime) -> None:
    assert date_time.decode(date_time.encode(moment)) == moment.replace(microsecond=0).isoformat()
