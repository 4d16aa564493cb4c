"""BTHome v2 service data, plain and encrypted (ble_health.md §11, [BTH-FMT], [BTH-ENC])."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, bthome

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # official example [BTH-ENC]
MAC = "54:48:E6:8F:80:A5"
OFFICIAL_FRAME = bytes.fromhex("41 e445f3c9962b 33221100 6c7c4519")  # after the d2fc UUID


def _frame(
    *objects: dict,
    encrypted: bool = False,
    trigger_based: bool = False,
    counter: int | None = None,
    unparsed_from_id: int | None = None,
) -> dict:
    return {
        "encrypted": encrypted,
        "trigger_based": trigger_based,
        "objects": list(objects),
        "counter": counter,
        "unparsed_from_id": unparsed_from_id,
    }


def _object(object_id: int, name: str, value: object, unit: str | None = None) -> dict:
    return {"id": object_id, "name": name, "value": value, "unit": unit}


def test_format_page_example() -> None:
    assert bthome.decode(bytes.fromhex("40 02C409 03BF13")) == _frame(
        _object(0x02, "temperature", 25.0, "°C"), _object(0x03, "humidity", 50.55, "%")
    )


def test_issue_118_example() -> None:
    assert bthome.decode(bytes.fromhex("40 003F 015E 028208 03AC17 0C830B")) == _frame(
        _object(0x00, "packet_id", 63),
        _object(0x01, "battery", 94, "%"),
        _object(0x02, "temperature", 21.78, "°C"),
        _object(0x03, "humidity", 60.6, "%"),
        _object(0x0C, "voltage", 2.947, "V"),
    )


# Every example row of the [BTH-FMT] tables (ble_health.md §11.3 and bthome.io/format).
EXAMPLES = [
    ("0009", "packet_id", 9, None),
    ("0161", "battery", 97, "%"),
    ("02CA09", "temperature", 25.06, "°C"),
    ("03BF13", "humidity", 50.55, "%"),
    ("04138A01", "pressure", 1008.83, "hPa"),
    ("05138A14", "illuminance", 13460.67, "lx"),
    ("065E1F", "mass", 80.3, "kg"),
    ("073E1D", "mass", 74.86, "lb"),
    ("08CA06", "dewpoint", 17.38, "°C"),
    ("0960", "count", 96, None),
    ("0A138A14", "energy", 1346.067, "kWh"),
    ("0B021B00", "power", 69.14, "W"),
    ("0C020C", "voltage", 3.074, "V"),
    ("0D120C", "pm2_5", 3090, "µg/m³"),
    ("0E021C", "pm10", 7170, "µg/m³"),
    ("0F01", "generic_boolean", True, None),
    ("1001", "power_on", True, None),
    ("1100", "opening", False, None),
    ("12E204", "co2", 1250, "ppm"),
    ("133301", "tvoc", 307, "µg/m³"),
    ("14020C", "moisture", 30.74, "%"),
    ("1501", "battery_low", True, None),
    ("1601", "battery_charging", True, None),
    ("1700", "carbon_monoxide", False, None),
    ("1801", "cold", True, None),
    ("1900", "connectivity", False, None),
    ("1A00", "door", False, None),
    ("1B01", "garage_door", True, None),
    ("1C01", "gas_detected", True, None),
    ("1D00", "heat", False, None),
    ("1E01", "light", True, None),
    ("1F01", "lock", True, None),
    ("2001", "moisture_wet", True, None),
    ("2100", "motion", False, None),
    ("2201", "moving", True, None),
    ("2301", "occupancy", True, None),
    ("2400", "plug", False, None),
    ("2500", "presence", False, None),
    ("2601", "problem", True, None),
    ("2701", "running", True, None),
    ("2800", "safety", False, None),
    ("2901", "smoke", True, None),
    ("2A00", "sound", False, None),
    ("2B00", "tamper", False, None),
    ("2C01", "vibration", True, None),
    ("2D01", "window", True, None),
    ("2E23", "humidity", 35, "%"),
    ("2F23", "moisture", 35, "%"),
    ("3A00", "button", "none", None),
    ("3C0103", "dimmer", {"event": "rotate_left", "steps": 3}, None),
    ("3D0960", "count", 24585, None),
    ("3E2A2C0960", "count", 1611213866, None),
    ("3F020C", "rotation", 307.4, "°"),
    ("400C00", "distance", 12, "mm"),
    ("414E00", "distance", 7.8, "m"),
    ("424E3400", "duration", 13.39, "s"),
    ("434E34", "current", 13.39, "A"),
    ("444E34", "speed", 133.9, "m/s"),
    ("451101", "temperature", 27.3, "°C"),
    ("4632", "uv_index", 5.0, None),
    ("478756", "volume", 2215.1, "L"),
    ("48DC87", "volume", 34780, "mL"),
    ("49DC87", "volume_flow_rate", 34.78, "m³/h"),
    ("4A020C", "voltage", 307.4, "V"),
    ("4B138A14", "gas", 1346.067, "m³"),
    ("4C41018A01", "gas", 25821.505, "m³"),
    ("4D12138A14", "energy", 344593.17, "kWh"),
    ("4E87562A01", "volume", 19551.879, "L"),
    ("4F87562A01", "water", 19551.879, "L"),
    ("505D396164", "timestamp", "2023-05-14T19:41:17Z", None),
    ("518756", "acceleration", 22.151, "m/s²"),
    ("528756", "gyroscope", 22.151, "°/s"),
    ("530C48656C6C6F20576F726C6421", "text", "Hello World!", None),
    ("540C48656C6C6F20576F726C6421", "raw", "48656c6c6f20576f726c6421", None),
    ("5587562A01", "volume_storage", 19551.879, "L"),
    ("56E803", "conductivity", 1000, "µS/cm"),
    ("57EA", "temperature", -22, "°C"),
    ("58EA", "temperature", -7.7, "°C"),
    ("59EA", "count", -22, None),
    ("5AEAEA", "count", -5398, None),
    ("5BEA0234EA", "count", -365690134, None),
    ("5C02FBFFFF", "power", -12.78, "W"),
    ("5D02EA", "current", -5.63, "A"),
    ("5E9F8C", "direction", 359.99, "°"),
    ("5FA00F", "precipitation", 4000, "mm"),
    ("F00100", "device_type_id", 1, None),
    ("F100010204", "firmware_version", "4.2.1.0", None),
    ("F2000106", "firmware_version", "6.1.0", None),
]


@pytest.mark.parametrize(("hex_object", "name", "value", "unit"), EXAMPLES)
def test_table_examples(hex_object: str, name: str, value: object, unit: str | None) -> None:
    data = bytes.fromhex(hex_object)
    assert bthome.decode(b"\x40" + data) == _frame(_object(data[0], name, value, unit))
    assert bthome.encode([(data[0], value)]) == b"\x40" + data


def test_examples_cover_every_table_row() -> None:
    assert {bytes.fromhex(row[0])[0] for row in EXAMPLES} == set(bthome.OBJECT_TYPES)


@pytest.mark.parametrize(
    ("hex_object", "value"),
    [
        ("3A00", "none"),
        ("3A01", "press"),
        ("3A02", "double_press"),
        ("3A03", "triple_press"),
        ("3A04", "long_press"),
        ("3A05", "long_double_press"),
        ("3A06", "long_triple_press"),
        ("3A80", "hold_press"),
        ("3A07", "reserved"),  # an event id the table does not name (§2 Policy)
        ("3C0000", {"event": "none", "steps": 0}),
        ("3C020A", {"event": "rotate_right", "steps": 10}),
        ("3C0305", {"event": "reserved", "steps": 5}),
    ],
)
def test_events(hex_object: str, value: object) -> None:
    data = bytes.fromhex(hex_object)
    name = "button" if data[0] == 0x3A else "dimmer"
    assert bthome.decode(b"\x44" + data) == _frame(_object(data[0], name, value), trigger_based=True)


def test_two_buttons_keep_their_order() -> None:
    """The same id may repeat; order tells the objects apart [BTH-FMT]."""
    assert bthome.decode(bytes.fromhex("44 3A00 3A01"))["objects"] == [
        _object(0x3A, "button", "none"),
        _object(0x3A, "button", "press"),
    ]


def test_ids_out_of_order_are_still_parsed() -> None:
    assert bthome.decode(bytes.fromhex("40 0161 0009"))["objects"] == [
        _object(0x01, "battery", 97, "%"),
        _object(0x00, "packet_id", 9),
    ]


def test_info_byte_alone_is_an_empty_frame() -> None:
    assert bthome.decode(b"\x40") == _frame()


def test_unknown_id_stops_parsing_and_keeps_what_came_before() -> None:
    assert bthome.decode(bytes.fromhex("40 0161 3B 02 0009")) == _frame(
        _object(0x01, "battery", 97, "%"), unparsed_from_id=0x3B
    )
    assert bthome.decode(bytes.fromhex("40 FF 0161")) == _frame(unparsed_from_id=0xFF)


MULTI = bytes.fromhex("40 003F 015E 028208 530548656C6C6F 0C830B")


@pytest.mark.parametrize("length", range(1, len(MULTI)))
def test_object_cut_short_at_every_length(length: int) -> None:
    """A cut object voids the whole frame (§11.4 Policy), except at an object boundary."""
    boundaries = {1, 3, 5, 8, 15}
    if length in boundaries:
        assert bthome.decode(MULTI[:length])["unparsed_from_id"] is None
    else:
        with pytest.raises(DecodeError, match=r"^truncated: "):
            bthome.decode(MULTI[:length])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated: device information byte needs 1 byte, 0 left"),
        (bytes.fromhex("40 02C4"), "truncated: temperature (0x02) needs 2 bytes, 1 left"),
        (bytes.fromhex("40 01"), "truncated: battery (0x01) needs 1 byte, 0 left"),
        (bytes.fromhex("40 53"), "truncated: text (0x53) needs a length byte, 0 left"),
        (bytes.fromhex("40 5305 4865"), "truncated: text (0x53) needs 5 bytes, 2 left"),
        (bytes.fromhex("40 5302 FFFE"), "text object is not valid UTF-8"),
        (bytes.fromhex("40 1A02"), "invalid door value 2: a binary sensor sends 0 or 1"),
        (bytes.fromhex("20 02C409"), "unsupported BTHome version 1: only version 2 is decoded"),
        (bytes.fromhex("60 02C409"), "unsupported BTHome version 3: only version 2 is decoded"),
        (bytes.fromhex("00 02C409"), "unsupported BTHome version 0: only version 2 is decoded"),
        # Bit 1 is reserved, not bthome-ble's "MAC included" (§11.2 Policy).
        (bytes.fromhex("42 A5808FE64854 02C409"), "reserved device information bits set: 0x02"),
        (bytes.fromhex("48 02C409"), "reserved device information bits set: 0x08"),
        (bytes.fromhex("50 02C409"), "reserved device information bits set: 0x10"),
    ],
)
def test_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        bthome.decode(payload)
    assert str(error.value) == message


# -- encryption ------------------------------------------------------------------------------------


def test_official_encryption_vector() -> None:
    assert bthome.decode(OFFICIAL_FRAME, mac=MAC, key=KEY) == _frame(
        _object(0x02, "temperature", 25.06, "°C"),
        _object(0x03, "humidity", 50.55, "%"),
        encrypted=True,
        counter=0x00112233,
    )
    assert (
        bthome.encode([(0x02, 25.06), (0x03, 50.55)], mac=MAC, key=KEY, counter=0x00112233) == OFFICIAL_FRAME
    )


@pytest.mark.parametrize("mac", ["5448E68F80A5", "54-48-e6-8f-80-a5", "54:48:e6:8f:80:a5"])
def test_mac_spellings(mac: str) -> None:
    assert bthome.decode(OFFICIAL_FRAME, mac=mac, key=KEY)["counter"] == 0x00112233


def test_encrypted_trigger_based_frame_uses_its_own_info_byte_in_the_nonce() -> None:
    """bleparser hard-codes 0x41 in the nonce, so 0x45 frames never decrypt there (§11.4)."""
    frame = bthome.encode([(0x3A, "press")], trigger_based=True, mac=MAC, key=KEY, counter=7)
    assert frame[0] == 0x45
    assert bthome.decode(frame, mac=MAC, key=KEY) == _frame(
        _object(0x3A, "button", "press"), encrypted=True, trigger_based=True, counter=7
    )


def test_plaintext_frame_decodes_even_with_a_key() -> None:
    """Downgrade detection needs device state, so it belongs to the gateway (§11.4)."""
    assert bthome.decode(bytes.fromhex("40 0161"), mac=MAC, key=KEY)["encrypted"] is False


@pytest.mark.parametrize("position", range(1, len(OFFICIAL_FRAME)))
def test_any_corrupted_byte_fails_decryption(position: int) -> None:
    corrupted = bytearray(OFFICIAL_FRAME)
    corrupted[position] ^= 0x01
    with pytest.raises(DecodeError, match=r"^decryption failed: wrong key or corrupted frame$"):
        bthome.decode(bytes(corrupted), mac=MAC, key=KEY)


@pytest.mark.parametrize(
    ("payload", "mac", "key", "message"),
    [
        (OFFICIAL_FRAME, MAC, None, "encrypted frame but no key for this device"),
        (OFFICIAL_FRAME, None, KEY, "encrypted frame but no MAC address for this device"),
        (OFFICIAL_FRAME, MAC, bytes(16), "decryption failed: wrong key or corrupted frame"),
        (OFFICIAL_FRAME, "54:48:E6:8F:80:A6", KEY, "decryption failed: wrong key or corrupted frame"),
        (OFFICIAL_FRAME, MAC, KEY[:15], "key must be 16 bytes, got 15"),
        (
            OFFICIAL_FRAME,
            "54:48:E6:8F:80",
            KEY,
            "invalid MAC address '54:48:E6:8F:80': expected six hex bytes like 54:48:E6:8F:80:A5",
        ),
        (
            OFFICIAL_FRAME[:8],
            MAC,
            KEY,
            "truncated: encrypted frame needs a 4-byte counter and a 4-byte MIC, 7 bytes left",
        ),
    ],
)
def test_encryption_errors(payload: bytes, mac: str | None, key: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        bthome.decode(payload, mac=mac, key=key)
    assert str(error.value) == message


def test_encrypted_frame_with_no_objects() -> None:
    frame = bthome.encode([], mac=MAC, key=KEY, counter=1)
    assert len(frame) == 1 + 4 + 4
    assert bthome.decode(frame, mac=MAC, key=KEY) == _frame(encrypted=True, counter=1)


@pytest.mark.parametrize(
    ("objects", "kwargs", "message"),
    [
        ([(0x3B, 1)], {}, "unknown BTHome object id 0x3B"),
        ([(0x01, 256)], {}, "battery 256 is out of range for this object"),
        ([(0x02, -327.69)], {}, "temperature -327.69 is out of range for this object"),
        ([(0x1A, 2)], {}, "door is a binary sensor: pass True or False, got 2"),
        ([(0x3A, "squeeze")], {}, "unknown button event 'squeeze'"),
        ([(0x3C, {"event": "rotate_left", "steps": 256})], {}, "dimmer steps must be 0..255, got 256"),
        (
            [(0x50, "2023-05-14T19:41:17")],
            {},
            "a BTHome timestamp is UTC: pass ISO text with 'Z' or an offset",
        ),
        ([(0x53, "x" * 256)], {}, "text is at most 255 bytes, got 256"),
        ([(0xF2, "6.1.0.0")], {}, "this firmware version takes 3 parts of 0..255, got '6.1.0.0'"),
        ([], {"key": KEY}, "an encrypted frame needs the device MAC address for its nonce"),
        ([], {"key": KEY[:8], "mac": MAC}, "key must be 16 bytes, got 8"),
        ([], {"key": KEY, "mac": MAC, "counter": 1 << 32}, "counter must fit uint32, got 4294967296"),
    ],
)
def test_encode_rejects(objects: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        bthome.encode(objects, **kwargs)
    assert str(error.value) == message


# -- round trip ------------------------------------------------------------------------------------


@st.composite
def _objects(draw: st.DrawFn) -> tuple[int, object]:
    """An (id, value) pair whose value is exactly representable by that object."""
    object_id = draw(st.sampled_from(sorted(bthome.OBJECT_TYPES)))
    row = bthome.OBJECT_TYPES[object_id]
    kind = bthome.Kind
    if row.kind is kind.NUMBER:
        assert row.length is not None
        bits = 8 * row.length
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if row.signed else (0, (1 << bits) - 1)
        raw = draw(st.integers(low, high))
        return object_id, raw if row.factor == 1 else float(raw * row.factor)
    if row.kind is kind.BINARY:
        return object_id, draw(st.booleans())
    if row.kind is kind.BUTTON:
        return object_id, draw(st.sampled_from(list(bthome.BUTTON_EVENTS.values())))
    if row.kind is kind.DIMMER:
        event = draw(st.sampled_from(list(bthome.DIMMER_EVENTS.values())))
        return object_id, {"event": event, "steps": draw(st.integers(0, 255))}
    if row.kind is kind.TIMESTAMP:
        moment = dt.datetime.fromtimestamp(draw(st.integers(0, (1 << 32) - 1)), dt.UTC)
        return object_id, moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if row.kind is kind.TEXT:
        return object_id, draw(st.text(max_size=40))
    if row.kind is kind.RAW:
        return object_id, draw(st.binary(max_size=40)).hex()
    assert row.length is not None
    return object_id, ".".join(
        str(part) for part in draw(st.lists(st.integers(0, 255), min_size=row.length, max_size=row.length))
    )


@given(
    objects=st.lists(_objects(), max_size=8),
    trigger_based=st.booleans(),
    encrypted=st.booleans(),
    counter=st.integers(0, (1 << 32) - 1),
)
def test_round_trip(
    objects: list[tuple[int, object]], trigger_based: bool, encrypted: bool, counter: int
) -> None:
    key = KEY if encrypted else None
    frame = bthome.encode(objects, trigger_based=trigger_based, mac=MAC, key=key, counter=counter)
    assert bthome.decode(frame, mac=MAC, key=key) == _frame(
        *(
            _object(i, bthome.OBJECT_TYPES[i].name, value, bthome.OBJECT_TYPES[i].unit)
            for i, value in objects
        ),
        encrypted=encrypted,
        trigger_based=trigger_based,
        counter=counter if encrypted else None,
    )
