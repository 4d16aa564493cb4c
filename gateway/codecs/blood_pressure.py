"""Blood Pressure Measurement 0x2A35 and Intermediate Cuff Pressure 0x2A36, both directions.

Layout [GSS-BPM] (ble_health.md §6): flags; systolic, diastolic and mean arterial pressure as three
SFLOATs (mmHg, or kPa when flag bit 0 is set); Time Stamp (bit 1); pulse rate SFLOAT bpm (bit 2);
User ID uint8 (bit 3); Measurement Status uint16 (bit 4). Bits 5-7 are RFU.

Output for ``1E 7800 5000 5A00 E807 0102 0C00 00 4800 01 0500`` (mmHg, every optional field)::

    {"characteristic": "blood_pressure_measurement", "systolic_mmhg": 120.0, "diastolic_mmhg": 80.0,
     "map_mmhg": 90.0, "device_unit": "mmHg", "timestamp": "2024-01-02T12:00:00",
     "pulse_rate_bpm": 72.0, "user_id": 1, "measurement_status": ["body_movement", "irregular_pulse"],
     "pulse_rate_range": "in_range"}

- kPa devices also get ``systolic_kpa``, ``diastolic_kpa``, ``map_kpa``; the mmHg keys are then
  kPa x 1000 / 133.322387415 [MMHG], rounded half-up to 0.1 mmHg: a 0.1 kPa step is 0.75 mmHg, so a
  second decimal would be false precision, and clinical BP is charted in whole mmHg anyway.
- A special value stays a ``SpecialValue`` string (a MAP the device does not compute is ``"NaN"``).
- ``user_id`` is ``None`` when absent or 0xFF "unknown user" [GSS-BPM]: either way the gateway must
  attribute the reading some other way.
- ``measurement_status`` lists the named status bits; ``pulse_rate_range`` names bits 3-4 (value 3 is
  RFU: ``"reserved"``). Both are ``None`` when the status field is absent. Status bits 6-15 are RFU
  and ignored: they sit inside a field, so they cannot shift any offset (unlike RFU *flag* bits).
- Intermediate Cuff Pressure uses the layout for a running inflation: the systolic slot is the current
  cuff pressure and diastolic/MAP are unused [GSS-ICP]. It is published as ``cuff_pressure_mmhg``
  (and ``cuff_pressure_kpa``) without diastolic/MAP, so that no consumer can mistake an inflation
  pressure for a systolic blood pressure.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from enum import IntEnum, IntFlag
from typing import Any, Literal

from gateway.codecs import datetime as date_time
from gateway.codecs.fields import Field, pack, read_fields, uint
from gateway.codecs.ieee11073 import SFLOAT, Encodable, Reading, SpecialValue

UUID = 0x2A35
INTERMEDIATE_CUFF_PRESSURE_UUID = 0x2A36

PA_PER_MMHG = Decimal("133.322387415")  # [MMHG]
UNKNOWN_USER = 0xFF  # [GSS-BPM]


class Flags(IntFlag):
    KPA = 0x01
    TIME_STAMP = 0x02
    PULSE_RATE = 0x04
    USER_ID = 0x08
    MEASUREMENT_STATUS = 0x10


RFU_FLAGS = 0xE0


class MeasurementStatus(IntFlag):
    """Single-bit conditions of the Measurement Status field [GSS-BPM]."""

    BODY_MOVEMENT = 1 << 0
    CUFF_TOO_LOOSE = 1 << 1
    IRREGULAR_PULSE = 1 << 2
    IMPROPER_POSITION = 1 << 5


class PulseRateRange(IntEnum):
    """Measurement Status bits 3-4 [GSS-BPM]; 3 is RFU."""

    IN_RANGE = 0
    ABOVE_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2


PULSE_RATE_RANGE_SHIFT = 3


LAYOUT = (
    Field("systolic", SFLOAT.size, SFLOAT.decode),
    Field("diastolic", SFLOAT.size, SFLOAT.decode),
    Field("mean_arterial_pressure", SFLOAT.size, SFLOAT.decode),
    Field("timestamp", date_time.SIZE, date_time.decode, Flags.TIME_STAMP),
    Field("pulse_rate", SFLOAT.size, SFLOAT.decode, Flags.PULSE_RATE),
    Field("user_id", 1, uint, Flags.USER_ID),
    Field("measurement_status", 2, uint, Flags.MEASUREMENT_STATUS),
)


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a Blood Pressure Measurement (0x2A35) value."""
    flags, fields = read_fields(payload, LAYOUT, RFU_FLAGS)
    result: dict[str, Any] = {"characteristic": "blood_pressure_measurement"}
    pressures = {"systolic": fields["systolic"], "diastolic": fields["diastolic"]}
    result |= _pressures(flags, **pressures, map=fields["mean_arterial_pressure"])
    return result | _optional_fields(fields)


def decode_intermediate_cuff_pressure(payload: bytes) -> dict[str, Any]:
    """Decode an Intermediate Cuff Pressure (0x2A36) value: only the cuff pressure slot [GSS-ICP]."""
    flags, fields = read_fields(payload, LAYOUT, RFU_FLAGS)
    result: dict[str, Any] = {"characteristic": "intermediate_cuff_pressure"}
    result |= _pressures(flags, cuff_pressure=fields["systolic"])
    return result | _optional_fields(fields)


def encode(
    systolic: Encodable,
    diastolic: Encodable,
    mean_arterial_pressure: Encodable,
    *,
    unit: Literal["mmHg", "kPa"] = "mmHg",
    timestamp: str | None = None,
    pulse_rate_bpm: Encodable | None = None,
    user_id: int | None = None,
    measurement_status: Iterable[str] | None = None,
    pulse_rate_range: str | None = None,
) -> bytes:
    """A value with pressures in the device ``unit``; ``None`` leaves an optional field out.

    SFLOAT exponents follow each value's decimal digits (``Decimal("16.0")`` kPa is 160e-1).
    The status field is sent when ``measurement_status`` (status names) or ``pulse_rate_range`` is
    given; the missing one defaults to no bits / ``"in_range"``.
    """
    if unit not in ("mmHg", "kPa"):
        raise ValueError(f"unit must be 'mmHg' or 'kPa', got {unit!r}")
    fields = {
        "systolic": SFLOAT.encode(systolic),
        "diastolic": SFLOAT.encode(diastolic),
        "mean_arterial_pressure": SFLOAT.encode(mean_arterial_pressure),
    }
    if timestamp is not None:
        fields["timestamp"] = date_time.encode(timestamp)
    if pulse_rate_bpm is not None:
        fields["pulse_rate"] = SFLOAT.encode(pulse_rate_bpm)
    if user_id is not None:
        if not 0 <= user_id <= UNKNOWN_USER:
            raise ValueError(f"user id must be 0..255, got {user_id}")
        fields["user_id"] = bytes([user_id])
    if measurement_status is not None or pulse_rate_range is not None:
        status = _status_word(measurement_status or (), pulse_rate_range or "in_range")
        fields["measurement_status"] = status.to_bytes(2, "little")
    return pack(Flags.KPA if unit == "kPa" else 0, fields, LAYOUT)


def encode_intermediate_cuff_pressure(
    cuff_pressure: Encodable,
    *,
    unit: Literal["mmHg", "kPa"] = "mmHg",
    timestamp: str | None = None,
    pulse_rate_bpm: Encodable | None = None,
    user_id: int | None = None,
    measurement_status: Iterable[str] | None = None,
    pulse_rate_range: str | None = None,
) -> bytes:
    """An Intermediate Cuff Pressure value: the unused diastolic and MAP slots are sent as NaN."""
    return encode(
        cuff_pressure,
        SpecialValue.NAN,
        SpecialValue.NAN,
        unit=unit,
        timestamp=timestamp,
        pulse_rate_bpm=pulse_rate_bpm,
        user_id=user_id,
        measurement_status=measurement_status,
        pulse_rate_range=pulse_rate_range,
    )


def _pressures(flags: int, **pressures: Reading) -> dict[str, Any]:
    """``<name>_mmhg`` for each pressure, plus the device's own kPa values when it sends kPa."""
    if not flags & Flags.KPA:
        return {f"{name}_mmhg": value for name, value in pressures.items()} | {"device_unit": "mmHg"}
    return (
        {f"{name}_mmhg": _kpa_to_mmhg(value) for name, value in pressures.items()}
        | {"device_unit": "kPa"}
        | {f"{name}_kpa": value for name, value in pressures.items()}
    )


def _optional_fields(fields: dict[str, Any]) -> dict[str, Any]:
    user_id = fields.get("user_id")
    status = fields.get("measurement_status")
    return {
        "timestamp": fields.get("timestamp"),
        "pulse_rate_bpm": fields.get("pulse_rate"),
        "user_id": None if user_id == UNKNOWN_USER else user_id,
        "measurement_status": None if status is None else _status_names(status),
        "pulse_rate_range": None if status is None else _range_name(status),
    }


def _kpa_to_mmhg(kpa: Reading) -> Reading:
    if isinstance(kpa, SpecialValue):
        return kpa
    mmhg = Decimal(repr(kpa)) * 1000 / PA_PER_MMHG
    return float(mmhg.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _status_names(status: int) -> list[str]:
    return [name.lower() for name, flag in MeasurementStatus.__members__.items() if status & flag]


def _range_name(status: int) -> str:
    try:
        return PulseRateRange((status >> PULSE_RATE_RANGE_SHIFT) & 0b11).name.lower()
    except ValueError:
        return "reserved"


def _status_word(names: Iterable[str], pulse_rate_range: str) -> int:
    try:
        word = sum(MeasurementStatus[name.upper()] for name in set(names))
        return word | PulseRateRange[pulse_rate_range.upper()] << PULSE_RATE_RANGE_SHIFT
    except KeyError as error:
        raise ValueError(f"unknown blood pressure status {error.args[0]!r}") from None
