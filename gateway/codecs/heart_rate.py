"""Heart Rate Measurement 0x2A37, both directions.

Layout [GSS-HRM], [XML-HRM] (ble_health.md §9): flags; heart rate uint8 (bit 0 clear) or uint16
(bit 0 set) bpm; Energy Expended uint16 kJ (bit 3); then RR-intervals, uint16 in 1/1024 s, as many as
the remaining bytes hold, oldest first (bit 4). Bits 1-2 are Sensor Contact; bits 5-7 are RFU.

Output for ``16 48 0004 0002`` (contact detected, 72 bpm, RR 1000 ms and 500 ms)::

    {"characteristic": "heart_rate_measurement", "heart_rate_bpm": 72, "sensor_contact": "detected",
     "energy_expended_kj": None, "rr_intervals_ms": [1000.0, 500.0]}

- ``sensor_contact``: bits 1-2 value 0 or 1 → ``"not_supported"``, 2 → ``"not_detected"``,
  3 → ``"detected"`` [XML-HRM].
- ``energy_expended_kj``: kJ, as every decoder checked does although the GSS unit line says joule
  (ble_health.md §9 Note).
- ``rr_intervals_ms``: raw x 1000/1024, rounded half-up to 3 dp (0.001 ms is far below any
  physiological meaning, and the encoder's raw = round(ms x 1.024) recovers the raw value exactly).
- **Policy** (ble_health.md §9): the RR flag with no value after it, or an odd trailing byte, is a
  ``DecodeError`` (Nordic and labmcp drop the odd byte silently [NORDIC-HR], [LABMCP]).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from enum import IntEnum, IntFlag
from typing import Any

from gateway.codecs.errors import DecodeError
from gateway.codecs.fields import Field, read_fields, uint

UUID = 0x2A37

RR_UNITS_PER_SECOND = 1024  # [XML-HRM]


class Flags(IntFlag):
    HEART_RATE_UINT16 = 0x01
    SENSOR_CONTACT = 0x06  # two-bit field, see SensorContact
    ENERGY_EXPENDED = 0x08
    RR_INTERVALS = 0x10


RFU_FLAGS = 0xE0
SENSOR_CONTACT_SHIFT = 1


class SensorContact(IntEnum):
    """Flags bits 1-2 [XML-HRM]; 0 and 1 both mean "not supported in this connection"."""

    NOT_SUPPORTED = 0
    NOT_DETECTED = 2
    DETECTED = 3


def _rr_ms(chunk: bytes) -> float:
    milliseconds = Decimal(uint(chunk)) * 1000 / RR_UNITS_PER_SECOND
    return float(milliseconds.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


LAYOUT = (
    Field("heart_rate_bpm", 1, uint, Flags.HEART_RATE_UINT16, if_clear=True),
    Field("heart_rate_bpm", 2, uint, Flags.HEART_RATE_UINT16),
    Field("energy_expended_kj", 2, uint, Flags.ENERGY_EXPENDED),
    Field("rr_interval", 2, _rr_ms, Flags.RR_INTERVALS, repeats=True),
)


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a Heart Rate Measurement (0x2A37) value."""
    flags, fields = read_fields(payload, LAYOUT, RFU_FLAGS)
    rr_intervals = fields.get("rr_interval")
    if rr_intervals == []:  # the flag promises at least one (§9 Policy)
        raise DecodeError("RR-interval flag set but no RR-interval follows")
    return {
        "characteristic": "heart_rate_measurement",
        "heart_rate_bpm": fields["heart_rate_bpm"],
        "sensor_contact": _contact_name(flags),
        "energy_expended_kj": fields.get("energy_expended_kj"),
        "rr_intervals_ms": rr_intervals,
    }


def encode(
    heart_rate_bpm: int,
    *,
    sensor_contact: str = "not_supported",
    energy_expended_kj: int | None = None,
    rr_intervals_ms: Sequence[float] | None = None,
    uint16: bool | None = None,
) -> bytes:
    """A value; ``None`` leaves an optional field out.

    The heart rate goes out as uint8 when it fits, unless ``uint16`` forces a width. Each RR-interval
    is sent as round(ms x 1.024) in 1/1024 s.
    """
    wide = heart_rate_bpm > 0xFF if uint16 is None else uint16
    try:
        contact = SensorContact[sensor_contact.upper()]
    except KeyError:
        raise ValueError(f"unknown sensor contact state {sensor_contact!r}") from None
    flags = (Flags.HEART_RATE_UINT16 if wide else 0) | contact << SENSOR_CONTACT_SHIFT
    body = _uint_bytes("heart rate", heart_rate_bpm, 2 if wide else 1)
    if energy_expended_kj is not None:
        flags |= Flags.ENERGY_EXPENDED
        body += _uint_bytes("energy expended", energy_expended_kj, 2)
    if rr_intervals_ms is not None:
        if not rr_intervals_ms:
            raise ValueError("the RR-interval flag announces one or more values: pass None for none")
        flags |= Flags.RR_INTERVALS
        body += b"".join(_rr_bytes(milliseconds) for milliseconds in rr_intervals_ms)
    return bytes([flags]) + body


def _contact_name(flags: int) -> str:
    code = (flags & Flags.SENSOR_CONTACT) >> SENSOR_CONTACT_SHIFT
    # Value 1 is the second "not supported" code [XML-HRM].
    return SensorContact(code if code != 1 else SensorContact.NOT_SUPPORTED).name.lower()


def _rr_bytes(milliseconds: float) -> bytes:
    raw = Decimal(repr(milliseconds)) * RR_UNITS_PER_SECOND / 1000
    # Range-check before rounding: NaN or a huge value would make quantize raise InvalidOperation.
    if not raw.is_finite() or not Decimal("-0.5") < raw < Decimal("65535.5"):
        raise ValueError(f"RR-interval {milliseconds} ms does not fit 16 bits of 1/1024 s")
    return int(raw.quantize(Decimal(1), rounding=ROUND_HALF_UP)).to_bytes(2, "little")


def _uint_bytes(what: str, value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{what} {value} does not fit {size * 8} bits")
    return value.to_bytes(size, "little")
