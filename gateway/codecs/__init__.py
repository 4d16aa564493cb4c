"""Decoders (and encoders, for emulated devices) of the BLE payloads the edge gateway reads.

``decode(uuid, payload)`` picks the decoder by characteristic or service-data UUID (ble_health.md §1
[AN-UUID], [AN-MEMBER]) and returns a JSON-ready dict; malformed input raises ``DecodeError`` and
nothing else. One module per spec, each with its layout table, decoder, encoder and constants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.codecs import blood_pressure, bthome, heart_rate, plx, temperature, weight
from gateway.codecs.bthome import encode as encode_bthome
from gateway.codecs.errors import DecodeError

__all__ = ["DecodeError", "decode", "encode_bthome", "short_uuid"]

_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"  # 0000XXXX-0000-1000-8000-00805f9b34fb (§1)

_DECODERS: dict[int, Callable[[bytes], dict[str, Any]]] = {
    temperature.UUID: temperature.decode,
    temperature.INTERMEDIATE_UUID: temperature.decode_intermediate,
    blood_pressure.UUID: blood_pressure.decode,
    blood_pressure.INTERMEDIATE_CUFF_PRESSURE_UUID: blood_pressure.decode_intermediate_cuff_pressure,
    plx.SPOT_CHECK_UUID: plx.decode_spot_check,
    plx.CONTINUOUS_UUID: plx.decode_continuous,
    heart_rate.UUID: heart_rate.decode,
    weight.UUID: weight.decode,
}


def decode(
    uuid: str | int, payload: bytes, *, mac: str | None = None, key: bytes | None = None
) -> dict[str, Any]:
    """Decode ``payload`` as the characteristic or service data named by ``uuid``.

    ``uuid`` may be ``0x2A1C``, ``"2a1c"``, ``"0x2A1C"`` or the 128-bit
    ``"00002a1c-0000-1000-8000-00805f9b34fb"``. ``mac`` and ``key`` only matter for encrypted BTHome.
    """
    short = short_uuid(uuid)
    if short == bthome.UUID:
        return bthome.decode(bytes(payload), mac=mac, key=key)
    decoder = _DECODERS.get(short)
    if decoder is None:
        raise DecodeError(f"no decoder for UUID 0x{short:04X}")
    return decoder(bytes(payload))


def short_uuid(uuid: str | int) -> int:
    """The 16-bit form of a UUID given as an int, hex text or a Bluetooth-base 128-bit UUID."""
    if isinstance(uuid, int):
        if not 0 <= uuid <= 0xFFFF:
            raise DecodeError(f"not a 16-bit UUID: {uuid:#x}")
        return uuid
    text = uuid.strip().lower()
    if len(text) == 36 and text.startswith("0000") and text.endswith(_BASE_UUID_SUFFIX):
        text = text[4:8]
    text = text.removeprefix("0x")
    if not 1 <= len(text) <= 4 or any(char not in "0123456789abcdef" for char in text):
        raise DecodeError(f"not a 16-bit or Bluetooth-base UUID: {uuid!r}")
    return int(text, 16)
