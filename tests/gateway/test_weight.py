"""Weight Measurement 0x2A9D (ble_health.md §10, [GSS-WM], [XML-WM])."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, weight

TIME_STAMP = bytes.fromhex("E807 01 02 0C 1E 2D")
USER_2 = bytes([2])
BMI_22_1 = bytes.fromhex("DD00")


@pytest.mark.parametrize("flags", range(0x10))
def test_every_flag_combination(flags: int) -> None:
    imperial, has_time, has_user, has_bmi = (flags >> bit & 1 == 1 for bit in range(4))
    payload = (
        bytes([flags])
        + (bytes.fromhex("4C3C") if imperial else bytes.fromhex("B036"))  # 154.36 lb / 70.0 kg
        + (TIME_STAMP if has_time else b"")
        + (USER_2 if has_user else b"")
        + (BMI_22_1 + (bytes.fromhex("BD02") if imperial else bytes.fromhex("F406")) if has_bmi else b"")
    )
    if imperial:
        measurement = {"weight_kg": 70.017, "device_unit": "lb", "weight_lb": 154.36}  # 70.0165182...
    else:
        measurement = {"weight_kg": 70.0, "device_unit": "kg"}
    expected = (
        {"characteristic": "weight_measurement"}
        | measurement
        | {
            "measurement_unsuccessful": False,
            "timestamp": "2024-01-02T12:30:45" if has_time else None,
            "user_id": 2 if has_user else None,
            "bmi": 22.1 if has_bmi else None,
            "height_m": (1.781 if imperial else 1.78) if has_bmi else None,  # 70.1 in = 1.78054 m
        }
    )
    if imperial:
        expected["height_in"] = 70.1 if has_bmi else None
    assert weight.decode(payload) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            bytes.fromhex("00 FFFF"),
            {
                "weight_kg": None,
                "device_unit": "kg",
                "measurement_unsuccessful": True,
                "timestamp": None,
                "user_id": None,
                "bmi": None,
                "height_m": None,
            },
        ),
        (
            bytes.fromhex("07 FFFF") + TIME_STAMP + USER_2,
            {
                "weight_kg": None,
                "device_unit": "lb",
                "weight_lb": None,
                "measurement_unsuccessful": True,
                "timestamp": "2024-01-02T12:30:45",
                "user_id": 2,
                "bmi": None,
                "height_m": None,
                "height_in": None,
            },
        ),
        (  # BMI/height should not come with it, but the offsets are clear: decoded as sent, flagged.
            bytes.fromhex("08 FFFF") + BMI_22_1 + bytes.fromhex("F406"),
            {
                "weight_kg": None,
                "device_unit": "kg",
                "measurement_unsuccessful": True,
                "timestamp": None,
                "user_id": None,
                "bmi": 22.1,
                "height_m": 1.78,
            },
        ),
    ],
)
def test_measurement_unsuccessful(payload: bytes, expected: dict) -> None:
    assert weight.decode(payload) == {"characteristic": "weight_measurement"} | expected


@pytest.mark.parametrize(
    ("raw", "imperial", "weight_kg"),
    [
        (0, False, 0.0),
        (1, False, 0.005),
        (0xFFFE, False, 327.67),
        (1, True, 0.005),  # 0.01 lb = 0.0045359 kg, half up to 3 dp
        (100, True, 0.454),
        (0xFFFE, True, 297.257),  # 655.34 lb = 297.2572 kg
    ],
)
def test_weight_resolution(raw: int, imperial: bool, weight_kg: float) -> None:
    assert weight.decode(bytes([imperial]) + raw.to_bytes(2, "little"))["weight_kg"] == weight_kg


@pytest.mark.parametrize(("raw", "user_id"), [(0, 0), (0xFE, 0xFE), (0xFF, None)])
def test_unknown_user(raw: int, user_id: int | None) -> None:
    assert weight.decode(b"\x04\xb0\x36" + bytes([raw]))["user_id"] == user_id


FULL = b"\x0f" + bytes.fromhex("4C3C") + TIME_STAMP + USER_2 + BMI_22_1 + bytes.fromhex("BD02")


@pytest.mark.parametrize("length", range(len(FULL)))
def test_truncated_at_every_length(length: int) -> None:
    with pytest.raises(DecodeError, match=r"^truncated: "):
        weight.decode(FULL[:length])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated: flags need 1 byte, 0 left"),
        (b"\x00\xb0", "truncated: weight needs 2 bytes, 1 left"),
        (b"\x08\xb0\x36" + BMI_22_1, "truncated: height needs 2 bytes, 0 left"),
        (FULL + b"\x00", "trailing bytes: 1"),
        (b"\x00\xb0\x36" + USER_2, "trailing bytes: 1"),
        (b"\x02\xb0\x36" + bytes.fromhex("E807 01 02 0C 3C 00"), "invalid time: minutes 60"),
        *(
            (bytes([bit]) + b"\xb0\x36", f"reserved flag bits set: {bit:#04x}")
            for bit in (0x10, 0x20, 0x40, 0x80)
        ),
    ],
)
def test_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        weight.decode(payload)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("args", "kwargs", "payload"),
    [
        ((70,), {}, bytes.fromhex("00 B036")),
        ((70.0024,), {}, bytes.fromhex("00 B036")),  # rounded to the 0.005 kg step
        ((70.0025,), {}, bytes.fromhex("00 B136")),  # half up
        ((None,), {"timestamp": "2024-01-02T12:30:45"}, bytes.fromhex("02 FFFF") + TIME_STAMP),
        (
            (154.36,),
            {"unit": "lb", "timestamp": "2024-01-02T12:30:45", "user_id": 2, "bmi": 22.1, "height": 70.1},
            FULL,
        ),
    ],
)
def test_encode(args: tuple, kwargs: dict, payload: bytes) -> None:
    assert weight.encode(*args, **kwargs) == payload


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((70,), {"unit": "st"}, "unit must be 'kg' or 'lb', got 'st'"),
        ((327.675,), {}, "weight 327.675 is out of range 0..327.670"),  # 0xFFFF is "unsuccessful"
        ((-1,), {}, "weight -1 is out of range 0..327.670"),
        ((float("nan"),), {}, "weight nan is out of range 0..327.670"),
        ((70,), {"bmi": 22.1}, "BMI and height share one flag: give both or neither"),
        ((70,), {"height": 1.78}, "BMI and height share one flag: give both or neither"),
        ((70,), {"user_id": 256}, "user id 256 is out of range 0..255"),
    ],
)
def test_encode_rejects(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        weight.encode(*args, **kwargs)
    assert str(error.value) == message


def _half_up_3dp(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


@given(
    raw_weight=st.none() | st.integers(0, 0xFFFE),
    imperial=st.booleans(),
    timestamp=st.none()
    | st.datetimes(min_value=dt.datetime(1582, 1, 1)).map(lambda m: m.replace(microsecond=0)),
    user_id=st.none() | st.integers(0, 0xFE),
    bmi_and_height=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)
def test_round_trip(raw_weight, imperial: bool, timestamp, user_id, bmi_and_height) -> None:
    step_weight, step_height = (
        (Decimal("0.01"), Decimal("0.1")) if imperial else (Decimal("0.005"), Decimal("0.001"))
    )
    device_weight = None if raw_weight is None else float(raw_weight * step_weight)
    bmi, height = (
        (None, None)
        if bmi_and_height is None
        else (
            float(bmi_and_height[0] * Decimal("0.1")),
            float(bmi_and_height[1] * step_height),
        )
    )
    iso = None if timestamp is None else timestamp.isoformat()
    payload = weight.encode(
        device_weight, unit="lb" if imperial else "kg", timestamp=iso, user_id=user_id, bmi=bmi, height=height
    )
    if imperial:
        units = {
            "weight_kg": None
            if raw_weight is None
            else _half_up_3dp(raw_weight * step_weight * Decimal("0.45359237")),
            "device_unit": "lb",
            "weight_lb": device_weight,
        }
    else:
        units = {"weight_kg": device_weight, "device_unit": "kg"}
    expected = (
        {"characteristic": "weight_measurement"}
        | units
        | {
            "measurement_unsuccessful": raw_weight is None,
            "timestamp": iso,
            "user_id": user_id,
            "bmi": bmi,
            "height_m": height
            if not imperial or height is None
            else _half_up_3dp(bmi_and_height[1] * step_height * Decimal("0.0254")),
        }
    )
    if imperial:
        expected["height_in"] = height
    assert weight.decode(payload) == expected
