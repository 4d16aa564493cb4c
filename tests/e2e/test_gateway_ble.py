"""Emulated care-home devices on a virtual BLE link, the gateway's central, and the real store-and-forward
`Publisher` against a real broker process. Readings reach the `readings` topic for the right resident."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from carepulse import events, topics
from gateway.ble.central import BleCentral
from gateway.ble.home import EmulatedHome
from gateway.ble.transport import open_controller_transport
from gateway.buffer import DurableBuffer
from gateway.publisher import Publisher
from gateway.registry import Registry
from tests.factories import unique_resident
from tests.gateway.test_ble_devices import eventually
from tests.kafka_helpers import parse_all, read_topic

pytestmark = pytest.mark.e2e


def _readings_of(values: list[bytes], resident_id: str) -> list[events.DeviceReading]:
    return [e for e in parse_all(values)
            if isinstance(e, events.DeviceReading) and e.resident_id == resident_id]


def test_vitals_and_cup_volume_from_emulated_devices_arrive_on_the_readings_topic(broker, tmp_path):
    resident, neighbour = unique_resident(), unique_resident()
    location = f"loc-{uuid.uuid4().hex[:8]}"
    registry = Registry(tmp_path / "registry.sqlite")
    buffer = DurableBuffer(tmp_path / "buffer.sqlite")
    publisher = Publisher(broker.bootstrap, buffer).start()
    addresses: dict[str, str] = {}

    async def scenario() -> None:
        async with await open_controller_transport("virtual") as radio:
            central = BleCentral(radio.device, registry, publisher, gateway_id="gw-e2e")
            await central.start()
            try:
                residents = {resident: location, neighbour: location}
                async with EmulatedHome(radio.link, registry, residents) as home:
                    await home.take_vitals(resident, spo2=90, pulse=125, systolic=95, diastolic=60,
                                           temperature_c=39.2)
                    await home.cup_volume(resident, 250)
                    await eventually(lambda: central.readings_published == 4)
                    devices = home.devices[resident]
                    addresses.update({
                        "plx_spot_check_measurement": devices.oximeter.address,
                        "blood_pressure_measurement": devices.cuff.address,
                        "temperature_measurement": devices.thermometer.address,
                        "bthome": devices.cup.address,
                    })
            finally:
                await central.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    finally:
        publisher.stop(drain_timeout_s=30)
        registry.close()
    assert buffer.depth() == 0

    values = read_topic(broker.bootstrap, topics.READINGS.name, timeout_s=60, settle_s=1,
                        until=lambda vs: len(_readings_of(vs, resident)) >= 4)
    readings = _readings_of(values, resident)
    assert {r.characteristic: r.values for r in readings} == {
        "plx_spot_check_measurement": {
            "spo2_pct": 90.0, "pulse_rate_bpm": 125.0, "timestamp": None, "measurement_status": None,
            "device_and_sensor_status": None, "pulse_amplitude_index_pct": None,
            "device_clock_not_set": False,
        },
        "blood_pressure_measurement": {
            "systolic_mmhg": 95.0, "diastolic_mmhg": 60.0, "map_mmhg": "NaN", "device_unit": "mmHg",
            "timestamp": None, "pulse_rate_bpm": 125.0, "user_id": None, "measurement_status": None,
            "pulse_rate_range": None,
        },
        "temperature_measurement": {
            "temperature_c": 39.2, "device_unit": "C", "timestamp": None, "temperature_type": None,
        },
        "bthome": {"packet_id": 1, "battery_pct": 100, "volume_ml": 250},
    }
    assert len(readings) == 4
    assert {r.characteristic: r.source for r in readings} == {
        characteristic: events.Source(gateway_id="gw-e2e", device_id=address.replace(":", "-"))
        for characteristic, address in addresses.items()
    }
    assert {r.location_id for r in readings} == {location}
    assert _readings_of(values, neighbour) == []
