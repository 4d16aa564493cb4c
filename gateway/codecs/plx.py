"""PLX Spot-check Measurement 0x2A5E and PLX Continuous Measurement 0x2A5F, both directions.

Spot-check [XML-PLXS] (ble_health.md §7): flags; SpO2 and pulse rate (SFLOAT % / bpm); Time Stamp
(bit 0); Measurement Status uint16 (bit 1); Device and Sensor Status uint24 (bit 2); Pulse Amplitude
Index SFLOAT % (bit 3). Bit 4 "device clock is not set" adds no field; bits 5-7 are RFU.

Continuous [XML-PLXC] (ble_health.md §8): flags; SpO2PR-Normal; SpO2PR-Fast (bit 0); SpO2PR-Slow
(bit 1); Measurement Status (bit 2); Device and Sensor Status (bit 3); Pulse Amplitude Index (bit 4);
bits 5-7 RFU; no timestamp. The status flags sit on *different* bits from the spot-check (§8 Note),
which is why each characteristic has its own ``Flags`` and layout table.

Output for spot-check ``02 6100 4800 8000`` (97 %, 72 bpm, status "validated data")::

    {"characteristic": "plx_spot_check_measurement", "spo2_pct": 97.0, "pulse_rate_bpm": 72.0,
     "timestamp": None, "measurement_status": ["validated_data"], "device_and_sensor_status": None,
     "pulse_amplitude_index_pct": None, "device_clock_not_set": False}

and for continuous ``00 6100 4800``::

    {"characteristic": "plx_continuous_measurement", "spo2_pct": 97.0, "pulse_rate_bpm": 72.0,
     "spo2_fast_pct": None, "pulse_rate_fast_bpm": None, "spo2_slow_pct": None,
     "pulse_rate_slow_bpm": None, "measurement_status": None, "device_and_sensor_status": None,
     "pulse_amplitude_index_pct": None}

Status fields become lists of named bits (``None`` when absent); their RFU bits (measurement status
0-4, device status 16-23) are ignored, as they cannot shift any offset. Special SFLOATs stay
``SpecialValue`` strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntFlag
from typing import Any

from gateway.codecs import datetime as date_time
from gateway.codecs.fields import Field, pack, read_fields, uint
from gateway.codecs.ieee11073 import SFLOAT, Encodable

SPOT_CHECK_UUID = 0x2A5E
CONTINUOUS_UUID = 0x2A5F


class SpotCheckFlags(IntFlag):
    TIME_STAMP = 0x01
    MEASUREMENT_STATUS = 0x02
    DEVICE_AND_SENSOR_STATUS = 0x04
    PULSE_AMPLITUDE_INDEX = 0x08
    DEVICE_CLOCK_NOT_SET = 0x10  # a status bit: no field follows from it


class ContinuousFlags(IntFlag):
    SPO2PR_FAST = 0x01
    SPO2PR_SLOW = 0x02
    MEASUREMENT_STATUS = 0x04
    DEVICE_AND_SENSOR_STATUS = 0x08
    PULSE_AMPLITUDE_INDEX = 0x10


RFU_FLAGS = 0xE0  # bits 5-7 in both characteristics


class MeasurementStatus(IntFlag):
    """Measurement Status (uint16) [XML-PLXS]; bits 0-4 are RFU."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT_DETECTED = 1 << 14
    INVALID_MEASUREMENT_DETECTED = 1 << 15


class DeviceAndSensorStatus(IntFlag):
    """Device and Sensor Status (uint24) [XML-PLXS]; bits 16-23 are RFU."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NONPULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


def _measurement_status(chunk: bytes) -> list[str]:
    return _names(MeasurementStatus, uint(chunk))


def _device_and_sensor_status(chunk: bytes) -> list[str]:
    return _names(DeviceAndSensorStatus, uint(chunk))


SPOT_CHECK_LAYOUT = (
    Field("spo2_pct", SFLOAT.size, SFLOAT.decode),
    Field("pulse_rate_bpm", SFLOAT.size, SFLOAT.decode),
    Field("timestamp", date_time.SIZE, date_time.decode, SpotCheckFlags.TIME_STAMP),
    Field("measurement_status", 2, _measurement_status, SpotCheckFlags.MEASUREMENT_STATUS),
    Field("device_and_sensor_status", 3, _device_and_sensor_status, SpotCheckFlags.DEVICE_AND_SENSOR_STATUS),
    Field("pulse_amplitude_index_pct", SFLOAT.size, SFLOAT.decode, SpotCheckFlags.PULSE_AMPLITUDE_INDEX),
)

CONTINUOUS_LAYOUT = (
    Field("spo2_pct", SFLOAT.size, SFLOAT.decode),
    Field("pulse_rate_bpm", SFLOAT.size, SFLOAT.decode),
    Field("spo2_fast_pct", SFLOAT.size, SFLOAT.decode, ContinuousFlags.SPO2PR_FAST),
    Field("pulse_rate_fast_bpm", SFLOAT.size, SFLOAT.decode, ContinuousFlags.SPO2PR_FAST),
    Field("spo2_slow_pct", SFLOAT.size, SFLOAT.decode, ContinuousFlags.SPO2PR_SLOW),
    Field("pulse_rate_slow_bpm", SFLOAT.size, SFLOAT.decode, ContinuousFlags.SPO2PR_SLOW),
    Field("measurement_status", 2, _measurement_status, ContinuousFlags.MEASUREMENT_STATUS),
    Field("device_and_sensor_status", 3, _device_and_sensor_status, ContinuousFlags.DEVICE_AND_SENSOR_STATUS),
    Field("pulse_amplitude_index_pct", SFLOAT.size, SFLOAT.decode, ContinuousFlags.PULSE_AMPLITUDE_INDEX),
)


def decode_spot_check(payload: bytes) -> dict[str, Any]:
    """Decode a PLX Spot-check Measurement (0x2A5E) value."""
    flags, fields = read_fields(payload, SPOT_CHECK_LAYOUT, RFU_FLAGS)
    return (
        {"characteristic": "plx_spot_check_measurement"}
        | {field.name: fields.get(field.name) for field in SPOT_CHECK_LAYOUT}
        | {"device_clock_not_set": bool(flags & SpotCheckFlags.DEVICE_CLOCK_NOT_SET)}
    )


def decode_continuous(payload: bytes) -> dict[str, Any]:
    """Decode a PLX Continuous Measurement (0x2A5F) value."""
    _, fields = read_fields(payload, CONTINUOUS_LAYOUT, RFU_FLAGS)
    return {"characteristic": "plx_continuous_measurement"} | {
        field.name: fields.get(field.name) for field in CONTINUOUS_LAYOUT
    }


def encode_spot_check(
    spo2_pct: Encodable,
    pulse_rate_bpm: Encodable,
    *,
    timestamp: str | None = None,
    measurement_status: Iterable[str] | None = None,
    device_and_sensor_status: Iterable[str] | None = None,
    pulse_amplitude_index_pct: Encodable | None = None,
    device_clock_not_set: bool = False,
) -> bytes:
    """A spot-check value; ``None`` leaves an optional field out, statuses are lists of bit names."""
    fields = _common_fields(
        spo2_pct, pulse_rate_bpm, measurement_status, device_and_sensor_status, pulse_amplitude_index_pct
    )
    if timestamp is not None:
        fields["timestamp"] = date_time.encode(timestamp)
    status_flags = SpotCheckFlags.DEVICE_CLOCK_NOT_SET if device_clock_not_set else 0
    return pack(status_flags, fields, SPOT_CHECK_LAYOUT)


def encode_continuous(
    spo2_pct: Encodable,
    pulse_rate_bpm: Encodable,
    *,
    spo2_fast_pct: Encodable | None = None,
    pulse_rate_fast_bpm: Encodable | None = None,
    spo2_slow_pct: Encodable | None = None,
    pulse_rate_slow_bpm: Encodable | None = None,
    measurement_status: Iterable[str] | None = None,
    device_and_sensor_status: Iterable[str] | None = None,
    pulse_amplitude_index_pct: Encodable | None = None,
) -> bytes:
    """A continuous value; the Fast and Slow SpO2PR pairs are sent only as whole pairs [XML-PLXC]."""
    fields = _common_fields(
        spo2_pct, pulse_rate_bpm, measurement_status, device_and_sensor_status, pulse_amplitude_index_pct
    )
    for spo2_name, spo2, rate_name, rate in (
        ("spo2_fast_pct", spo2_fast_pct, "pulse_rate_fast_bpm", pulse_rate_fast_bpm),
        ("spo2_slow_pct", spo2_slow_pct, "pulse_rate_slow_bpm", pulse_rate_slow_bpm),
    ):
        if (spo2 is None) != (rate is None):
            raise ValueError(f"{spo2_name} and {rate_name} are one SpO2PR pair: give both or neither")
        if spo2 is not None and rate is not None:
            fields[spo2_name] = SFLOAT.encode(spo2)
            fields[rate_name] = SFLOAT.encode(rate)
    return pack(0, fields, CONTINUOUS_LAYOUT)


def _common_fields(
    spo2_pct: Encodable,
    pulse_rate_bpm: Encodable,
    measurement_status: Iterable[str] | None,
    device_and_sensor_status: Iterable[str] | None,
    pulse_amplitude_index_pct: Encodable | None,
) -> dict[str, bytes]:
    fields = {"spo2_pct": SFLOAT.encode(spo2_pct), "pulse_rate_bpm": SFLOAT.encode(pulse_rate_bpm)}
    if measurement_status is not None:
        fields["measurement_status"] = _bits(MeasurementStatus, measurement_status).to_bytes(2, "little")
    if device_and_sensor_status is not None:
        word = _bits(DeviceAndSensorStatus, device_and_sensor_status)
        fields["device_and_sensor_status"] = word.to_bytes(3, "little")
    if pulse_amplitude_index_pct is not None:
        fields["pulse_amplitude_index_pct"] = SFLOAT.encode(pulse_amplitude_index_pct)
    return fields


def _names(flags: type[IntFlag], word: int) -> list[str]:
    return [name.lower() for name, flag in flags.__members__.items() if word & flag]


def _bits(flags: type[IntFlag], names: Iterable[str]) -> int:
    try:
        return sum(flags[name.upper()] for name in set(names))
    except KeyError as error:
        raise ValueError(f"unknown {flags.__name__} bit {error.args[0]!r}") from None
