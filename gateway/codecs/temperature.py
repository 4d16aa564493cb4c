"""Temperature Measurement 0x2A1C and Intermediate Temperature 0x2A1E, both directions.

Layout [GSS-TM], [GSS-IT] (ble_health.md §5): flags, then a FLOAT temperature (°C, or °F when flag
bit 0 is set), a Time Stamp (bit 1) and a Temperature Type byte (bit 2); bits 3-7 are RFU.
Intermediate Temperature has the same layout and carries interim readings shown while a measurement
runs, so only the ``characteristic`` name differs; consumers must not chart it as a final reading.

Output for ``04 74 01 00 FF 06`` (37.2 °C, type present: mouth)::

    {"characteristic": "temperature_measurement", "temperature_c": 37.2, "device_unit": "C",
     "timestamp": None, "temperature_type": "mouth"}

A °F device also gets ``"device_value"`` (the °F reading); ``temperature_c`` is then
(F - 32) x 5/9 rounded half-up to 3 dp (ble_health.md §5 Note). A special value stays a
``SpecialValue`` string in both. Temperature type 0 and 10-255 are RFU enumeration values: the reading
is kept and the type reported as ``"reserved"`` (ble_health.md §2 Policy) [GSS-TT].
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import IntEnum, IntFlag
from typing import Any, Literal

from gateway.codecs import datetime as date_time
from gateway.codecs.fields import Field, pack, read_fields, uint
from gateway.codecs.ieee11073 import FLOAT, Encodable, Reading, SpecialValue

UUID = 0x2A1C
INTERMEDIATE_UUID = 0x2A1E


class Flags(IntFlag):
    FAHRENHEIT = 0x01
    TIME_STAMP = 0x02
    TEMPERATURE_TYPE = 0x04


RFU_FLAGS = 0xF8


class TemperatureType(IntEnum):
    """Where the temperature was taken [GSS-TT]."""

    ARMPIT = 1
    BODY = 2
    EAR = 3  # usually earlobe
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9  # ear drum


LAYOUT = (
    Field("temperature", FLOAT.size, FLOAT.decode),
    Field("timestamp", date_time.SIZE, date_time.decode, Flags.TIME_STAMP),
    Field("temperature_type", 1, uint, Flags.TEMPERATURE_TYPE),
)


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a Temperature Measurement (0x2A1C) value."""
    return _decode(payload, "temperature_measurement")


def decode_intermediate(payload: bytes) -> dict[str, Any]:
    """Decode an Intermediate Temperature (0x2A1E) value: same layout, interim reading [GSS-IT]."""
    return _decode(payload, "intermediate_temperature")


def encode(
    temperature: Encodable,
    *,
    unit: Literal["C", "F"] = "C",
    timestamp: str | None = None,
    temperature_type: int | str | None = None,
) -> bytes:
    """A value for ``temperature`` in the device ``unit``; ``None`` leaves an optional field out.

    The FLOAT exponent follows the value's decimal digits (see ``Medfloat.to_word``), so pass
    ``Decimal("37.20")`` for a two-decimal device. ``temperature_type`` is a code or a type name.
    """
    if unit not in ("C", "F"):
        raise ValueError(f"unit must be 'C' or 'F', got {unit!r}")
    fields = {"temperature": FLOAT.encode(temperature)}
    if timestamp is not None:
        fields["timestamp"] = date_time.encode(timestamp)
    if temperature_type is not None:
        fields["temperature_type"] = bytes([_type_code(temperature_type)])
    return pack(Flags.FAHRENHEIT if unit == "F" else 0, fields, LAYOUT)


def _decode(payload: bytes, characteristic: str) -> dict[str, Any]:
    flags, fields = read_fields(payload, LAYOUT, RFU_FLAGS)
    temperature: Reading = fields["temperature"]
    result: dict[str, Any] = {"characteristic": characteristic}
    if flags & Flags.FAHRENHEIT:
        result["temperature_c"] = _fahrenheit_to_celsius(temperature)
        result["device_unit"] = "F"
        result["device_value"] = temperature
    else:
        result["temperature_c"] = temperature
        result["device_unit"] = "C"
    result["timestamp"] = fields.get("timestamp")
    code = fields.get("temperature_type")
    result["temperature_type"] = None if code is None else _type_name(code)
    return result


def _fahrenheit_to_celsius(fahrenheit: Reading) -> Reading:
    if isinstance(fahrenheit, SpecialValue):
        return fahrenheit
    # A FLOAT reaches 8.4e133; rounding that to 0.001 needs ~140 significant digits, not the default 28.
    with localcontext(prec=160):
        celsius = (Decimal(repr(fahrenheit)) - 32) * 5 / 9
        return float(celsius.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def _type_name(code: int) -> str:
    try:
        return TemperatureType(code).name.lower()
    except ValueError:
        return "reserved"


def _type_code(temperature_type: int | str) -> int:
    if isinstance(temperature_type, str):
        try:
            return TemperatureType[temperature_type.upper()]
        except KeyError:
            raise ValueError(f"unknown temperature type {temperature_type!r}") from None
    if not 0 <= temperature_type <= 0xFF:
        raise ValueError(f"temperature type code must be 0..255, got {temperature_type}")
    return temperature_type
