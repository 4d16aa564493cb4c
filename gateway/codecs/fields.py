"""The layout table shared by the GATT characteristic codecs: one row type, one walker, one packer.

Every GATT health measurement here is a flags byte followed by fields in a fixed order, each optional
field announced by a flag bit (ble_health.md §2). A module describes its characteristic as a table
of ``Field`` rows; ``read_fields`` walks a payload along that table and ``pack`` builds one, so
adding a field is adding a row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gateway.codecs.errors import DecodeError


class Field(NamedTuple):
    """One layout row: a field, its size, its decoder and the flag bit announcing it (0 = always).

    ``if_clear`` rows are announced by the bit being *clear* instead: heart rate is uint8 when its
    bit is clear and uint16 (the next row) when set. A ``repeats`` row is read as many times as the
    remaining bytes hold, into a list (heart rate's RR-intervals).
    """

    name: str
    size: int
    decode: Callable[[bytes], Any]
    flag: int = 0
    if_clear: bool = False
    repeats: bool = False


Layout = tuple[Field, ...]


def uint(chunk: bytes) -> int:
    """An unsigned little-endian integer field."""
    return int.from_bytes(chunk, "little")


def read_fields(payload: bytes, layout: Layout, rfu_flags: int) -> tuple[int, dict[str, Any]]:
    """The walker: flags, then each announced field in table order (ble_health.md §2 Policy).

    Returns the flags byte and the decoded fields by row name; an absent field has no key.
    """
    if not payload:
        raise DecodeError("truncated: flags need 1 byte, 0 left")
    flags = payload[0]
    if flags & rfu_flags:
        raise DecodeError(f"reserved flag bits set: {flags & rfu_flags:#04x}")
    fields: dict[str, Any] = {}
    offset = 1
    for field in layout:
        if field.flag and bool(flags & field.flag) == field.if_clear:  # not announced: not sent
            continue
        if field.repeats:
            fields[field.name] = []
            while offset < len(payload):
                fields[field.name].append(field.decode(_chunk(payload, offset, field)))
                offset += field.size
        else:
            fields[field.name] = field.decode(_chunk(payload, offset, field))
            offset += field.size
    if offset < len(payload):
        raise DecodeError(f"trailing bytes: {len(payload) - offset}")
    return flags, fields


def pack(status_flags: int, fields: dict[str, bytes], layout: Layout) -> bytes:
    """The walker's inverse: a flag bit for each optional field given, then the fields in table order.

    ``status_flags`` are the bits that announce no field (unit, clock not set). Heart rate, whose
    flags also pick a width (an ``if_clear`` row) and carry the sensor contact, builds its own value.
    """
    flags = status_flags
    for field in layout:
        if field.name in fields:
            flags |= field.flag
    return bytes([flags]) + b"".join(fields[field.name] for field in layout if field.name in fields)


def _chunk(payload: bytes, offset: int, field: Field) -> bytes:
    chunk = payload[offset : offset + field.size]
    if len(chunk) < field.size:
        unit = "byte" if field.size == 1 else "bytes"
        raise DecodeError(f"truncated: {field.name} needs {field.size} {unit}, {len(chunk)} left")
    return chunk
