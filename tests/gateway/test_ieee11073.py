"""IEEE 11073 SFLOAT/FLOAT: HL7 examples, special words, exactness, encoder (ble_health.md §3)."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError
from gateway.codecs.ieee11073 import FLOAT, SFLOAT, SpecialValue


@pytest.mark.parametrize(
    ("word", "value"),
    [
        (0xF174, 37.2),  # §3.1 example, sent as 74 F1
        (0xF014, 2.0),  # [HL7-FLOATS]
        (0xE0C8, 2.0),  # 2.00: same number, other precision
        (0x1002, 20.0),
        (0x0B2E, -1234.0),
        (0x0000, 0.0),
        (0x07FD, 2045.0),  # largest regular mantissa [ANTIDOTE-CONST]
        (0x0803, -2045.0),
        (0xF7FF, 204.7),  # mantissa 2047 with exponent -1 is a number, not NaN (§3.1 Note)
        (0xF800, -204.8),
        (0x17FE, 20460.0),
        (0x8001, 1e-08),
        (0x77FF, 20470000000.0),
        (0x7FFF, -10000000.0),
    ],
)
def test_sfloat_word(word: int, value: float) -> None:
    assert SFLOAT.from_word(word) == value


@pytest.mark.parametrize(
    ("word", "value"),
    [
        (0xFF000014, 2.0),  # [HL7-FLOATS]
        (0x00FFFB2E, -1234.0),
        (0xFF000174, 37.2),  # §3.2, sent as 74 01 00 FF
        (0xFE000E88, 37.2),  # 3720e-2
        (0x007FFFFD, 8388605.0),
        (0xFF7FFFFF, 838860.7),  # exponent -1: a number (§3.1 Note applies to FLOAT too)
        (0x81000001, 1e-127),
    ],
)
def test_float_word(word: int, value: float) -> None:
    assert FLOAT.from_word(word) == value


def test_decimal_results_are_exact_floats() -> None:
    assert repr(SFLOAT.from_word(0xF174)) == "37.2"
    assert repr(SFLOAT.from_word(0xF3CB)) == "97.1"
    assert repr(FLOAT.from_word(0xFD0005B1)) == "1.457"


def test_fields_are_little_endian() -> None:
    assert SFLOAT.decode(bytes.fromhex("74F1")) == 37.2
    assert FLOAT.decode(bytes.fromhex("740100FF")) == 37.2


@pytest.mark.parametrize(
    ("medfloat", "word", "special"),
    [
        (SFLOAT, 0x07FF, SpecialValue.NAN),
        (SFLOAT, 0x0800, SpecialValue.NRES),
        (SFLOAT, 0x07FE, SpecialValue.POSITIVE_INFINITY),
        (SFLOAT, 0x0802, SpecialValue.NEGATIVE_INFINITY),
        (SFLOAT, 0x0801, SpecialValue.RESERVED),
        (FLOAT, 0x007FFFFF, SpecialValue.NAN),
        (FLOAT, 0x00800000, SpecialValue.NRES),
        (FLOAT, 0x007FFFFE, SpecialValue.POSITIVE_INFINITY),
        (FLOAT, 0x00800002, SpecialValue.NEGATIVE_INFINITY),
        (FLOAT, 0x00800001, SpecialValue.RESERVED),
    ],
)
def test_special_words_both_directions(medfloat, word: int, special: SpecialValue) -> None:
    assert medfloat.from_word(word) is special
    assert medfloat.to_word(special) == word


def test_special_values_serialise_as_their_names() -> None:
    assert json.dumps([value for value in SpecialValue]) == '["NaN", "NRes", "+INF", "-INF", "reserved"]'


@pytest.mark.parametrize(
    ("number", "special"),
    [
        (math.nan, SpecialValue.NAN),
        (math.inf, SpecialValue.POSITIVE_INFINITY),
        (-math.inf, SpecialValue.NEGATIVE_INFINITY),
    ],
)
def test_non_finite_floats_encode_as_specials(number: float, special: SpecialValue) -> None:
    assert SFLOAT.from_word(SFLOAT.to_word(number)) is special
    assert FLOAT.from_word(FLOAT.to_word(number)) is special


@pytest.mark.parametrize(
    ("medfloat", "value", "exponent", "word"),
    [
        (SFLOAT, 37.2, None, 0xF174),
        (SFLOAT, Decimal("2.0"), None, 0xF014),
        (SFLOAT, Decimal("2.00"), None, 0xE0C8),
        (SFLOAT, 20, 1, 0x1002),
        (SFLOAT, -1234, None, 0x0B2E),
        (SFLOAT, 120, None, 0x0078),
        (SFLOAT, 20450000000, None, 0x77FD),  # too wide at exponent 0: trailing zeros move up
        (SFLOAT, 97.123, None, 0xF3CB),  # too wide: finest exponent that fits, 97.1
        (SFLOAT, 36.65, -1, 0xF16F),  # rounded half up to 36.7
        (SFLOAT, -36.65, -1, 0xFE91),  # and away from zero when negative: -36.7
        (SFLOAT, 1e-12, None, 0x8000),  # below the finest resolution: 0 x 10^-8
        (FLOAT, Decimal("2.0"), None, 0xFF000014),
        (FLOAT, -1234, None, 0x00FFFB2E),
        (FLOAT, 37.2, None, 0xFF000174),
        (FLOAT, 37.2, -2, 0xFE000E88),
    ],
)
def test_encoder_picks_representation(medfloat, value, exponent, word: int) -> None:
    assert medfloat.to_word(value, exponent) == word
    assert medfloat.encode(value, exponent) == word.to_bytes(medfloat.size, "little")


@pytest.mark.parametrize(
    ("medfloat", "value", "exponent", "message"),
    [
        (SFLOAT, 1e12, None, "1000000000000.0 is too large for an SFLOAT"),
        (SFLOAT, 300, -1, "300 does not fit an SFLOAT at exponent -1: |mantissa| must be at most 2045"),
        (SFLOAT, 2046, 0, "2046 does not fit an SFLOAT at exponent 0: |mantissa| must be at most 2045"),
        (SFLOAT, 1, 8, "SFLOAT exponent must be -8..7, got 8"),
        (FLOAT, 1, -129, "FLOAT exponent must be -128..127, got -129"),
        (FLOAT, Decimal("NaN"), None, "use SpecialValue instead of Decimal NaN"),
    ],
)
def test_encoder_rejects_what_does_not_fit(medfloat, value, exponent, message: str) -> None:
    with pytest.raises(ValueError) as error:
        medfloat.to_word(value, exponent)
    assert str(error.value) == message


@pytest.mark.parametrize("data", [b"", b"\x74", b"\x74\xf1\x00"])
def test_decode_needs_exact_size(data: bytes) -> None:
    with pytest.raises(DecodeError, match=f"SFLOAT needs 2 bytes, got {len(data)}"):
        SFLOAT.decode(data)


def test_word_out_of_range_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="SFLOAT word out of range: 0x10000"):
        SFLOAT.from_word(0x10000)


def _sign(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw >> (bits - 1) else raw


def test_every_regular_sfloat_word_round_trips() -> None:
    """Exhaustive: re-encoding a decoded word at its own exponent gives the word back."""
    for word in range(1 << 16):
        value = SFLOAT.from_word(word)
        if isinstance(value, SpecialValue):
            assert word in SFLOAT.specials
            continue
        mantissa, exponent = _sign(word & 0xFFF, 12), _sign(word >> 12, 4)
        if abs(mantissa) <= SFLOAT.max_mantissa:
            assert SFLOAT.to_word(value, exponent) == word


@given(st.integers(0, (1 << 32) - 1))
def test_regular_float_words_round_trip(word: int) -> None:
    value = FLOAT.from_word(word)
    mantissa, exponent = _sign(word & 0xFFFFFF, 24), _sign(word >> 24, 8)
    if isinstance(value, SpecialValue):
        assert word in FLOAT.specials
    elif abs(mantissa) <= FLOAT.max_mantissa:
        assert FLOAT.to_word(value, exponent) == word


@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_sfloat_values_round_trip_without_exponent(mantissa: int, exponent: int) -> None:
    value = float(Decimal(mantissa).scaleb(exponent))
    assert SFLOAT.decode(SFLOAT.encode(value)) == value


@given(st.integers(-0x7FFFFD, 0x7FFFFD), st.integers(-128, 127))
def test_float_values_round_trip_without_exponent(mantissa: int, exponent: int) -> None:
    value = float(Decimal(mantissa).scaleb(exponent))
    assert FLOAT.decode(FLOAT.encode(value)) == value
