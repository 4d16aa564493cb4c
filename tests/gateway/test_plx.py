"""PLX Spot-check 0x2A5E and Continuous 0x2A5F (ble_health.md §7-8, [XML-PLXS], [XML-PLXC])."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import DecodeError, plx
from gateway.codecs.ieee11073 import SFLOAT, SpecialValue

SPO2_97_PR_72 = bytes.fromhex("6100 4800")
TIME_STAMP = bytes.fromhex("E807 01 02 0C 1E 2D")
MEASUREMENT_STATUS = bytes.fromhex("8020")  # validated data, measurement unavailable
DEVICE_STATUS = bytes.fromhex("200001")  # low perfusion; bit 16 is RFU and ignored
PAI_3_5 = bytes.fromhex("23F0")  # 35e-1
FAST = bytes.fromhex("6000 4A00")  # 96 %, 74 bpm
SLOW = bytes.fromhex("6200 4600")  # 98 %, 70 bpm


STATUS_NAMES = ["validated_data", "measurement_unavailable"]

# Per characteristic: the output with every optional field absent, then (flag bit, the bytes it
# announces, what they decode to) in payload order. Bit 4 of the spot-check announces no bytes.
SPOT_CHECK = (
    plx.decode_spot_check,
    {
        "characteristic": "plx_spot_check_measurement",
        "spo2_pct": 97.0,
        "pulse_rate_bpm": 72.0,
        "timestamp": None,
        "measurement_status": None,
        "device_and_sensor_status": None,
        "pulse_amplitude_index_pct": None,
        "device_clock_not_set": False,
    },
    [
        (0x01, TIME_STAMP, {"timestamp": "2024-01-02T12:30:45"}),
        (0x02, MEASUREMENT_STATUS, {"measurement_status": STATUS_NAMES}),
        (0x04, DEVICE_STATUS, {"device_and_sensor_status": ["low_perfusion"]}),
        (0x08, PAI_3_5, {"pulse_amplitude_index_pct": 3.5}),
        (0x10, b"", {"device_clock_not_set": True}),
    ],
)
CONTINUOUS = (
    plx.decode_continuous,
    {
        "characteristic": "plx_continuous_measurement",
        "spo2_pct": 97.0,
        "pulse_rate_bpm": 72.0,
        "spo2_fast_pct": None,
        "pulse_rate_fast_bpm": None,
        "spo2_slow_pct": None,
        "pulse_rate_slow_bpm": None,
        "measurement_status": None,
        "device_and_sensor_status": None,
        "pulse_amplitude_index_pct": None,
    },
    [
        (0x01, FAST, {"spo2_fast_pct": 96.0, "pulse_rate_fast_bpm": 74.0}),
        (0x02, SLOW, {"spo2_slow_pct": 98.0, "pulse_rate_slow_bpm": 70.0}),
        (0x04, MEASUREMENT_STATUS, {"measurement_status": STATUS_NAMES}),
        (0x08, DEVICE_STATUS, {"device_and_sensor_status": ["low_perfusion"]}),
        (0x10, PAI_3_5, {"pulse_amplitude_index_pct": 3.5}),
    ],
)


@pytest.mark.parametrize(
    ("decoder", "absent", "optional"), [SPOT_CHECK, CONTINUOUS], ids=["spot_check", "continuous"]
)
@pytest.mark.parametrize("flags", range(0x20))
def test_every_flag_combination(decoder, absent: dict, optional: list, flags: int) -> None:
    present = [(data, decoded) for bit, data, decoded in optional if flags & bit]
    payload = bytes([flags]) + SPO2_97_PR_72 + b"".join(data for data, _ in present)
    expected = dict(absent)
    for _, decoded in present:
        expected |= decoded
    assert decoder(payload) == expected


def test_same_flag_bit_means_different_fields() -> None:
    """Bit 1 is status in spot-check but SpO2PR-Slow in continuous (§8 Note): a copy-paste decoder fails."""
    status_only = b"\x02" + SPO2_97_PR_72 + MEASUREMENT_STATUS
    assert plx.decode_spot_check(status_only)["measurement_status"] == STATUS_NAMES
    with pytest.raises(DecodeError, match=r"^truncated: pulse_rate_slow_bpm needs 2 bytes, 0 left$"):
        plx.decode_continuous(status_only)
    slow_only = b"\x02" + SPO2_97_PR_72 + SLOW
    continuous = plx.decode_continuous(slow_only)
    assert (continuous["spo2_slow_pct"], continuous["pulse_rate_slow_bpm"]) == (98.0, 70.0)
    with pytest.raises(DecodeError, match=r"^trailing bytes: 2$"):
        plx.decode_spot_check(slow_only)


ALL_MEASUREMENT_STATUS = [
    "measurement_ongoing",
    "early_estimated_data",
    "validated_data",
    "fully_qualified_data",
    "data_from_measurement_storage",
    "data_for_demonstration",
    "data_for_testing",
    "calibration_ongoing",
    "measurement_unavailable",
    "questionable_measurement_detected",
    "invalid_measurement_detected",
]
ALL_DEVICE_STATUS = [
    "extended_display_update_ongoing",
    "equipment_malfunction",
    "signal_processing_irregularity",
    "inadequate_signal",
    "poor_signal",
    "low_perfusion",
    "erratic_signal",
    "nonpulsatile_signal",
    "questionable_pulse",
    "signal_analysis_ongoing",
    "sensor_interference",
    "sensor_unconnected_to_user",
    "unknown_sensor_connected",
    "sensor_displaced",
    "sensor_malfunctioning",
    "sensor_disconnected",
]


@pytest.mark.parametrize(
    ("status", "device_status", "names", "device_names"),
    [
        (0xFFFF, 0xFFFFFF, ALL_MEASUREMENT_STATUS, ALL_DEVICE_STATUS),
        (0x001F, 0xFF0000, [], []),  # only RFU bits
        (0x0020, 0x000001, ["measurement_ongoing"], ["extended_display_update_ongoing"]),
        (0x8000, 0x008000, ["invalid_measurement_detected"], ["sensor_disconnected"]),
    ],
)
def test_status_bits(status: int, device_status: int, names: list[str], device_names: list[str]) -> None:
    payload = b"\x06" + SPO2_97_PR_72 + status.to_bytes(2, "little") + device_status.to_bytes(3, "little")
    decoded = plx.decode_spot_check(payload)
    assert (decoded["measurement_status"], decoded["device_and_sensor_status"]) == (names, device_names)


@pytest.mark.parametrize("special", list(SpecialValue))
def test_special_values_stay_named(special: SpecialValue) -> None:
    payload = b"\x00" + SFLOAT.encode(special) + SFLOAT.encode(special)
    for decoded in (plx.decode_spot_check(payload), plx.decode_continuous(payload)):
        assert (decoded["spo2_pct"], decoded["pulse_rate_bpm"]) == (special, special)


SPOT_CHECK_FULL = b"\x1f" + SPO2_97_PR_72 + TIME_STAMP + MEASUREMENT_STATUS + DEVICE_STATUS + PAI_3_5
CONTINUOUS_FULL = b"\x1f" + SPO2_97_PR_72 + FAST + SLOW + MEASUREMENT_STATUS + DEVICE_STATUS + PAI_3_5
FULL = [(plx.decode_spot_check, SPOT_CHECK_FULL), (plx.decode_continuous, CONTINUOUS_FULL)]


@pytest.mark.parametrize(
    ("decoder", "payload"),
    [(decoder, full[:length]) for decoder, full in FULL for length in range(len(full))],
)
def test_truncated_at_every_length(decoder, payload: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^truncated: "):
        decoder(payload)


@pytest.mark.parametrize(
    ("decoder", "payload", "message"),
    [
        (
            plx.decode_spot_check,
            b"\x04" + SPO2_97_PR_72 + DEVICE_STATUS[:2],
            "truncated: device_and_sensor_status needs 3 bytes, 2 left",
        ),
        (
            plx.decode_continuous,
            b"\x01" + SPO2_97_PR_72 + FAST[:3],
            "truncated: pulse_rate_fast_bpm needs 2 bytes, 1 left",
        ),
        (plx.decode_spot_check, SPOT_CHECK_FULL + b"\x00", "trailing bytes: 1"),
        (plx.decode_continuous, CONTINUOUS_FULL + b"\x00", "trailing bytes: 1"),
        (
            plx.decode_spot_check,
            b"\x01" + SPO2_97_PR_72 + bytes.fromhex("E8070102180000"),
            "invalid time: hours 24",
        ),
        *(
            (decoder, bytes([bit]) + SPO2_97_PR_72, f"reserved flag bits set: {bit:#04x}")
            for decoder in (plx.decode_spot_check, plx.decode_continuous)
            for bit in (0x20, 0x40, 0x80)
        ),
    ],
)
def test_malformed(decoder, payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as error:
        decoder(payload)
    assert str(error.value) == message


def test_encode() -> None:
    assert (
        plx.encode_spot_check(
            97,
            72,
            timestamp="2024-01-02T12:30:45",
            measurement_status=["measurement_unavailable", "validated_data"],
            device_and_sensor_status=["low_perfusion"],
            pulse_amplitude_index_pct=3.5,
            device_clock_not_set=True,
        )
        == b"\x1f" + SPO2_97_PR_72 + TIME_STAMP + MEASUREMENT_STATUS + bytes.fromhex("200000") + PAI_3_5
    )
    assert (
        plx.encode_continuous(
            97,
            72,
            spo2_fast_pct=96,
            pulse_rate_fast_bpm=74,
            spo2_slow_pct=98,
            pulse_rate_slow_bpm=70,
            measurement_status=["validated_data", "measurement_unavailable"],
            device_and_sensor_status=["low_perfusion"],
            pulse_amplitude_index_pct=Decimal("3.5"),
        )
        == b"\x1f" + SPO2_97_PR_72 + FAST + SLOW + MEASUREMENT_STATUS + bytes.fromhex("200000") + PAI_3_5
    )


@pytest.mark.parametrize(
    ("encoder", "kwargs", "message"),
    [
        (
            plx.encode_continuous,
            {"spo2_fast_pct": 96},
            "spo2_fast_pct and pulse_rate_fast_bpm are one SpO2PR pair: give both or neither",
        ),
        (
            plx.encode_continuous,
            {"pulse_rate_slow_bpm": 70},
            "spo2_slow_pct and pulse_rate_slow_bpm are one SpO2PR pair: give both or neither",
        ),
        (plx.encode_spot_check, {"measurement_status": ["bogus"]}, "unknown MeasurementStatus bit 'BOGUS'"),
        (
            plx.encode_spot_check,
            {"device_and_sensor_status": ["bogus"]},
            "unknown DeviceAndSensorStatus bit 'BOGUS'",
        ),
    ],
)
def test_encode_rejects(encoder, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        encoder(97, 72, **kwargs)
    assert str(error.value) == message


SFLOATS = st.one_of(
    st.sampled_from(list(SpecialValue)),
    st.builds(lambda m, e: float(Decimal(m).scaleb(e)), st.integers(-2045, 2045), st.integers(-2, 1)),
)
STATUS_SETS = st.none() | st.sets(st.sampled_from(ALL_MEASUREMENT_STATUS))
DEVICE_STATUS_SETS = st.none() | st.sets(st.sampled_from(ALL_DEVICE_STATUS))


def _whole_seconds(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


def _in_bit_order(names: set[str] | None, order: list[str]) -> list[str] | None:
    return None if names is None else [name for name in order if name in names]


@given(
    spo2=SFLOATS,
    rate=SFLOATS,
    timestamp=st.none() | st.datetimes(min_value=dt.datetime(1582, 1, 1)).map(_whole_seconds),
    status=STATUS_SETS,
    device_status=DEVICE_STATUS_SETS,
    pai=st.none() | SFLOATS,
    clock_not_set=st.booleans(),
)
def test_spot_check_round_trip(spo2, rate, timestamp, status, device_status, pai, clock_not_set) -> None:
    iso = None if timestamp is None else timestamp.isoformat()
    payload = plx.encode_spot_check(
        spo2,
        rate,
        timestamp=iso,
        measurement_status=status,
        device_and_sensor_status=device_status,
        pulse_amplitude_index_pct=pai,
        device_clock_not_set=clock_not_set,
    )
    assert plx.decode_spot_check(payload) == {
        "characteristic": "plx_spot_check_measurement",
        "spo2_pct": spo2,
        "pulse_rate_bpm": rate,
        "timestamp": iso,
        "measurement_status": _in_bit_order(status, ALL_MEASUREMENT_STATUS),
        "device_and_sensor_status": _in_bit_order(device_status, ALL_DEVICE_STATUS),
        "pulse_amplitude_index_pct": pai,
        "device_clock_not_set": clock_not_set,
    }


@given(
    normal=st.tuples(SFLOATS, SFLOATS),
    fast=st.none() | st.tuples(SFLOATS, SFLOATS),
    slow=st.none() | st.tuples(SFLOATS, SFLOATS),
    status=STATUS_SETS,
    device_status=DEVICE_STATUS_SETS,
    pai=st.none() | SFLOATS,
)
def test_continuous_round_trip(normal, fast, slow, status, device_status, pai) -> None:
    fast_spo2, fast_rate = fast or (None, None)
    slow_spo2, slow_rate = slow or (None, None)
    payload = plx.encode_continuous(
        *normal,
        spo2_fast_pct=fast_spo2,
        pulse_rate_fast_bpm=fast_rate,
        spo2_slow_pct=slow_spo2,
        pulse_rate_slow_bpm=slow_rate,
        measurement_status=status,
        device_and_sensor_status=device_status,
        pulse_amplitude_index_pct=pai,
    )
    assert plx.decode_continuous(payload) == {
        "characteristic": "plx_continuous_measurement",
        "spo2_pct": normal[0],
        "pulse_rate_bpm": normal[1],
        "spo2_fast_pct": fast_spo2,
        "pulse_rate_fast_bpm": fast_rate,
        "spo2_slow_pct": slow_spo2,
        "pulse_rate_slow_bpm": slow_rate,
        "measurement_status": _in_bit_order(status, ALL_MEASUREMENT_STATUS),
        "device_and_sensor_status": _in_bit_order(device_status, ALL_DEVICE_STATUS),
        "pulse_amplitude_index_pct": pai,
    }
