"""Temperature Measurement 0x2A1C / Intermediate Temperature 0x2A1E (ble_health.md §5, [GSS-TM])."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, temperature
from gateway.codecs.ieee11073 import SpecialValue

CELSIUS_37_2 = bytes.fromhex("740100FF")  # 372e-1 as FLOAT
FAHRENHEIT_98_6 = bytes.fromhex("DA0300FF")  # 986e-1 as FLOAT
TIME_STAMP = bytes.fromhex("E807 01 02 0C 1E 2D")  # 2024-01-02T12:30:45
MOUTH = bytes([6])


@pytest.mark.parametrize(
    ("fahrenheit", "has_time", "has_type"), list(itertools.product([False, True], repeat=3))
)
def test_every_flag_combination(fahrenheit: bool, has_time: bool, has_type: bool) -> None:
    flags = fahrenheit * 0x01 | has_time * 0x02 | has_type * 0x04
    payload = (
        bytes([flags])
        + (FAHRENHEIT_98_6 if fahrenheit else CELSIUS_37_2)
        + (TIME_STAMP if has_time else b"")
        + (MOUTH if has_type else b"")
    )
    unit = (
        {"temperature_c": 37.0, "device_unit": "F", "device_value": 98.6}
        if fahrenheit
        else {
            "temperature_c": 37.2,
            "device_unit": "C",
        }
    )
    optional = {
        "timestamp": "2024-01-02T12:30:45" if has_time else None,
        "temperature_type": "mouth" if has_type else None,
    }
    assert temperature.decode(payload) == {"characteristic": "temperature_measurement"} | unit | optional
    assert (
        temperature.decode_intermediate(payload)
        == {"characteristic": "intermediate_temperature"} | unit | optional
    )


@pytest.mark.parametrize("special", list(SpecialValue))
@pytest.mark.parametrize("fahrenheit", [False, True])
def test_special_value_stays_named(special: SpecialValue, fahrenheit: bool) -> None:
    """A special value is not converted: a °F device gets the same name in both keys (§5)."""
    device = {"device_unit": "F", "device_value": special} if fahrenheit else {"device_unit": "C"}
    assert temperature.decode(bytes([fahrenheit]) + temperature.FLOAT.encode(special)) == {
        "characteristic": "temperature_measurement",
        "temperature_c": special,
        **device,
        "timestamp": None,
        "temperature_type": None,
    }


@pytest.mark.parametrize(
    ("fahrenheit", "celsius"),
    [
        (Decimal("98.6"), 37.0),
        (Decimal("100.0"), 37.778),  # 37.7777... rounded to 3 dp
        (Decimal("32"), 0.0),
        (Decimal("-40"), -40.0),
        (Decimal("104.99"), 40.55),
        (Decimal("96.35"), 35.75),
        (Decimal("97.7009"), 36.501),  # exactly 36.5005: rounded half up, not to even
        (Decimal("8388605E127"), 4.660336111111111e133),  # largest FLOAT: no Decimal overflow
        (Decimal("-8388605E-128"), -17.778),
    ],
)
def test_fahrenheit_is_converted_to_three_decimals(fahrenheit: Decimal, celsius: float) -> None:
    decoded = temperature.decode(temperature.encode(fahrenheit, unit="F"))
    assert (decoded["temperature_c"], decoded["device_value"]) == (celsius, float(fahrenheit))


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1, "armpit"),
        (2, "body"),
        (3, "ear"),
        (4, "finger"),
        (5, "gastrointestinal_tract"),
        (6, "mouth"),
        (7, "rectum"),
        (8, "toe"),
        (9, "tympanum"),
        # RFU enumeration values keep the reading (§2 Policy).
        (0, "reserved"),
        (10, "reserved"),
        (255, "reserved"),
    ],
)
def test_temperature_types(code: int, name: str) -> None:
    assert temperature.decode(b"\x04" + CELSIUS_37_2 + bytes([code])) == {
        "characteristic": "temperature_measurement",
        "temperature_c": 37.2,
        "device_unit": "C",
        "timestamp": None,
        "temperature_type": name,
    }


def test_unknown_time_stamp_is_null() -> None:
    assert temperature.decode(b"\x02" + CELSIUS_37_2 + bytes(7))["timestamp"] is None


FULL = b"\x07" + FAHRENHEIT_98_6 + TIME_STAMP + MOUTH


@pytest.mark.parametrize("length", range(len(FULL)))
def test_truncated_at_every_length(length: int) -> None:
    with pytest.raises(DecodeError, match=r"^truncated: "):
        temperature.decode(FULL[:length])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated: flags need 1 byte, 0 left"),
        (b"\x00\x74\x01", "truncated: temperature needs 4 bytes, 2 left"),
        (b"\x02" + CELSIUS_37_2 + TIME_STAMP[:3], "truncated: timestamp needs 7 bytes, 3 left"),
        (b"\x04" + CELSIUS_37_2, "truncated: temperature_type needs 1 byte, 0 left"),
        (FULL + b"\x00", "trailing bytes: 1"),
        (b"\x00" + CELSIUS_37_2 + MOUTH, "trailing bytes: 1"),  # type sent without its flag
        (b"\x02" + CELSIUS_37_2 + bytes.fromhex("E807 0D 02 0C 1E 2D"), "invalid date: month 13"),
        *(
            (bytes([bit]) + CELSIUS_37_2, f"reserved flag bits set: {bit:#04x}")
            for bit in (8, 16, 32, 64, 128)
        ),
        (b"\xff" + CELSIUS_37_2, "reserved flag bits set: 0xf8"),
    ],
)
def test_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        temperature.decode(payload)
    assert str(error.value) == message


def test_truncation_message_counts_bytes() -> None:
    with pytest.raises(DecodeError) as error:
        temperature.decode(FULL[:8])
    assert str(error.value) == "truncated: timestamp needs 7 bytes, 3 left"


@pytest.mark.parametrize(
    ("kwargs", "payload"),
    [
        ({"temperature": 37.2}, b"\x00" + CELSIUS_37_2),
        ({"temperature": 98.6, "unit": "F"}, b"\x01" + FAHRENHEIT_98_6),
        (
            {
                "temperature": 98.6,
                "unit": "F",
                "timestamp": "2024-01-02T12:30:45",
                "temperature_type": "mouth",
            },
            FULL,
        ),
        (
            {"temperature": Decimal("37.20"), "temperature_type": 0},
            b"\x04" + bytes.fromhex("880E00FE") + b"\x00",
        ),
        ({"temperature": SpecialValue.NAN}, b"\x00" + bytes.fromhex("FFFF7F00")),
    ],
)
def test_encode(kwargs: dict, payload: bytes) -> None:
    assert temperature.encode(**kwargs) == payload


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 37.2, "unit": "K"}, "unit must be 'C' or 'F', got 'K'"),
        ({"temperature": 37.2, "temperature_type": "nose"}, "unknown temperature type 'nose'"),
        ({"temperature": 37.2, "temperature_type": 256}, "temperature type code must be 0..255, got 256"),
    ],
)
def test_encode_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        temperature.encode(**kwargs)
    assert str(error.value) == message


READINGS = st.one_of(
    st.sampled_from(list(SpecialValue)),
    st.builds(lambda m, e: float(Decimal(m).scaleb(e)), st.integers(-0x7FFFFD, 0x7FFFFD), st.integers(-6, 3)),
)
TIMESTAMPS = st.none() | st.datetimes(min_value=dt.datetime(1582, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0).isoformat()
)


@given(
    value=READINGS,
    unit=st.sampled_from(["C", "F"]),
    timestamp=TIMESTAMPS,
    type_code=st.none() | st.integers(0, 255),
)
def test_round_trip(value, unit: str, timestamp: str | None, type_code: int | None) -> None:
    decoded = temperature.decode(
        temperature.encode(value, unit=unit, timestamp=timestamp, temperature_type=type_code)
    )
    type_names = {member.value: member.name.lower() for member in temperature.TemperatureType}
    if unit == "C":
        reading = {"temperature_c": value, "device_unit": "C"}
    else:
        celsius = (
            value if isinstance(value, SpecialValue) else pytest.approx((value - 32) * 5 / 9, abs=5e-4 + 1e-9)
        )
        reading = {"temperature_c": celsius, "device_unit": "F", "device_value": value}
    assert decoded == {"characteristic": "temperature_measurement"} | reading | {
        "timestamp": timestamp,
        "temperature_type": None if type_code is None else type_names.get(type_code, "reserved"),
    }
