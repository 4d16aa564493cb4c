"""The gateway's BLE central on a bumble virtual link: BTHome security and care events, GATT errors, pairing
and reconnects. Each test compares whole events."""

from __future__ import annotations

import json
import secrets

import pytest

from carepulse import events
from carepulse.metrics import GatewayMetrics
from gateway.ble import bthome
from gateway.ble.blood_pressure import BloodPressureCuff
from gateway.ble.bthome import CallBell, FallPendant, SmartCup
from gateway.ble.central import reading_values
from gateway.ble.pulse_oximeter import PulseOximeter
from gateway.buffer import BufferFull, BufferLevel, DurableBuffer
from gateway.codecs import DecodeError, decode, encode_bthome
from gateway.publisher import Publisher
from tests.factories import T0
from tests.gateway.test_ble_devices import (
    DEVICE_TIME,
    GATEWAY,
    LOCATION,
    RESIDENT,
    eventually,
    run,
    virtual_gateway,
)
from tests.kafka_helpers import free_port


def _source(address: str) -> events.Source:
    return events.Source(gateway_id=GATEWAY, device_id=address.replace(":", "-"))


def _envelope(address: str) -> dict:
    return dict(occurred_at=T0, received_at=T0, source=_source(address), location_id=LOCATION)


def _bthome_reading(address: str, counter: int, values: dict) -> events.DeviceReading:
    frame_id = f"{address.replace(':', '-')}-{counter}"
    return events.DeviceReading(
        event_id=events.derived_event_id("ble.bthome", frame_id), resident_id=RESIDENT,
        characteristic="bthome", values=values, **_envelope(address),
    )


# -- BTHome -------------------------------------------------------------------------------------------
def test_encrypted_frames_become_readings_and_burst_repeats_are_not_replays(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            key = secrets.token_bytes(16)
            cup = SmartCup(gateway.link, gateway.provision("smart_cup", key=key), key=key)
            await gateway.start(cup)
            await cup.emit(250)
            cup.battery_pct = 97
            await cup.emit(180)
            await eventually(lambda: len(gateway.sink.published) == 2)

            assert gateway.sink.published == [
                ("readings", RESIDENT, _bthome_reading(cup.address, 1, {"packet_id": 1, "battery_pct": 100,
                                                                        "volume_ml": 250})),
                ("readings", RESIDENT, _bthome_reading(cup.address, 2, {"packet_id": 2, "battery_pct": 97,
                                                                        "volume_ml": 180})),
            ]
            central = gateway.central
            assert (central.devices_seen, central.readings_published, central.replays_rejected) == (1, 2, 0)

    run(scenario)


def test_call_bell_press_raises_a_call_for_the_resident(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            key = secrets.token_bytes(16)
            bell = CallBell(gateway.link, gateway.provision("call_bell", key=key), key=key)
            await gateway.start(bell)
            await bell.emit()
            await eventually(lambda: len(gateway.sink.published) == 2)

            call_id = f"call-{bell.address.replace(':', '-')}-1"
            assert gateway.sink.published == [
                ("care-events", LOCATION, events.CallBell(
                    event_id=events.derived_event_id("ble.call_bell", call_id), resident_id=RESIDENT,
                    call_id=call_id, phase="raised", call_type="call_point", **_envelope(bell.address),
                )),
                ("readings", RESIDENT, _bthome_reading(bell.address, 1, {"packet_id": 1, "battery_pct": 100,
                                                                         "button": "press"})),
            ]

    run(scenario)


def test_fall_pendant_long_press_is_an_unconfirmed_device_fall(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            key = secrets.token_bytes(16)
            pendant = FallPendant(gateway.link, gateway.provision("fall_pendant", key=key), key=key)
            await gateway.start(pendant)
            await pendant.emit()
            await eventually(lambda: len(gateway.sink.published) == 2)

            device_id = pendant.address.replace(":", "-")
            alert_id = f"fall-{device_id}-1"
            assert gateway.sink.published == [
                ("care-events", LOCATION, events.Fall(
                    event_id=events.derived_event_id("ble.fall", alert_id), resident_id=RESIDENT,
                    detected_by="device", confirmed=False, alert_id=alert_id, recorded_by=device_id,
                    **_envelope(pendant.address),
                )),
                ("readings", RESIDENT, _bthome_reading(
                    pendant.address, 1, {"packet_id": 1, "battery_pct": 100, "button": "long_press"},
                )),
            ]

    run(scenario)


def test_a_call_bell_without_a_resident_raises_a_call_and_publishes_no_reading(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            key = secrets.token_bytes(16)
            bell = CallBell(gateway.link, gateway.provision("call_bell", resident_id=None, key=key), key=key)
            await gateway.start(bell)
            await bell.emit()
            await eventually(lambda: gateway.sink.published)

            call_id = f"call-{bell.address.replace(':', '-')}-1"
            assert gateway.sink.published == [("care-events", LOCATION, events.CallBell(
                event_id=events.derived_event_id("ble.call_bell", call_id), resident_id=None, call_id=call_id,
                phase="raised", call_type="call_point", **_envelope(bell.address),
            ))]

    run(scenario)


def test_a_replayed_frame_is_rejected_and_counted(tmp_path):
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with virtual_gateway(tmp_path, metrics=metrics) as gateway:
            key = secrets.token_bytes(16)
            bell = CallBell(gateway.link, gateway.provision("call_bell", key=key), key=key)
            await gateway.start(bell)
            recorded = await bell.emit()
            await bell.emit()
            await eventually(lambda: len(gateway.sink.published) == 4)
            await bell.broadcast(recorded)  # an attacker plays the first press back
            await eventually(lambda: gateway.central.replays_rejected == 1)
            assert [event.call_id for _, event in gateway.sink.on("care-events")] == [
                f"call-{bell.address.replace(':', '-')}-{counter}" for counter in (1, 2)
            ]
            assert len(gateway.sink.published) == 4
            assert metrics.value("carepulse_gateway_ble_rejected_total", reason="replay") == 1
            assert metrics.value("carepulse_gateway_ble_rejected_total", reason="downgrade") == 0
            assert metrics.value("carepulse_gateway_ble_devices_seen") == 1
            assert metrics.value("carepulse_gateway_ble_devices_connected") == 0  # BTHome: no GATT session

    run(scenario)


def test_a_plaintext_frame_from_a_device_with_a_key_is_refused_as_a_downgrade(tmp_path):
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with virtual_gateway(tmp_path, metrics=metrics) as gateway:
            key = secrets.token_bytes(16)
            bell = CallBell(gateway.link, gateway.provision("call_bell", key=key), key=key)
            await gateway.start(bell)
            await bell.broadcast(encode_bthome([(bthome.PACKET_ID, 1), (bthome.BUTTON, "press")]))
            await eventually(lambda: gateway.central.downgrades_rejected == 1)
            assert gateway.sink.published == []
            assert metrics.value("carepulse_gateway_ble_rejected_total", reason="downgrade") == 1
            assert metrics.value("carepulse_gateway_ble_rejected_total", reason="replay") == 0

    run(scenario)


def test_a_frame_encrypted_with_another_key_is_dead_lettered_with_its_bytes(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            cup = SmartCup(gateway.link, gateway.provision("smart_cup", key=secrets.token_bytes(16)),
                           key=secrets.token_bytes(16))
            await gateway.start(cup)
            frame = await cup.emit(200)
            await eventually(lambda: gateway.sink.published)

            [(topic, key, letter)] = gateway.sink.published
            assert (topic, key) == ("dead-letters", "gateway.ble")
            assert letter == events.DeadLetter(
                event_id=letter.event_id, reason="decryption failed: wrong key or corrupted frame",
                stage="gateway.ble", original_topic="ble:0xFCD2", original_key=cup.address,
                original_payload=frame.hex(), **_envelope(cup.address),
            )

    run(scenario)


def test_an_unregistered_device_is_ignored_and_counted(tmp_path):
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with virtual_gateway(tmp_path, metrics=metrics) as gateway:
            stranger = CallBell(gateway.link, "C0:FF:EE:00:00:01", key=None)
            await gateway.start(stranger)
            await stranger.emit()
            assert gateway.central.unregistered_ignored > 0
            assert (gateway.sink.published, gateway.central.devices_seen) == ([], 0)
            assert metrics.value("carepulse_gateway_ble_rejected_total", reason="unregistered") == \
                gateway.central.unregistered_ignored
            assert metrics.value("carepulse_gateway_ble_devices_seen") == 0

    run(scenario)


# -- GATT ---------------------------------------------------------------------------------------------
def test_an_undecodable_value_is_dead_lettered_with_hex_and_reason_and_the_next_value_still_counts(tmp_path):
    malformed = bytes.fromhex("0061")  # a spot-check cut short after one byte of SpO2
    with pytest.raises(DecodeError) as decoding:
        decode(0x2A5E, malformed)

    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with virtual_gateway(tmp_path, metrics=metrics) as gateway:
            oximeter = PulseOximeter(gateway.link, gateway.provision("pulse_oximeter"))
            await gateway.start(oximeter)
            await oximeter.send(0x2A5E, malformed)
            await oximeter.measure(96, 70)
            await eventually(lambda: len(gateway.sink.published) == 2)

            [(topic, key, letter), (next_topic, _, reading)] = gateway.sink.published
            assert (topic, key) == ("dead-letters", "gateway.ble")
            assert letter == events.DeadLetter(
                event_id=letter.event_id, reason=str(decoding.value), stage="gateway.ble",
                original_topic="ble:0x2A5E", original_key=oximeter.address, original_payload="0061",
                **_envelope(oximeter.address),
            )
            assert (next_topic, reading.values["spo2_pct"]) == ("readings", 96.0)
            assert (gateway.central.dead_letters, gateway.central.readings_published) == (1, 1)
            assert metrics.value("carepulse_dead_letters_total", stage="gateway.ble", reason="decode_error") == 1
            assert metrics.value("carepulse_gateway_device_readings_lost_total") == 0  # dead-lettered, not lost
            # A GATT device: heard once, one session open while it is connected.
            assert metrics.value("carepulse_gateway_ble_devices_seen") == 1
            assert metrics.value("carepulse_gateway_ble_devices_connected") == 1
        assert metrics.value("carepulse_gateway_ble_devices_connected") == 0  # the central closed the session

    run(scenario)


def test_a_reading_from_a_device_without_a_resident_is_dead_lettered(tmp_path):
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with virtual_gateway(tmp_path, metrics=metrics) as gateway:
            oximeter = PulseOximeter(gateway.link, gateway.provision("pulse_oximeter", resident_id=None))
            await gateway.start(oximeter)
            payload = await oximeter.measure(96, 70)
            await eventually(lambda: gateway.sink.published)

            [(topic, _, letter)] = gateway.sink.published
            assert topic == "dead-letters"
            assert letter.reason == (
                f"ValueError: pulse_oximeter {oximeter.address} has no resident assigned, so its "
                "reading cannot be attributed; assign it in the registry"
            )
            assert letter.original_payload == payload.hex()
            assert metrics.value("carepulse_dead_letters_total", stage="gateway.ble", reason="unregistered") == 1

    run(scenario)


def test_device_readings_use_the_reserve_tablets_are_refused_and_a_reading_beyond_it_is_logged_as_lost(
        tmp_path, caplog):
    """Hazard H-22, against a real buffer: tablet entries are refused at the reserve, device readings fill it,
    and one refused beyond it is logged CRITICAL with its bytes and counted, not dropped silently."""
    metrics = GatewayMetrics()
    buffer = DurableBuffer(tmp_path / "buffer.sqlite", max_bytes=2000, reserve_bytes=1000)
    publisher = Publisher(f"127.0.0.1:{free_port()}", buffer, metrics=metrics)  # not started: nothing leaves
    tablet_entries = 0
    with pytest.raises(BufferFull, match="the last 1000 bytes are kept for device readings"):
        while True:
            publisher.publish_raw("readings", b"res-tablet", b"t" * 100)  # a tablet entry (Priority.RETRIED)
            tablet_entries += 1
    assert (tablet_entries, buffer.size_bytes()) == (10, 1000)

    async def scenario() -> list[bytes]:
        async with virtual_gateway(tmp_path, sink=publisher, metrics=metrics) as gateway:
            oximeter = PulseOximeter(gateway.link, gateway.provision("pulse_oximeter"))
            await gateway.start(oximeter)
            # Each measure() returns once the gateway confirmed the indication, stored or not.
            return [await oximeter.measure(90 + i, 70, timestamp=DEVICE_TIME) for i in range(4)]

    payloads = run(scenario)
    stored = [json.loads(row.value) for row in buffer.pending(100)[tablet_entries:]]
    reading_bytes = len(buffer.pending(100)[tablet_entries].value)
    fit = 1000 // reading_bytes
    assert fit >= 1 and len(stored) == fit  # the reserve holds whole readings, as many as fit
    assert [reading["values"]["spo2_pct"] for reading in stored] == [90.0 + i for i in range(fit)]
    lost = payloads[fit:]
    critical = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == len(lost) == 4 - fit
    for line, payload in zip(critical, lost):
        assert "LOST value 0x2A5E from pulse_oximeter" in line and f"bytes {payload.hex()}" in line
        assert "is full (" in line and "The device will not send it again" in line
    assert metrics.value("carepulse_gateway_buffer_rejected_total") == 1 + len(lost)  # the tablet's, the lost
    assert metrics.value("carepulse_gateway_device_readings_lost_total") == len(lost)  # the tablet's is not one
    assert metrics.value("carepulse_gateway_events_in_total", topic="readings") == tablet_entries + fit
    # The level comes from the bytes held: a reading larger than the room left is refused below the limit, so
    # the gauge can still say "tablets refused" while readings are lost; hence the separate lost counter.
    assert buffer.size_bytes() < buffer.max_bytes
    assert metrics.value("carepulse_gateway_buffer_level") == BufferLevel.RETRIED_REFUSED


def test_a_device_that_requires_pairing_is_paired_bonded_and_encrypted_with_the_bond_on_reconnect(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            cuff = BloodPressureCuff(gateway.link, gateway.provision("blood_pressure"), requires_pairing=True)
            await gateway.start(cuff)
            await cuff.measure(120, 80)
            [connection] = cuff.device.connections.values()
            assert connection.is_encrypted
            bond = await gateway.central.device.keystore.get(cuff.address)
            assert bond is not None and bond.ltk is not None

            await cuff.disconnect()
            await eventually(lambda: gateway.central.devices_connected == 0)
            await cuff.measure(118, 79)  # waits for the central to reconnect and subscribe again
            await eventually(lambda: len(gateway.sink.published) == 2)
            assert [event.values["systolic_mmhg"] for _, _, event in gateway.sink.published] == [120.0, 118.0]
            assert (await gateway.central.device.keystore.get(cuff.address)).ltk == bond.ltk  # no new pairing

    run(scenario)


def test_a_device_that_lost_the_bond_is_paired_again(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            address = gateway.provision("blood_pressure")
            first = BloodPressureCuff(gateway.link, address, requires_pairing=True)
            await first.start()
            await first.measure(120, 80)
            bond = await gateway.central.device.keystore.get(address)
            await first.close()

            reset = BloodPressureCuff(gateway.link, address, requires_pairing=True)  # same address, no bond
            await gateway.start(reset)
            await reset.measure(121, 81)
            assert (await gateway.central.device.keystore.get(address)).ltk != bond.ltk
            assert [event.values["systolic_mmhg"] for _, _, event in gateway.sink.published] == [120.0, 121.0]

    run(scenario)


# -- values -------------------------------------------------------------------------------------------
def test_gatt_reading_values_keep_scalars_number_lists_and_status_names():
    decoded = decode(0x2A35, bytes.fromhex("1E 7800 5000 5A00 E807 0102 0C00 00 4800 01 0500"))
    assert reading_values(decoded) == {
        "systolic_mmhg": 120.0, "diastolic_mmhg": 80.0, "map_mmhg": 90.0, "device_unit": "mmHg",
        "timestamp": "2024-01-02T12:00:00", "pulse_rate_bpm": 72.0, "user_id": 1,
        "measurement_status": ["body_movement", "irregular_pulse"], "pulse_rate_range": "in_range",
    }


@pytest.mark.parametrize(("service_data", "values"), [
    ("40 003F 015E 028208 03AC17 0C830B",  # [BTH-ISSUE118]
     {"packet_id": 63, "battery_pct": 94, "temperature_c": 21.78, "humidity_pct": 60.6, "voltage_v": 2.947}),
    ("40 02CA09 02C409", {"temperature_c": 25.06, "temperature_c_2": 25.0}),  # repeats told apart by order
    ("40 3C0103", {"dimmer_event": "rotate_left", "dimmer_steps": 3}),
    ("40 0109 FF01", {"battery_pct": 9, "unparsed_from_id": 0xFF}),
])
def test_bthome_objects_flatten_to_values_named_with_their_units(service_data, values):
    assert bthome.reading_values(decode(0xFCD2, bytes.fromhex(service_data))) == values
