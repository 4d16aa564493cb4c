"""Weight Measurement 0x2A9D, both directions.

Layout [GSS-WM], [XML-WM] (ble_health.md §10): flags; weight uint16 (SI: x 0.005 kg, imperial:
x 0.01 lb; flag bit 0 picks the system for weight and height); Time Stamp (bit 1); User ID uint8
(bit 2); BMI uint16 x 0.1 kg/m² and Height uint16 (SI: x 0.001 m, imperial: x 0.1 in), both on bit 3.
Bits 4-7 are RFU. Resolutions are always the GSS ones, whatever the Weight Scale Feature advertises
(ble_health.md §10 Note, against [SPEZI]).

Output for ``0C B036 01 DD00 F406`` (SI, 70 kg, user 1, BMI 22.1, 1.78 m)::

    {"characteristic": "weight_measurement", "weight_kg": 70.0, "device_unit": "kg",
     "measurement_unsuccessful": False, "timestamp": None, "user_id": 1, "bmi": 22.1,
     "height_m": 1.78}

- Imperial devices also get ``weight_lb`` and ``height_in``; ``weight_kg`` and ``height_m`` are then
  converted with 1 lb = 0.45359237 kg and 1 in = 0.0254 m and rounded half-up to 3 dp (the SI
  resolutions are 0.005 kg and 1 mm).
- Weight 0xFFFF means "measurement unsuccessful" [LABMCP], [WSS], [RW-WSC]: ``weight_kg`` (and
  ``weight_lb``) are ``None`` and ``measurement_unsuccessful`` is ``True``. BMI and height, which
  should not accompany it, are still decoded as sent: the offsets are unambiguous and the flag tells
  consumers not to trust them.
- ``user_id`` is ``None`` when absent or 0xFF "unknown user" [XML-WM].
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import IntFlag
from typing import Any, Literal

from gateway.codecs import datetime as date_time
from gateway.codecs.fields import Field, pack, read_fields, uint

UUID = 0x2A9D

MEASUREMENT_UNSUCCESSFUL = 0xFFFF
UNKNOWN_USER = 0xFF
KG_PER_LB = Decimal("0.45359237")
M_PER_IN = Decimal("0.0254")

# Resolution of one raw step [GSS-WM].
WEIGHT_KG = Decimal("0.005")
WEIGHT_LB = Decimal("0.01")
BMI = Decimal("0.1")
HEIGHT_M = Decimal("0.001")
HEIGHT_IN = Decimal("0.1")


class Flags(IntFlag):
    IMPERIAL = 0x01
    TIME_STAMP = 0x02
    USER_ID = 0x04
    BMI_AND_HEIGHT = 0x08


RFU_FLAGS = 0xF0


LAYOUT = (
    Field("weight", 2, uint),
    Field("timestamp", date_time.SIZE, date_time.decode, Flags.TIME_STAMP),
    Field("user_id", 1, uint, Flags.USER_ID),
    Field("bmi", 2, uint, Flags.BMI_AND_HEIGHT),
    Field("height", 2, uint, Flags.BMI_AND_HEIGHT),
)


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a Weight Measurement (0x2A9D) value."""
    flags, fields = read_fields(payload, LAYOUT, RFU_FLAGS)
    imperial = bool(flags & Flags.IMPERIAL)
    raw_weight = fields["weight"]
    unsuccessful = raw_weight == MEASUREMENT_UNSUCCESSFUL
    weight = None if unsuccessful else _scaled(raw_weight, WEIGHT_LB if imperial else WEIGHT_KG)
    raw_height = fields.get("height")
    height = None if raw_height is None else _scaled(raw_height, HEIGHT_IN if imperial else HEIGHT_M)
    user_id = fields.get("user_id")
    result: dict[str, Any] = {"characteristic": "weight_measurement"}
    if imperial:
        result |= {"weight_kg": _converted(weight, KG_PER_LB), "device_unit": "lb", "weight_lb": weight}
    else:
        result |= {"weight_kg": weight, "device_unit": "kg"}
    result |= {
        "measurement_unsuccessful": unsuccessful,
        "timestamp": fields.get("timestamp"),
        "user_id": None if user_id == UNKNOWN_USER else user_id,
        "bmi": None if "bmi" not in fields else _scaled(fields["bmi"], BMI),
        "height_m": _converted(height, M_PER_IN) if imperial else height,
    }
    if imperial:
        result["height_in"] = height
    return result


def encode(
    weight: float | None,
    *,
    unit: Literal["kg", "lb"] = "kg",
    timestamp: str | None = None,
    user_id: int | None = None,
    bmi: float | None = None,
    height: float | None = None,
) -> bytes:
    """A value with weight (and height) in the device's system: kg and m, or lb and in.

    ``weight=None`` sends 0xFFFF "measurement unsuccessful". Values are rounded half-up to the GSS
    resolution. BMI and height share one flag, so give both or neither.
    """
    if unit not in ("kg", "lb"):
        raise ValueError(f"unit must be 'kg' or 'lb', got {unit!r}")
    imperial = unit == "lb"
    if weight is None:
        raw_weight = MEASUREMENT_UNSUCCESSFUL
    else:
        # 0xFFFF is taken by "measurement unsuccessful", so the largest weight is one step below.
        resolution = WEIGHT_LB if imperial else WEIGHT_KG
        raw_weight = _raw("weight", weight, resolution, MEASUREMENT_UNSUCCESSFUL - 1)
    fields = {"weight": raw_weight.to_bytes(2, "little")}
    if timestamp is not None:
        fields["timestamp"] = date_time.encode(timestamp)
    if user_id is not None:
        fields["user_id"] = _raw("user id", user_id, Decimal(1), 0xFF).to_bytes(1, "little")
    if (bmi is None) != (height is None):
        raise ValueError("BMI and height share one flag: give both or neither")
    if bmi is not None and height is not None:
        fields["bmi"] = _raw("BMI", bmi, BMI, 0xFFFF).to_bytes(2, "little")
        raw_height = _raw("height", height, HEIGHT_IN if imperial else HEIGHT_M, 0xFFFF)
        fields["height"] = raw_height.to_bytes(2, "little")
    return pack(Flags.IMPERIAL if imperial else 0, fields, LAYOUT)


def _scaled(raw: int, resolution: Decimal) -> float:
    return float(raw * resolution)


def _converted(value: float | None, factor: Decimal) -> float | None:
    if value is None:
        return None
    return float((Decimal(repr(value)) * factor).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def _raw(what: str, value: float, resolution: Decimal, largest: int) -> int:
    steps = Decimal(repr(value)) / resolution
    # Range-check before rounding: NaN or a huge value would make quantize raise InvalidOperation.
    if not steps.is_finite() or not Decimal("-0.5") < steps < largest + Decimal("0.5"):
        raise ValueError(f"{what} {value} is out of range 0..{largest * resolution}")
    return int(steps.quantize(Decimal(1), rounding=ROUND_HALF_UP))
