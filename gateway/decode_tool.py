"""``carepulse decode``: decode one payload given as hex and print the result as one JSON line.

For installers checking a device by hand: ``carepulse decode --uuid 2a1c 04740100FF06`` prints the
same dict the gateway would publish, or ``{"error": "..."}`` with the reason and exit status 1.
"""

from __future__ import annotations

import json
from typing import TextIO

from gateway.codecs import DecodeError, decode
from gateway.codecs.bthome import KEY_SIZE


def run(uuid: str, hex_payload: str, *, mac: str | None, key_hex: str | None, stdout: TextIO) -> int:
    """Print the decoded JSON and return 0, or print ``{"error": reason}`` and return 1."""
    try:
        payload = _from_hex(hex_payload, "payload")
        key = None if key_hex is None else _from_hex(key_hex, "key")
        if key is not None and len(key) != KEY_SIZE:
            raise DecodeError(f"key must be {KEY_SIZE} bytes ({2 * KEY_SIZE} hex digits), got {len(key)}")
        result = decode(uuid, payload, mac=mac, key=key)
    except DecodeError as error:
        print(json.dumps({"error": str(error)}, ensure_ascii=False), file=stdout)
        return 1
    print(json.dumps(result, ensure_ascii=False, allow_nan=False), file=stdout)
    return 0


def _from_hex(text: str, what: str) -> bytes:
    """Hex digits, with optional spaces or colons between bytes and an optional ``0x``."""
    cleaned = text.strip().removeprefix("0x").removeprefix("0X").replace(":", " ")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise DecodeError(f"{what} is not hex: {text!r}") from None
