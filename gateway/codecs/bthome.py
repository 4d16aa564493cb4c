"""BTHome v2 service data (UUID 0xFCD2), both directions, with AES-CCM encryption.

Input is the service data *without* the UUID, as bleak and BlueZ hand it over (ble_health.md §11.1):
one device-information byte, then objects. Each object is an id and a fixed-length little-endian value
scaled by the row's factor; text and raw carry a length byte first [BTH-FMT]. ``OBJECT_TYPES`` is the
[BTH-FMT] table (home-assistant/bthome.io ``src/format.html``): adding a sensor is adding a row.

Output for ``40 003F 015E 028208 03AC17 0C830B`` [BTH-ISSUE118]::

    {"encrypted": False, "trigger_based": False,
     "objects": [{"id": 0, "name": "packet_id", "value": 63, "unit": None},
                 {"id": 1, "name": "battery", "value": 94, "unit": "%"},
                 {"id": 2, "name": "temperature", "value": 21.78, "unit": "°C"},
                 {"id": 3, "name": "humidity", "value": 60.6, "unit": "%"},
                 {"id": 12, "name": "voltage", "value": 2.947, "unit": "V"}],
     "counter": None, "unparsed_from_id": None}

Values: numbers are exact decimals (int when the factor is 1); binary sensors are ``bool``; a button
is its event name ("press", ..., "hold_press", "none"); a dimmer is ``{"event", "steps"}``; timestamp is
UTC ISO text ending in ``Z``; text is a string; raw is lowercase hex; firmware is dotted, most
significant part first ("4.2.1.0"). An event id the table does not name is ``"reserved"``, as for
any RFU enumeration value (ble_health.md §2 Policy). Objects stay in payload order and a repeated id
stays repeated: order tells them apart [BTH-FMT].

Names are the [BTH-FMT] property names in snake case. Four binary sensors share their property name
with a numeric sensor (battery, gas, moisture, power); they take the name of their "on" state instead:
``battery_low``, ``gas_detected``, ``moisture_wet``, ``power_on``.

Policies (ble_health.md §11):
- version other than 2, or a reserved info bit (1, 3, 4) set → ``DecodeError`` (bthome-ble still reads
  bit 1 as "MAC included" [BTH-BLE]; the format page calls it reserved);
- an object cut short → the whole frame is a ``DecodeError`` (bthome-ble keeps the earlier ones);
- an unknown object id → parsing stops there and the objects before it are kept, as the spec says
  [BTH-FMT]; ``unparsed_from_id`` reports that id (``None`` when everything was parsed), so an
  out-of-date table shows up in the data instead of silently;
- a binary sensor value other than 0 or 1 → ``DecodeError``: it is out of spec and guessing "on" could
  raise or hide an alarm.

Encryption [BTH-ENC] (ble_health.md §11.4): info byte (bit 0 set), AES-CCM ciphertext, counter uint32
LE, 4-byte MIC; nonce = MAC (written order) + ``D2 FC`` + info byte + counter; no associated data.
The decoder is stateless: it returns ``counter`` and leaves the replay check (counter must increase) and
the downgrade check (plaintext from a device with a key) to the gateway [BTH-ENC], [BTH-BLE].
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from gateway.codecs.errors import DecodeError

UUID = 0xFCD2
UUID_BYTES = UUID.to_bytes(2, "little")  # D2 FC, as sent and as used in the nonce [BTH-ENC]

ENCRYPTED = 0x01
TRIGGER_BASED = 0x04
RESERVED_INFO_BITS = 0x1A  # bits 1, 3, 4
VERSION_SHIFT = 5
VERSION = 2

KEY_SIZE = 16
COUNTER_SIZE = 4
MIC_SIZE = 4


class Kind(Enum):
    """How an object's value bytes become a value."""

    NUMBER = "number"
    BINARY = "binary"
    BUTTON = "button"
    DIMMER = "dimmer"
    TIMESTAMP = "timestamp"
    TEXT = "text"
    RAW = "raw"
    FIRMWARE = "firmware"


class ObjectType(NamedTuple):
    """One row of the object table [BTH-FMT]."""

    name: str
    length: int | None  # value bytes; None: a length byte comes first (text, raw)
    signed: bool = False
    factor: Decimal = Decimal(1)
    unit: str | None = None
    kind: Kind = Kind.NUMBER


def _binary(name: str) -> ObjectType:
    return ObjectType(name, 1, kind=Kind.BINARY)


OBJECT_TYPES: dict[int, ObjectType] = {
    0x00: ObjectType("packet_id", 1),
    0x01: ObjectType("battery", 1, False, Decimal(1), "%"),
    0x02: ObjectType("temperature", 2, True, Decimal("0.01"), "°C"),
    0x03: ObjectType("humidity", 2, False, Decimal("0.01"), "%"),
    0x04: ObjectType("pressure", 3, False, Decimal("0.01"), "hPa"),
    0x05: ObjectType("illuminance", 3, False, Decimal("0.01"), "lx"),
    0x06: ObjectType("mass", 2, False, Decimal("0.01"), "kg"),
    0x07: ObjectType("mass", 2, False, Decimal("0.01"), "lb"),
    0x08: ObjectType("dewpoint", 2, True, Decimal("0.01"), "°C"),
    0x09: ObjectType("count", 1),
    0x0A: ObjectType("energy", 3, False, Decimal("0.001"), "kWh"),
    0x0B: ObjectType("power", 3, False, Decimal("0.01"), "W"),
    0x0C: ObjectType("voltage", 2, False, Decimal("0.001"), "V"),
    0x0D: ObjectType("pm2_5", 2, False, Decimal(1), "µg/m³"),
    0x0E: ObjectType("pm10", 2, False, Decimal(1), "µg/m³"),
    0x0F: _binary("generic_boolean"),
    0x10: _binary("power_on"),
    0x11: _binary("opening"),
    0x12: ObjectType("co2", 2, False, Decimal(1), "ppm"),
    0x13: ObjectType("tvoc", 2, False, Decimal(1), "µg/m³"),
    0x14: ObjectType("moisture", 2, False, Decimal("0.01"), "%"),
    0x15: _binary("battery_low"),
    0x16: _binary("battery_charging"),
    0x17: _binary("carbon_monoxide"),
    0x18: _binary("cold"),
    0x19: _binary("connectivity"),
    0x1A: _binary("door"),
    0x1B: _binary("garage_door"),
    0x1C: _binary("gas_detected"),
    0x1D: _binary("heat"),
    0x1E: _binary("light"),
    0x1F: _binary("lock"),
    0x20: _binary("moisture_wet"),
    0x21: _binary("motion"),
    0x22: _binary("moving"),
    0x23: _binary("occupancy"),
    0x24: _binary("plug"),
    0x25: _binary("presence"),
    0x26: _binary("problem"),
    0x27: _binary("running"),
    0x28: _binary("safety"),
    0x29: _binary("smoke"),
    0x2A: _binary("sound"),
    0x2B: _binary("tamper"),
    0x2C: _binary("vibration"),
    0x2D: _binary("window"),
    0x2E: ObjectType("humidity", 1, False, Decimal(1), "%"),
    0x2F: ObjectType("moisture", 1, False, Decimal(1), "%"),
    0x3A: ObjectType("button", 1, kind=Kind.BUTTON),
    0x3C: ObjectType("dimmer", 2, kind=Kind.DIMMER),
    0x3D: ObjectType("count", 2),
    0x3E: ObjectType("count", 4),
    0x3F: ObjectType("rotation", 2, True, Decimal("0.1"), "°"),
    0x40: ObjectType("distance", 2, False, Decimal(1), "mm"),
    0x41: ObjectType("distance", 2, False, Decimal("0.1"), "m"),
    0x42: ObjectType("duration", 3, False, Decimal("0.001"), "s"),
    0x43: ObjectType("current", 2, False, Decimal("0.001"), "A"),
    0x44: ObjectType("speed", 2, False, Decimal("0.01"), "m/s"),
    0x45: ObjectType("temperature", 2, True, Decimal("0.1"), "°C"),
    0x46: ObjectType("uv_index", 1, False, Decimal("0.1")),
    0x47: ObjectType("volume", 2, False, Decimal("0.1"), "L"),
    0x48: ObjectType("volume", 2, False, Decimal(1), "mL"),
    0x49: ObjectType("volume_flow_rate", 2, False, Decimal("0.001"), "m³/h"),
    0x4A: ObjectType("voltage", 2, False, Decimal("0.1"), "V"),
    0x4B: ObjectType("gas", 3, False, Decimal("0.001"), "m³"),
    0x4C: ObjectType("gas", 4, False, Decimal("0.001"), "m³"),
    0x4D: ObjectType("energy", 4, False, Decimal("0.001"), "kWh"),
    0x4E: ObjectType("volume", 4, False, Decimal("0.001"), "L"),
    0x4F: ObjectType("water", 4, False, Decimal("0.001"), "L"),
    0x50: ObjectType("timestamp", 4, kind=Kind.TIMESTAMP),
    0x51: ObjectType("acceleration", 2, False, Decimal("0.001"), "m/s²"),
    0x52: ObjectType("gyroscope", 2, False, Decimal("0.001"), "°/s"),
    0x53: ObjectType("text", None, kind=Kind.TEXT),
    0x54: ObjectType("raw", None, kind=Kind.RAW),
    0x55: ObjectType("volume_storage", 4, False, Decimal("0.001"), "L"),
    0x56: ObjectType("conductivity", 2, False, Decimal(1), "µS/cm"),
    0x57: ObjectType("temperature", 1, True, Decimal(1), "°C"),
    0x58: ObjectType("temperature", 1, True, Decimal("0.35"), "°C"),
    0x59: ObjectType("count", 1, True),
    0x5A: ObjectType("count", 2, True),
    0x5B: ObjectType("count", 4, True),
    0x5C: ObjectType("power", 4, True, Decimal("0.01"), "W"),
    0x5D: ObjectType("current", 2, True, Decimal("0.001"), "A"),
    0x5E: ObjectType("direction", 2, False, Decimal("0.01"), "°"),
    0x5F: ObjectType("precipitation", 2, False, Decimal(1), "mm"),
    0xF0: ObjectType("device_type_id", 2),
    0xF1: ObjectType("firmware_version", 4, kind=Kind.FIRMWARE),
    0xF2: ObjectType("firmware_version", 3, kind=Kind.FIRMWARE),
}

BUTTON_EVENTS = {
    0x00: "none",  # placeholder, e.g. for the first of two buttons
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}
DIMMER_EVENTS = {0x00: "none", 0x01: "rotate_left", 0x02: "rotate_right"}


# -- decoding --------------------------------------------------------------------------------------


def decode(payload: bytes, *, mac: str | None = None, key: bytes | None = None) -> dict[str, Any]:
    """Decode BTHome v2 service data; ``mac`` and ``key`` are needed only for encrypted frames."""
    if not payload:
        raise DecodeError("truncated: device information byte needs 1 byte, 0 left")
    info = payload[0]
    if info >> VERSION_SHIFT != VERSION:
        raise DecodeError(f"unsupported BTHome version {info >> VERSION_SHIFT}: only version 2 is decoded")
    if info & RESERVED_INFO_BITS:
        raise DecodeError(f"reserved device information bits set: {info & RESERVED_INFO_BITS:#04x}")
    counter = None
    data = payload[1:]
    if info & ENCRYPTED:
        counter, data = _decrypt(info, data, mac, key)
    objects, unparsed_from_id = _read_objects(data)
    return {
        "encrypted": bool(info & ENCRYPTED),
        "trigger_based": bool(info & TRIGGER_BASED),
        "objects": objects,
        "counter": counter,
        "unparsed_from_id": unparsed_from_id,
    }


def _decrypt(info: int, data: bytes, mac: str | None, key: bytes | None) -> tuple[int, bytes]:
    if key is None:
        raise DecodeError("encrypted frame but no key for this device")
    if mac is None:
        raise DecodeError("encrypted frame but no MAC address for this device")
    if len(key) != KEY_SIZE:
        raise DecodeError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    try:
        mac_bytes = _mac_bytes(mac)
    except ValueError as error:
        raise DecodeError(str(error)) from None
    if len(data) < COUNTER_SIZE + MIC_SIZE:
        raise DecodeError(
            f"truncated: encrypted frame needs a {COUNTER_SIZE}-byte counter and a {MIC_SIZE}-byte MIC, "
            f"{len(data)} bytes left"
        )
    ciphertext = data[: -COUNTER_SIZE - MIC_SIZE]
    counter_bytes = data[-COUNTER_SIZE - MIC_SIZE : -MIC_SIZE]
    mic = data[-MIC_SIZE:]
    try:
        plaintext = AESCCM(key, tag_length=MIC_SIZE).decrypt(
            _nonce(mac_bytes, info, counter_bytes), ciphertext + mic, None
        )
    except (InvalidTag, ValueError):
        # ValueError: longer than CCM with a 13-byte nonce allows (64 KiB), so no real frame either.
        raise DecodeError("decryption failed: wrong key or corrupted frame") from None
    return int.from_bytes(counter_bytes, "little"), plaintext


def _read_objects(data: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """The walker: objects until the end, or until the first id the table does not know."""
    objects: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        object_id = data[offset]
        object_type = OBJECT_TYPES.get(object_id)
        if object_type is None:
            return objects, object_id
        offset += 1
        length = object_type.length
        label = f"{object_type.name} (0x{object_id:02X})"
        if length is None:
            if offset == len(data):
                raise DecodeError(f"truncated: {label} needs a length byte, 0 left")
            length = data[offset]
            offset += 1
        value = data[offset : offset + length]
        if len(value) < length:
            unit = "byte" if length == 1 else "bytes"
            raise DecodeError(f"truncated: {label} needs {length} {unit}, {len(value)} left")
        objects.append(
            {
                "id": object_id,
                "name": object_type.name,
                "value": _value(object_type, value),
                "unit": object_type.unit,
            }
        )
        offset += length
    return objects, None


def _value(object_type: ObjectType, data: bytes) -> Any:
    match object_type.kind:
        case Kind.NUMBER:
            raw = int.from_bytes(data, "little", signed=object_type.signed)
            return raw if object_type.factor == 1 else float(raw * object_type.factor)
        case Kind.BINARY:
            if data[0] > 1:
                raise DecodeError(f"invalid {object_type.name} value {data[0]}: a binary sensor sends 0 or 1")
            return data[0] == 1
        case Kind.BUTTON:
            return BUTTON_EVENTS.get(data[0], "reserved")
        case Kind.DIMMER:
            return {"event": DIMMER_EVENTS.get(data[0], "reserved"), "steps": data[1]}
        case Kind.TIMESTAMP:
            moment = dt.datetime.fromtimestamp(int.from_bytes(data, "little"), dt.UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        case Kind.TEXT:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("text object is not valid UTF-8") from None
        case Kind.RAW:
            return data.hex()
        case Kind.FIRMWARE:
            return ".".join(str(part) for part in reversed(data))


# -- encoding (emulated devices) -------------------------------------------------------------------


def encode(
    objects: Iterable[tuple[int, Any]],
    *,
    trigger_based: bool = False,
    mac: str | None = None,
    key: bytes | None = None,
    counter: int = 0,
) -> bytes:
    """Service data (without the UUID) for ``(object id, value)`` pairs, in the order given.

    Values take the decoded form: a number in the row's unit (rounded half-up to its factor), a bool,
    an event name, ``{"event", "steps"}``, ISO text, hex for raw, a dotted firmware version. With a
    ``key`` the frame is encrypted for ``mac`` with ``counter``.
    """
    body = b"".join(_encode_object(object_id, value) for object_id, value in objects)
    info = VERSION << VERSION_SHIFT | (TRIGGER_BASED if trigger_based else 0)
    if key is None:
        return bytes([info]) + body
    if mac is None:
        raise ValueError("an encrypted frame needs the device MAC address for its nonce")
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    if not 0 <= counter < 1 << (8 * COUNTER_SIZE):
        raise ValueError(f"counter must fit uint32, got {counter}")
    info |= ENCRYPTED
    counter_bytes = counter.to_bytes(COUNTER_SIZE, "little")
    nonce = _nonce(_mac_bytes(mac), info, counter_bytes)
    sealed = AESCCM(key, tag_length=MIC_SIZE).encrypt(nonce, body, None)
    return bytes([info]) + sealed[:-MIC_SIZE] + counter_bytes + sealed[-MIC_SIZE:]


def _encode_object(object_id: int, value: Any) -> bytes:
    object_type = OBJECT_TYPES.get(object_id)
    if object_type is None:
        raise ValueError(f"unknown BTHome object id 0x{object_id:02X}")
    data = _value_bytes(object_type, value)
    prefix = bytes([object_id]) if object_type.length is not None else bytes([object_id, len(data)])
    return prefix + data


def _value_bytes(object_type: ObjectType, value: Any) -> bytes:
    name, length = object_type.name, object_type.length
    match object_type.kind:
        case Kind.NUMBER:
            assert length is not None
            steps = Decimal(repr(value)) / object_type.factor
            low = -(1 << (8 * length - 1)) if object_type.signed else 0
            high = (1 << (8 * length - 1) if object_type.signed else 1 << (8 * length)) - 1
            # Range-check before rounding: quantize on a huge value would raise InvalidOperation.
            if not steps.is_finite() or not low - Decimal("0.5") < steps < high + Decimal("0.5"):
                raise ValueError(f"{name} {value} is out of range for this object")
            raw = int(steps.quantize(Decimal(1), rounding=ROUND_HALF_UP))
            return raw.to_bytes(length, "little", signed=object_type.signed)
        case Kind.BINARY:
            if value not in (True, False):
                raise ValueError(f"{name} is a binary sensor: pass True or False, got {value!r}")
            return bytes([int(value)])
        case Kind.BUTTON:
            return bytes([_event_code(BUTTON_EVENTS, name, value)])
        case Kind.DIMMER:
            steps = value["steps"]
            if not 0 <= steps <= 0xFF:
                raise ValueError(f"dimmer steps must be 0..255, got {steps}")
            return bytes([_event_code(DIMMER_EVENTS, name, value["event"]), steps])
        case Kind.TIMESTAMP:
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("a BTHome timestamp is UTC: pass ISO text with 'Z' or an offset")
            return int(moment.timestamp()).to_bytes(4, "little")
        case Kind.TEXT | Kind.RAW:
            data = value.encode("utf-8") if object_type.kind is Kind.TEXT else bytes.fromhex(value)
            if len(data) > 0xFF:
                raise ValueError(f"{name} is at most 255 bytes, got {len(data)}")
            return data
        case Kind.FIRMWARE:
            assert length is not None
            parts = [int(part) for part in value.split(".")]
            if len(parts) != length or not all(0 <= part <= 0xFF for part in parts):
                raise ValueError(f"this firmware version takes {length} parts of 0..255, got {value!r}")
            return bytes(reversed(parts))


def _event_code(events: dict[int, str], name: str, event: str) -> int:
    for code, event_name in events.items():
        if event_name == event:
            return code
    raise ValueError(f"unknown {name} event {event!r}")


# -- shared ----------------------------------------------------------------------------------------


def _nonce(mac_bytes: bytes, info: int, counter_bytes: bytes) -> bytes:
    """MAC (written order) + UUID D2 FC + info byte + counter: 13 bytes [BTH-ENC]."""
    return mac_bytes + UUID_BYTES + bytes([info]) + counter_bytes


def _mac_bytes(mac: str) -> bytes:
    try:
        mac_bytes = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        mac_bytes = b""
    if len(mac_bytes) != 6:
        raise ValueError(f"invalid MAC address {mac!r}: expected six hex bytes like 54:48:E6:8F:80:A5")
    return mac_bytes
