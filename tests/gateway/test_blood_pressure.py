"""Blood Pressure Measurement 0x2A35 / Intermediate Cuff Pressure 0x2A36 (ble_health.md §6, [GSS-BPM])."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, blood_pressure
from gateway.codecs.ieee11073 import SFLOAT, SpecialValue

MMHG_120_80_90 = bytes.fromhex("7800 5000 5A00")
KPA_16_0_10_7_12_5 = bytes.fromhex("A0F0 6BF0 7DF0")  # 160e-1, 107e-1, 125e-1
TIME_STAMP = bytes.fromhex("E807 01 02 0C 1E 2D")
PULSE_72 = bytes.fromhex("4800")
USER_3 = bytes([3])
STATUS = bytes.fromhex("0D00")  # body movement, irregular pulse, pulse rate above the upper limit


@pytest.mark.parametrize("flags", range(0x20))
def test_every_flag_combination(flags: int) -> None:
    kpa, has_time, has_pulse, has_user, has_status = (bool(flags & 1 << bit) for bit in range(5))
    payload = (
        bytes([flags])
        + (KPA_16_0_10_7_12_5 if kpa else MMHG_120_80_90)
        + (TIME_STAMP if has_time else b"")
        + (PULSE_72 if has_pulse else b"")
        + (USER_3 if has_user else b"")
        + (STATUS if has_status else b"")
    )
    if kpa:
        pressures = {
            "systolic_mmhg": 120.0,  # 16.0 kPa = 120.0099 mmHg
            "diastolic_mmhg": 80.3,  # 10.7 kPa = 80.2566 mmHg
            "map_mmhg": 93.8,  # 12.5 kPa = 93.7577 mmHg
            "device_unit": "kPa",
            "systolic_kpa": 16.0,
            "diastolic_kpa": 10.7,
            "map_kpa": 12.5,
        }
    else:
        pressures = {"systolic_mmhg": 120.0, "diastolic_mmhg": 80.0, "map_mmhg": 90.0, "device_unit": "mmHg"}
    assert blood_pressure.decode(payload) == {"characteristic": "blood_pressure_measurement"} | pressures | {
        "timestamp": "2024-01-02T12:30:45" if has_time else None,
        "pulse_rate_bpm": 72.0 if has_pulse else None,
        "user_id": 3 if has_user else None,
        "measurement_status": ["body_movement", "irregular_pulse"] if has_status else None,
        "pulse_rate_range": "above_upper_limit" if has_status else None,
    }


def test_intermediate_cuff_pressure_publishes_only_the_cuff_pressure() -> None:
    payload = bytes.fromhex("01 A0F0 FF07 FF07")  # kPa; diastolic and MAP unused (NaN) [GSS-ICP]
    assert blood_pressure.decode_intermediate_cuff_pressure(payload) == {
        "characteristic": "intermediate_cuff_pressure",
        "cuff_pressure_mmhg": 120.0,
        "device_unit": "kPa",
        "cuff_pressure_kpa": 16.0,
        "timestamp": None,
        "pulse_rate_bpm": None,
        "user_id": None,
        "measurement_status": None,
        "pulse_rate_range": None,
    }


@pytest.mark.parametrize("special", list(SpecialValue))
@pytest.mark.parametrize("kpa", [False, True])
def test_special_values_stay_named(special: SpecialValue, kpa: bool) -> None:
    """A MAP the device does not compute is NaN: published as "NaN", never as a number (§6)."""
    payload = bytes([kpa]) + (KPA_16_0_10_7_12_5 if kpa else MMHG_120_80_90)[:4] + SFLOAT.encode(special)
    decoded = blood_pressure.decode(payload)
    assert decoded["map_mmhg"] is special
    assert decoded.get("map_kpa", special) is special


@pytest.mark.parametrize(
    ("status", "names", "pulse_rate_range"),
    [
        (0x0000, [], "in_range"),
        (0x0001, ["body_movement"], "in_range"),
        (0x0002, ["cuff_too_loose"], "in_range"),
        (0x0004, ["irregular_pulse"], "in_range"),
        (0x0008, [], "above_upper_limit"),
        (0x0010, [], "below_lower_limit"),
        (0x0018, [], "reserved"),
        (0x0020, ["improper_position"], "in_range"),
        (0x0027, ["body_movement", "cuff_too_loose", "irregular_pulse", "improper_position"], "in_range"),
        (0xFFC0, [], "in_range"),  # RFU status bits 6-15 are ignored
    ],
)
def test_measurement_status(status: int, names: list[str], pulse_rate_range: str) -> None:
    decoded = blood_pressure.decode(b"\x10" + MMHG_120_80_90 + status.to_bytes(2, "little"))
    assert (decoded["measurement_status"], decoded["pulse_rate_range"]) == (names, pulse_rate_range)


@pytest.mark.parametrize(("raw", "user_id"), [(0, 0), (1, 1), (0xFE, 0xFE), (0xFF, None)])
def test_user_id(raw: int, user_id: int | None) -> None:
    assert blood_pressure.decode(b"\x08" + MMHG_120_80_90 + bytes([raw]))["user_id"] == user_id


FULL = b"\x1f" + KPA_16_0_10_7_12_5 + TIME_STAMP + PULSE_72 + USER_3 + STATUS


@pytest.mark.parametrize("length", range(len(FULL)))
def test_truncated_at_every_length(length: int) -> None:
    with pytest.raises(DecodeError, match=r"^truncated: "):
        blood_pressure.decode(FULL[:length])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated: flags need 1 byte, 0 left"),
        (b"\x00" + MMHG_120_80_90[:5], "truncated: mean_arterial_pressure needs 2 bytes, 1 left"),
        (b"\x08" + MMHG_120_80_90, "truncated: user_id needs 1 byte, 0 left"),
        (FULL[:-1], "truncated: measurement_status needs 2 bytes, 1 left"),
        (FULL + b"\x00\x00", "trailing bytes: 2"),
        (b"\x00" + MMHG_120_80_90 + PULSE_72, "trailing bytes: 2"),
        (b"\x02" + MMHG_120_80_90 + bytes.fromhex("E807 01 20 0C 1E 2D"), "invalid date: day 32"),
        (b"\x20" + MMHG_120_80_90, "reserved flag bits set: 0x20"),
        (b"\x40" + MMHG_120_80_90, "reserved flag bits set: 0x40"),
        (b"\x80" + MMHG_120_80_90, "reserved flag bits set: 0x80"),
    ],
)
def test_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        blood_pressure.decode(payload)
    assert str(error.value) == message


def test_encode() -> None:
    assert (
        blood_pressure.encode(
            Decimal("16.0"),
            10.7,
            12.5,
            unit="kPa",
            timestamp="2024-01-02T12:30:45",
            pulse_rate_bpm=72,
            user_id=3,
            measurement_status=["irregular_pulse", "body_movement"],
            pulse_rate_range="above_upper_limit",
        )
        == FULL
    )
    assert blood_pressure.encode(120, 80, 90) == b"\x00" + MMHG_120_80_90
    assert blood_pressure.encode(120, 80, 90, pulse_rate_range="below_lower_limit") == (
        b"\x10" + MMHG_120_80_90 + bytes.fromhex("1000")
    )
    assert blood_pressure.encode_intermediate_cuff_pressure(150) == bytes.fromhex("00 9600 FF07 FF07")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": "Pa"}, "unit must be 'mmHg' or 'kPa', got 'Pa'"),
        ({"user_id": 256}, "user id must be 0..255, got 256"),
        ({"measurement_status": ["cuff_too_tight"]}, "unknown blood pressure status 'CUFF_TOO_TIGHT'"),
        ({"pulse_rate_range": "high"}, "unknown blood pressure status 'HIGH'"),
    ],
)
def test_encode_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        blood_pressure.encode(120, 80, 90, **kwargs)
    assert str(error.value) == message


SFLOATS = st.one_of(
    st.sampled_from(list(SpecialValue)),
    st.builds(lambda m, e: float(Decimal(m).scaleb(e)), st.integers(-2045, 2045), st.integers(-2, 1)),
)
STATUS_NAMES = [flag.name.lower() for flag in blood_pressure.MeasurementStatus]
RANGES = [member.name.lower() for member in blood_pressure.PulseRateRange]


@given(
    pressures=st.tuples(SFLOATS, SFLOATS, SFLOATS),
    unit=st.sampled_from(["mmHg", "kPa"]),
    timestamp=st.none()
    | st.datetimes(min_value=dt.datetime(1582, 1, 1)).map(lambda m: m.replace(microsecond=0)),
    pulse_rate_bpm=st.none() | SFLOATS,
    user_id=st.none() | st.integers(0, 0xFE),
    status=st.none() | st.tuples(st.sets(st.sampled_from(STATUS_NAMES)), st.sampled_from(RANGES)),
)
def test_round_trip(pressures, unit, timestamp, pulse_rate_bpm, user_id, status) -> None:
    names, pulse_rate_range = status if status is not None else (None, None)
    payload = blood_pressure.encode(
        *pressures,
        unit=unit,
        timestamp=None if timestamp is None else timestamp.isoformat(),
        pulse_rate_bpm=pulse_rate_bpm,
        user_id=user_id,
        measurement_status=names,
        pulse_rate_range=pulse_rate_range,
    )
    decoded = blood_pressure.decode(payload)
    as_sent = {"systolic": pressures[0], "diastolic": pressures[1], "map": pressures[2]}
    if unit == "mmHg":
        expected = {f"{name}_mmhg": value for name, value in as_sent.items()} | {"device_unit": "mmHg"}
    else:
        expected = (
            {f"{name}_mmhg": _approx_mmhg(value) for name, value in as_sent.items()}
            | {"device_unit": "kPa"}
            | {f"{name}_kpa": value for name, value in as_sent.items()}
        )
    assert decoded == {"characteristic": "blood_pressure_measurement"} | expected | {
        "timestamp": None if timestamp is None else timestamp.isoformat(),
        "pulse_rate_bpm": pulse_rate_bpm,
        "user_id": user_id,
        "measurement_status": None if names is None else [name for name in STATUS_NAMES if name in names],
        "pulse_rate_range": pulse_rate_range,
    }


def _approx_mmhg(kpa):
    return kpa if isinstance(kpa, SpecialValue) else pytest.approx(kpa * 7.50062, abs=0.05 + 1e-4 * abs(kpa))
