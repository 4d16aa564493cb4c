"""Heart Rate Measurement 0x2A37 (ble_health.md §9, [GSS-HRM], [XML-HRM])."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, heart_rate

RR_1000_500 = bytes.fromhex("0004 0002")  # 1024/1024 s and 512/1024 s
CONTACT_NAMES = {0: "not_supported", 1: "not_supported", 2: "not_detected", 3: "detected"}


@pytest.mark.parametrize(
    ("wide", "contact", "has_energy", "has_rr"),
    list(itertools.product([False, True], range(4), [False, True], [False, True])),
)
def test_every_flag_combination(wide: bool, contact: int, has_energy: bool, has_rr: bool) -> None:
    flags = wide * 0x01 | contact << 1 | has_energy * 0x08 | has_rr * 0x10
    payload = (
        bytes([flags])
        + (bytes.fromhex("2C01") if wide else bytes([72]))
        + (bytes.fromhex("3412") if has_energy else b"")
        + (RR_1000_500 if has_rr else b"")
    )
    assert heart_rate.decode(payload) == {
        "characteristic": "heart_rate_measurement",
        "heart_rate_bpm": 300 if wide else 72,
        "sensor_contact": CONTACT_NAMES[contact],
        "energy_expended_kj": 0x1234 if has_energy else None,
        "rr_intervals_ms": [1000.0, 500.0] if has_rr else None,
    }


@pytest.mark.parametrize(
    ("raw", "milliseconds"),
    [
        (1024, 1000.0),
        (512, 500.0),
        (1, 0.977),  # 0.9765625, rounded to 3 dp
        (1023, 999.023),  # 999.0234375
        (3, 2.93),  # 2.9296875
        (5, 4.883),  # 4.8828125
        (8, 7.813),  # exactly 7.8125: half up, not to even
        (0, 0.0),
        (0xFFFF, 63999.023),  # 63999.0234375
    ],
)
def test_rr_interval_conversion(raw: int, milliseconds: float) -> None:
    assert heart_rate.decode(b"\x10\x48" + raw.to_bytes(2, "little"))["rr_intervals_ms"] == [milliseconds]


def test_nine_rr_intervals_fill_a_20_byte_notification() -> None:
    payload = b"\x10\x48" + bytes.fromhex("0004") * 9
    assert len(payload) == 20
    assert heart_rate.decode(payload)["rr_intervals_ms"] == [1000.0] * 9


FULL = b"\x19" + bytes.fromhex("2C01 3412") + RR_1000_500


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4])
def test_truncated_before_the_rr_intervals(length: int) -> None:
    with pytest.raises(DecodeError, match=r"^truncated: "):
        heart_rate.decode(FULL[:length])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated: flags need 1 byte, 0 left"),
        (b"\x00", "truncated: heart_rate_bpm needs 1 byte, 0 left"),
        (b"\x01\x48", "truncated: heart_rate_bpm needs 2 bytes, 1 left"),
        (b"\x08\x48\x34", "truncated: energy_expended_kj needs 2 bytes, 1 left"),
        # RR flag with no value, or an odd trailing byte: rejected (§9 Policy).
        (b"\x10\x48", "RR-interval flag set but no RR-interval follows"),
        (b"\x18\x48\x34\x12", "RR-interval flag set but no RR-interval follows"),
        (FULL[:-1], "truncated: rr_interval needs 2 bytes, 1 left"),
        (b"\x10\x48\x00", "truncated: rr_interval needs 2 bytes, 1 left"),
        (b"\x00\x48\x00\x04", "trailing bytes: 2"),  # RR values without their flag
        (b"\x08\x48\x34\x12\x00", "trailing bytes: 1"),
        (b"\x20\x48", "reserved flag bits set: 0x20"),
        (b"\x40\x48", "reserved flag bits set: 0x40"),
        (b"\x80\x48", "reserved flag bits set: 0x80"),
    ],
)
def test_malformed(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        heart_rate.decode(payload)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("kwargs", "payload"),
    [
        ({"heart_rate_bpm": 72}, b"\x00\x48"),
        ({"heart_rate_bpm": 72, "uint16": True}, b"\x01\x48\x00"),
        ({"heart_rate_bpm": 300}, b"\x01\x2c\x01"),
        (
            {
                "heart_rate_bpm": 300,
                "sensor_contact": "detected",
                "energy_expended_kj": 0x1234,
                "rr_intervals_ms": [1000.0, 500.0],
            },
            b"\x1f" + bytes.fromhex("2C01 3412") + RR_1000_500,
        ),
        (
            {"heart_rate_bpm": 72, "sensor_contact": "not_detected", "rr_intervals_ms": [0.977]},
            b"\x14\x48\x01\x00",
        ),
    ],
)
def test_encode(kwargs: dict, payload: bytes) -> None:
    assert heart_rate.encode(**kwargs) == payload


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"heart_rate_bpm": 72, "rr_intervals_ms": []},
            "the RR-interval flag announces one or more values: pass None for none",
        ),
        ({"heart_rate_bpm": 72, "sensor_contact": "loose"}, "unknown sensor contact state 'loose'"),
        ({"heart_rate_bpm": 300, "uint16": False}, "heart rate 300 does not fit 8 bits"),
        ({"heart_rate_bpm": -1}, "heart rate -1 does not fit 8 bits"),
        ({"heart_rate_bpm": 72, "energy_expended_kj": 70000}, "energy expended 70000 does not fit 16 bits"),
        (
            {"heart_rate_bpm": 72, "rr_intervals_ms": [64000.0]},
            "RR-interval 64000.0 ms does not fit 16 bits of 1/1024 s",
        ),
        (
            {"heart_rate_bpm": 72, "rr_intervals_ms": [1e300]},
            "RR-interval 1e+300 ms does not fit 16 bits of 1/1024 s",
        ),
        (
            {"heart_rate_bpm": 72, "rr_intervals_ms": [-1.0]},
            "RR-interval -1.0 ms does not fit 16 bits of 1/1024 s",
        ),
    ],
)
def test_encode_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        heart_rate.encode(**kwargs)
    assert str(error.value) == message


@given(
    bpm=st.integers(0, 0xFFFF),
    wide=st.none() | st.just(True),
    contact=st.sampled_from(["not_supported", "not_detected", "detected"]),
    energy=st.none() | st.integers(0, 0xFFFF),
    rr_raw=st.none() | st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=9),
)
def test_round_trip(
    bpm: int, wide: bool | None, contact: str, energy: int | None, rr_raw: list[int] | None
) -> None:
    # raw x 976.5625 (= raw x 1000/1024 x 1000) is exact in binary, so this is an exact half-up to 3 dp.
    rr_ms = None if rr_raw is None else [math.floor(raw * 976.5625 + 0.5) / 1000 for raw in rr_raw]
    payload = heart_rate.encode(
        bpm, sensor_contact=contact, energy_expended_kj=energy, rr_intervals_ms=rr_ms, uint16=wide
    )
    assert heart_rate.decode(payload) == {
        "characteristic": "heart_rate_measurement",
        "heart_rate_bpm": bpm,
        "sensor_contact": contact,
        "energy_expended_kj": energy,
        "rr_intervals_ms": rr_ms,
    }
    if rr_raw is not None:  # ms rounded to 3 dp still identifies the raw 1/1024 s value
        assert payload.endswith(b"".join(raw.to_bytes(2, "little") for raw in rr_raw))
