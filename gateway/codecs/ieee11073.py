"""IEEE 11073-20601 SFLOAT (16 bit) and FLOAT (32 bit) numbers, both directions.

A word is a two's-complement exponent above a two's-complement mantissa, value = mantissa x 10^exponent,
sent little-endian [PHD-WP], [HL7-FLOATS] (ble_health.md §3). They are *not* IEEE-754 floats
[NORDIC-465], [BLUEZINC-43], and the exponent is not offset-binary [BSIG-IEEE].

Decoding goes through ``Decimal`` so that 0xF174 becomes exactly the float ``37.2`` and not
``37.199999999999996``. The five special words decode to a ``SpecialValue``, never to a number. Only the
exact words count as special (exponent 0): 0xF7FF is the ordinary number 204.7 (ble_health.md §3.1
Note, against the mantissa-only check of [IOS-TOOLBOX], [ANTIDOTE-CONST]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from gateway.codecs.errors import DecodeError


class SpecialValue(StrEnum):
    """A special 11073 word; its JSON form is the string itself [PHD-WP], [HL7-FLOATS]."""

    NAN = "NaN"  # the device has no valid result
    NRES = "NRes"  # not representable at the device's resolution
    POSITIVE_INFINITY = "+INF"
    NEGATIVE_INFINITY = "-INF"
    RESERVED = "reserved"  # RFU word


Reading = float | SpecialValue
"""What a decoded SFLOAT/FLOAT field holds."""

Encodable = float | int | Decimal | SpecialValue
"""What the encoders accept: a number (its decimal digits pick the exponent) or a special value."""


@dataclass(frozen=True)
class Medfloat:
    """One 11073 number format: its width, bit split and special words."""

    name: str
    size: int  # bytes on the wire
    exponent_bits: int
    max_mantissa: int  # largest regular |mantissa|; the words beyond it are the specials [ANTIDOTE-CONST]
    specials: dict[int, SpecialValue]  # exact words, all with exponent 0

    @property
    def mantissa_bits(self) -> int:
        return self.size * 8 - self.exponent_bits

    @property
    def min_exponent(self) -> int:
        return -(1 << (self.exponent_bits - 1))

    @property
    def max_exponent(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    # -- decoding ---------------------------------------------------------------------------------

    def from_word(self, word: int) -> Reading:
        """The value of one word, e.g. ``SFLOAT.from_word(0xF174) == 37.2``."""
        if not 0 <= word < 1 << (self.size * 8):
            raise ValueError(f"{self.name} word out of range: {word:#x}")
        if word in self.specials:
            return self.specials[word]
        mantissa = _signed(word & ((1 << self.mantissa_bits) - 1), self.mantissa_bits)
        exponent = _signed(word >> self.mantissa_bits, self.exponent_bits)
        return float(Decimal(mantissa).scaleb(exponent))

    def decode(self, data: bytes) -> Reading:
        """The value of a little-endian field of exactly ``size`` bytes."""
        if len(data) != self.size:
            raise DecodeError(f"{self.name} needs {self.size} bytes, got {len(data)}")
        return self.from_word(int.from_bytes(data, "little"))

    # -- encoding ---------------------------------------------------------------------------------

    def to_word(self, value: Encodable, exponent: int | None = None) -> int:
        """The word for ``value``, at ``exponent`` if given (rounding half up to that resolution).

        Without an exponent the value's own decimal digits choose it (``Decimal("2.00")`` is 200e-2,
        ``37.2`` is 372e-1); if that mantissa is too wide, the finest exponent whose rounded mantissa
        fits is used, as a device with fewer digits would display it. ``float`` NaN and infinities map
        to the special words. Raises ``ValueError`` when the value cannot fit at all.
        """
        special = _as_special(value)
        if special is not None:
            return next(word for word, meaning in self.specials.items() if meaning is special)
        number = value if isinstance(value, Decimal) else Decimal(repr(value))
        if exponent is None:
            exponent = self._auto_exponent(number)
        elif not self.min_exponent <= exponent <= self.max_exponent:
            raise ValueError(
                f"{self.name} exponent must be {self.min_exponent}..{self.max_exponent}, got {exponent}"
            )
        mantissa = self._mantissa(number, exponent)
        if mantissa is None:
            raise ValueError(
                f"{value} does not fit an {self.name} at exponent {exponent}: "
                f"|mantissa| must be at most {self.max_mantissa}"
            )
        mask = (1 << self.mantissa_bits) - 1
        return ((exponent & ((1 << self.exponent_bits) - 1)) << self.mantissa_bits) | (mantissa & mask)

    def encode(self, value: Encodable, exponent: int | None = None) -> bytes:
        """``to_word`` as the little-endian bytes of the field."""
        return self.to_word(value, exponent).to_bytes(self.size, "little")

    def _auto_exponent(self, number: Decimal) -> int:
        own = number.as_tuple().exponent
        assert isinstance(own, int)  # finite: NaN/Infinity were mapped to specials
        start = min(max(own, self.min_exponent), self.max_exponent)
        for exponent in range(start, self.max_exponent + 1):
            if self._mantissa(number, exponent) is not None:
                return exponent
        raise ValueError(f"{number} is too large for an {self.name}")

    def _mantissa(self, number: Decimal, exponent: int) -> int | None:
        scaled = number.scaleb(-exponent)
        # Compare before rounding: quantize on a huge number would overflow the Decimal context.
        if abs(scaled) > self.max_mantissa + 1:
            return None
        mantissa = int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return mantissa if abs(mantissa) <= self.max_mantissa else None


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw >> (bits - 1) else raw


def _as_special(value: Encodable) -> SpecialValue | None:
    if isinstance(value, SpecialValue):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return SpecialValue.NAN
        return SpecialValue.POSITIVE_INFINITY if value > 0 else SpecialValue.NEGATIVE_INFINITY
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"use SpecialValue instead of Decimal {value}")
    return None


def _medfloat(name: str, size: int, exponent_bits: int) -> Medfloat:
    """A format whose special words are the five mantissas beyond ±(2^(n-1) - 3), at exponent 0.

    n is the mantissa width; the words are the same for both widths [PHD-WP], [HL7-FLOATS], [ANTIDOTE-CONST].
    """
    nan = (1 << (size * 8 - exponent_bits - 1)) - 1  # +(2^(n-1) - 1)
    return Medfloat(
        name=name,
        size=size,
        exponent_bits=exponent_bits,
        max_mantissa=nan - 2,
        specials={
            nan: SpecialValue.NAN,  # 0x07FF, 0x007FFFFF
            nan + 1: SpecialValue.NRES,  # 0x0800, 0x00800000
            nan - 1: SpecialValue.POSITIVE_INFINITY,  # 0x07FE, 0x007FFFFE
            nan + 3: SpecialValue.NEGATIVE_INFINITY,  # 0x0802, 0x00800002
            nan + 2: SpecialValue.RESERVED,  # 0x0801, 0x00800001
        },
    )


SFLOAT = _medfloat("SFLOAT", size=2, exponent_bits=4)
"""GSS ``medfloat16``: 4-bit exponent, 12-bit mantissa [PHD-WP], [HL7-FLOATS]."""

FLOAT = _medfloat("FLOAT", size=4, exponent_bits=8)
"""GSS ``medfloat32``: 8-bit exponent, 24-bit mantissa [HL7-FLOATS], [NORDIC-DATA]."""
