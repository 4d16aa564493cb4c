"""``carepulse decode`` (gateway.decode_tool.run) and the UUID dispatch behind it."""

from __future__ import annotations

import io
import json

import pytest

from gateway import codecs
from gateway.codecs import DecodeError
from gateway.decode_tool import run

KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"
MAC = "54:48:E6:8F:80:A5"


def _run(
    uuid: str, hex_payload: str, *, mac: str | None = None, key_hex: str | None = None
) -> tuple[int, str]:
    stdout = io.StringIO()
    status = run(uuid, hex_payload, mac=mac, key_hex=key_hex, stdout=stdout)
    return status, stdout.getvalue()


def test_prints_one_json_line_in_decoder_order() -> None:
    assert _run("2a1c", "04 740100FF 06") == (
        0,
        '{"characteristic": "temperature_measurement", "temperature_c": 37.2, "device_unit": "C", '
        '"timestamp": null, "temperature_type": "mouth"}\n',
    )


def test_units_are_printed_as_text_and_specials_as_strings() -> None:
    status, output = _run("fcd2", "40 02C409")
    assert (status, output) == (
        0,
        '{"encrypted": false, "trigger_based": false, "objects": [{"id": 2, "name": "temperature", '
        '"value": 25.0, "unit": "°C"}], "counter": null, "unparsed_from_id": null}\n',
    )
    status, output = _run("2a35", "00 7800 5000 FF07")
    assert status == 0
    assert json.loads(output)["map_mmhg"] == "NaN"


def test_encrypted_bthome_with_mac_and_key() -> None:
    status, output = _run("fcd2", "41e445f3c9962b332211006c7c4519", mac=MAC, key_hex=KEY_HEX)
    assert status == 0
    assert json.loads(output) == {
        "encrypted": True,
        "trigger_based": False,
        "objects": [
            {"id": 2, "name": "temperature", "value": 25.06, "unit": "°C"},
            {"id": 3, "name": "humidity", "value": 50.55, "unit": "%"},
        ],
        "counter": 0x00112233,
        "unparsed_from_id": None,
    }


@pytest.mark.parametrize(
    ("uuid", "hex_payload", "mac", "key_hex", "error"),
    [
        ("2a1c", "04 7401", None, None, "truncated: temperature needs 4 bytes, 2 left"),
        ("2a37", "80 48", None, None, "reserved flag bits set: 0x80"),
        ("2a37", "10 48", None, None, "RR-interval flag set but no RR-interval follows"),
        ("2a9d", "00 B036 0000", None, None, "trailing bytes: 2"),
        ("2a5e", "01 6100 4800 E807 0D 02 0C 1E 2D", None, None, "invalid date: month 13"),
        ("2a1c", "04 74G1", None, None, "payload is not hex: '04 74G1'"),
        ("2a1c", "047", None, None, "payload is not hex: '047'"),
        ("fcd2", "41e445f3c9962b332211006c7c4519", MAC, "zz", "key is not hex: 'zz'"),
        (
            "fcd2",
            "41e445f3c9962b332211006c7c4519",
            MAC,
            "0011",
            "key must be 16 bytes (32 hex digits), got 2",
        ),
        ("fcd2", "41e445f3c9962b332211006c7c4519", MAC, None, "encrypted frame but no key for this device"),
        (
            "fcd2",
            "41e445f3c9962b332211006c7c4519",
            MAC,
            "00" * 16,
            "decryption failed: wrong key or corrupted frame",
        ),
        ("180d", "00", None, None, "no decoder for UUID 0x180D"),
        ("heart", "00", None, None, "not a 16-bit or Bluetooth-base UUID: 'heart'"),
    ],
)
def test_errors_print_the_reason_and_return_1(uuid, hex_payload, mac, key_hex, error: str) -> None:
    assert _run(uuid, hex_payload, mac=mac, key_hex=key_hex) == (1, json.dumps({"error": error}) + "\n")


# -- dispatch (gateway.codecs.decode) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "uuid",
    [
        0x2A1C,
        "2a1c",
        "2A1C",
        "0x2A1C",
        "0x2a1c",
        " 2a1c ",
        "00002a1c-0000-1000-8000-00805f9b34fb",
        "00002A1C-0000-1000-8000-00805F9B34FB",
    ],
)
def test_uuid_spellings(uuid: str | int) -> None:
    assert codecs.decode(uuid, bytes.fromhex("00740100FF"))["characteristic"] == "temperature_measurement"


@pytest.mark.parametrize(
    ("uuid", "payload", "characteristic"),
    [
        (0x2A1C, "00 740100FF", "temperature_measurement"),
        (0x2A1E, "00 740100FF", "intermediate_temperature"),
        (0x2A35, "00 7800 5000 5A00", "blood_pressure_measurement"),
        (0x2A36, "00 7800 FF07 FF07", "intermediate_cuff_pressure"),
        (0x2A5E, "00 6100 4800", "plx_spot_check_measurement"),
        (0x2A5F, "00 6100 4800", "plx_continuous_measurement"),
        (0x2A37, "00 48", "heart_rate_measurement"),
        (0x2A9D, "00 B036", "weight_measurement"),
    ],
)
def test_dispatch_by_characteristic(uuid: int, payload: str, characteristic: str) -> None:
    assert codecs.decode(uuid, bytes.fromhex(payload))["characteristic"] == characteristic


def test_dispatch_bthome_passes_mac_and_key() -> None:
    frame = bytes.fromhex("41e445f3c9962b332211006c7c4519")
    assert (
        codecs.decode("0000fcd2-0000-1000-8000-00805f9b34fb", frame, mac=MAC, key=bytes.fromhex(KEY_HEX))[
            "counter"
        ]
        == 0x00112233
    )


@pytest.mark.parametrize(
    ("uuid", "message"),
    [
        (0x10000, "not a 16-bit UUID: 0x10000"),
        ("12345", "not a 16-bit or Bluetooth-base UUID: '12345'"),
        (
            "0000fcd2-0000-1000-8000-00805f9b34fc",
            "not a 16-bit or Bluetooth-base UUID: '0000fcd2-0000-1000-8000-00805f9b34fc'",
        ),
        (0x2A38, "no decoder for UUID 0x2A38"),
    ],
)
def test_dispatch_rejects(uuid: str | int, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        codecs.decode(uuid, b"\x00")
    assert str(error.value) == message
