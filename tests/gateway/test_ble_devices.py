"""Each emulated GATT device, read by the gateway's central over a bumble virtual link (no hardware, no
mocks).

The central subscribes, receives the device's notification or indication, and decodes it. Each test
compares the whole decoded reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bumble.hci import Address
from bumble.link import LocalLink

from carepulse import events
from carepulse.topics import TopicSpec
from gateway.ble.blood_pressure import BloodPressureCuff
from gateway.ble.central import BleCentral
from gateway.ble.devices import EmulatedPeripheral
from gateway.ble.health_thermometer import Thermometer
from gateway.ble.heart_rate import HeartRateStrap
from gateway.ble.pulse_oximeter import PulseOximeter
from gateway.ble.transport import open_controller_transport
from gateway.ble.weight_scale import WeightScale
from gateway.buffer import Priority
from gateway.registry import Registry
from tests.factories import T0

RESIDENT = "res-ble-1"
LOCATION = "loc-ble"
GATEWAY = "gw-test"
DEVICE_TIME = "2026-11-23T09:00:00"  # naive device-local time (ble_health.md §4)
T = TypeVar("T")


# -- helpers shared with test_ble_central and the e2e test ---------------------------------------------
@dataclass
class RecordingSink:
    """An `EventSink` that keeps what was published, in order, and the priority each was published at."""

    published: list[tuple[str, str | None, events.Event]] = field(default_factory=list)
    priorities: set[Priority] = field(default_factory=set)

    def publish(self, spec: TopicSpec, key: str | None, event: events.Event, *, priority: Priority) -> None:
        self.published.append((spec.name, key, event))
        self.priorities.add(priority)

    def on(self, topic: str) -> list[tuple[str | None, events.Event]]:
        return [(key, event) for name, key, event in self.published if name == topic]


@dataclass
class VirtualGateway:
    link: LocalLink
    registry: Registry
    central: BleCentral
    sink: Any  # a RecordingSink unless the test gave its own EventSink
    devices: contextlib.AsyncExitStack

    def provision(self, kind: str, *, resident_id: str | None = RESIDENT, key: bytes | None = None) -> str:
        address = Address.generate_static_address().to_string(with_type_qualifier=False)
        self.registry.provision_device(address, kind=kind, location_id=LOCATION, resident_id=resident_id,
                                       bthome_key=key)
        return address

    async def start(self, device: EmulatedPeripheral) -> None:
        await device.start()
        self.devices.push_async_callback(device.close)


@contextlib.asynccontextmanager
async def virtual_gateway(tmp_path: Path, sink: Any = None, **central_options: Any) -> AsyncIterator[VirtualGateway]:
    """A started central on a fresh virtual link, with `RESIDENT` registered; devices are closed on exit.
    The central publishes to `sink`, a `RecordingSink` unless another `EventSink` is given."""
    registry = Registry(tmp_path / f"registry-{uuid.uuid4().hex}.sqlite")
    registry.add_resident(RESIDENT, LOCATION)
    sink = RecordingSink() if sink is None else sink
    options = {"now": lambda: T0, "reconnect_backoff_s": 0.05, **central_options}
    async with await open_controller_transport("virtual") as radio:
        central = BleCentral(radio.device, registry, sink, gateway_id=GATEWAY, **options)
        await central.start()
        try:
            async with contextlib.AsyncExitStack() as devices:
                yield VirtualGateway(radio.link, registry, central, sink, devices)
        finally:
            await central.stop()
            registry.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=20))


# -- each device --------------------------------------------------------------------------------------
async def _oximeter_spot_check(device: PulseOximeter) -> bytes:
    return await device.measure(97, 72, timestamp=DEVICE_TIME)


async def _oximeter_continuous(device: PulseOximeter) -> bytes:
    return await device.measure_continuous(95, 80)


async def _cuff(device: BloodPressureCuff) -> bytes:
    return await device.measure(128, 84, pulse_rate_bpm=70, timestamp=DEVICE_TIME)


async def _thermometer(device: Thermometer) -> bytes:
    return await device.measure(Decimal("37.2"), temperature_type="tympanum", timestamp=DEVICE_TIME)


async def _strap(device: HeartRateStrap) -> bytes:
    return await device.measure(72, rr_intervals_ms=[1000.0, 500.0])


async def _scale(device: WeightScale) -> bytes:
    return await device.measure(70.0, user_id=1, timestamp=DEVICE_TIME)


CASES = [
    pytest.param(
        PulseOximeter, "pulse_oximeter", _oximeter_spot_check, 0x2A5E, "plx_spot_check_measurement",
        {"spo2_pct": 97.0, "pulse_rate_bpm": 72.0, "timestamp": DEVICE_TIME, "measurement_status": None,
         "device_and_sensor_status": None, "pulse_amplitude_index_pct": None, "device_clock_not_set": False},
        id="oximeter-spot-check",
    ),
    pytest.param(
        PulseOximeter, "pulse_oximeter", _oximeter_continuous, 0x2A5F, "plx_continuous_measurement",
        {"spo2_pct": 95.0, "pulse_rate_bpm": 80.0, "spo2_fast_pct": None, "pulse_rate_fast_bpm": None,
         "spo2_slow_pct": None, "pulse_rate_slow_bpm": None, "measurement_status": None,
         "device_and_sensor_status": None, "pulse_amplitude_index_pct": None},
        id="oximeter-continuous",
    ),
    pytest.param(
        BloodPressureCuff, "blood_pressure", _cuff, 0x2A35, "blood_pressure_measurement",
        {"systolic_mmhg": 128.0, "diastolic_mmhg": 84.0, "map_mmhg": "NaN", "device_unit": "mmHg",
         "timestamp": DEVICE_TIME, "pulse_rate_bpm": 70.0, "user_id": None, "measurement_status": None,
         "pulse_rate_range": None},
        id="blood-pressure-cuff",
    ),
    pytest.param(
        Thermometer, "thermometer", _thermometer, 0x2A1C, "temperature_measurement",
        {"temperature_c": 37.2, "device_unit": "C", "timestamp": DEVICE_TIME, "temperature_type": "tympanum"},
        id="thermometer",
    ),
    pytest.param(
        HeartRateStrap, "heart_rate", _strap, 0x2A37, "heart_rate_measurement",
        {"heart_rate_bpm": 72, "sensor_contact": "detected", "energy_expended_kj": None,
         "rr_intervals_ms": [1000.0, 500.0]},
        id="heart-rate-strap",
    ),
    pytest.param(
        WeightScale, "weight_scale", _scale, 0x2A9D, "weight_measurement",
        {"weight_kg": 70.0, "device_unit": "kg", "measurement_unsuccessful": False, "timestamp": DEVICE_TIME,
         "user_id": 1, "bmi": None, "height_m": None},
        id="weight-scale",
    ),
]


@pytest.mark.parametrize(("device_class", "kind", "measure", "uuid16", "characteristic", "values"), CASES)
def test_central_subscribes_receives_and_decodes_each_device(
    tmp_path, device_class, kind, measure, uuid16, characteristic, values
):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            address = gateway.provision(kind)
            device = device_class(gateway.link, address)
            await gateway.start(device)
            payload = await measure(device)
            await eventually(lambda: gateway.sink.published)

            assert gateway.sink.published == [("readings", RESIDENT, events.DeviceReading(
                event_id=(events.derived_event_id("ble.reading", address, f"{uuid16:04X}", payload.hex())
                          if values.get("timestamp") else gateway.sink.published[0][2].event_id),
                occurred_at=T0,  # the gateway's receive time, whatever the device clock says
                received_at=T0,
                source=events.Source(gateway_id=GATEWAY, device_id=address.replace(":", "-")),
                location_id=LOCATION,
                resident_id=RESIDENT,
                characteristic=characteristic,
                values=values,
            ))]
            assert gateway.sink.priorities == {Priority.DEVICE}  # it may use the buffer's reserve (H-22)
            assert (gateway.central.devices_connected, gateway.central.readings_published) == (1, 1)

    run(scenario)


def test_the_same_stored_measurement_sent_again_keeps_its_event_id_and_fresh_readings_do_not(tmp_path):
    """A device timestamp identifies a measurement. Without one, two equal readings are two events."""

    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            device = PulseOximeter(gateway.link, gateway.provision("pulse_oximeter"))
            await gateway.start(device)
            await device.measure(97, 72, timestamp=DEVICE_TIME)
            await device.measure(97, 72, timestamp=DEVICE_TIME)
            await device.measure(97, 72)
            await device.measure(97, 72)
            await eventually(lambda: len(gateway.sink.published) == 4)
            ids = [event.event_id for _, _, event in gateway.sink.published]
            assert ids[0] == ids[1]
            assert len({ids[0], ids[2], ids[3]}) == 3

    run(scenario)


def test_a_measurement_taken_before_the_gateway_connects_is_delivered_once_it_subscribes(tmp_path):
    async def scenario() -> None:
        async with virtual_gateway(tmp_path) as gateway:
            address = Address.generate_static_address().to_string(with_type_qualifier=False)
            device = Thermometer(gateway.link, address)
            await gateway.start(device)
            # Not yet in the registry, so the central ignores the device and nobody subscribes.
            pending = asyncio.create_task(device.measure(36.9))
            await eventually(lambda: gateway.central.unregistered_ignored > 0)
            assert not pending.done()
            gateway.registry.provision_device(address, kind="thermometer", location_id=LOCATION,
                                              resident_id=RESIDENT)
            await pending
            [(_, _, reading)] = gateway.sink.published
            assert reading.values["temperature_c"] == 36.9

    run(scenario)
