"""`EmulatedHome`: a small care home of emulated BLE devices on a virtual link, provisioned in a `Registry`.

The demo and the tests use it. Each resident gets:
- a pulse oximeter, a blood-pressure cuff and a thermometer, the GATT devices `take_vitals` drives.
  The cuff requires pairing, so every run also goes through the central's pairing path;
- a call bell in their room and a smart cup, both BTHome;
- a fall pendant, only for the residents named in `pendant_wearers` (e.g. the one who is deteriorating).

Each device gets a random static address, and each BTHome device a fresh 16-byte key. All are written to
the registry for the resident at their location, and the residents are registered as well. The central
finds the devices by scanning. Nothing in it knows they are emulated.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from bumble.hci import Address
from bumble.link import LocalLink

from gateway.ble.blood_pressure import BloodPressureCuff
from gateway.ble.bthome import CallBell, FallPendant, SmartCup
from gateway.ble.devices import EmulatedPeripheral
from gateway.ble.health_thermometer import Thermometer
from gateway.ble.pulse_oximeter import PulseOximeter
from gateway.registry import BTHOME_KEY_BYTES, Registry

_Advertiser = TypeVar("_Advertiser", CallBell, SmartCup, FallPendant)


@dataclass
class ResidentDevices:
    oximeter: PulseOximeter
    cuff: BloodPressureCuff
    thermometer: Thermometer
    call_bell: CallBell
    cup: SmartCup
    pendant: FallPendant | None


class EmulatedHome:
    def __init__(
        self,
        link: LocalLink,
        registry: Registry,
        residents: Mapping[str, str],
        *,
        pendant_wearers: Iterable[str] = (),
    ) -> None:
        """`residents` maps resident id to location id. Devices are built in `start`, because bumble's
        virtual controllers need a running event loop."""
        self.link = link
        self.registry = registry
        self.residents = dict(residents)
        self.pendant_wearers = frozenset(pendant_wearers)
        unknown = self.pendant_wearers - self.residents.keys()
        if unknown:
            raise ValueError(f"pendant wearers {', '.join(sorted(unknown))} are not residents of this home")
        self.devices: dict[str, ResidentDevices] = {}

    async def start(self) -> None:
        """Build, provision and power on every device. The GATT devices start advertising."""
        for resident_id, location_id in self.residents.items():
            self.registry.add_resident(resident_id, location_id)
            self.devices[resident_id] = ResidentDevices(
                oximeter=PulseOximeter(self.link, self._provision("pulse_oximeter", resident_id)),
                cuff=BloodPressureCuff(self.link, self._provision("blood_pressure", resident_id),
                                       requires_pairing=True),
                thermometer=Thermometer(self.link, self._provision("thermometer", resident_id)),
                call_bell=self._bthome(CallBell, "call_bell", resident_id),
                cup=self._bthome(SmartCup, "smart_cup", resident_id),
                pendant=(self._bthome(FallPendant, "fall_pendant", resident_id)
                         if resident_id in self.pendant_wearers else None),
            )
        await asyncio.gather(*(device.start() for device in self._all_devices()))

    async def stop(self) -> None:
        await asyncio.gather(*(device.close() for device in self._all_devices()))

    async def __aenter__(self) -> EmulatedHome:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- what happens in the home ----------------------------------------------------------------
    async def take_vitals(
        self,
        resident_id: str,
        *,
        spo2: float,
        pulse: float,
        systolic: float,
        diastolic: float,
        temperature_c: float,
    ) -> None:
        """A carer takes the resident's vitals with the oximeter, the cuff and the thermometer.

        Values go out at chart precision: SpO2, pulse and pressures to whole numbers, temperature to 0.1 °C.
        Returns once the central has acknowledged all three indications.
        """
        devices = self._of(resident_id)
        await asyncio.gather(
            devices.oximeter.measure(round(spo2), round(pulse)),
            devices.cuff.measure(round(systolic), round(diastolic), pulse_rate_bpm=round(pulse)),
            devices.thermometer.measure(Decimal(str(temperature_c)).quantize(Decimal("0.1"))),
        )

    async def press_call_bell(self, resident_id: str) -> None:
        await self._of(resident_id).call_bell.emit()

    async def fall(self, resident_id: str) -> None:
        """The resident's fall pendant sends its alert (a long press)."""
        pendant = self._of(resident_id).pendant
        if pendant is None:
            raise ValueError(f"resident {resident_id} wears no fall pendant in this home")
        await pendant.emit()

    async def cup_volume(self, resident_id: str, ml: int) -> None:
        """The resident's smart cup reports `ml` of liquid left."""
        await self._of(resident_id).cup.emit(ml)

    # -- internals -------------------------------------------------------------------------------
    def _of(self, resident_id: str) -> ResidentDevices:
        try:
            return self.devices[resident_id]
        except KeyError:
            raise ValueError(
                f"resident {resident_id} is not in this emulated home (or it is not started)"
            ) from None

    def _provision(self, kind: str, resident_id: str, bthome_key: bytes | None = None) -> str:
        address = Address.generate_static_address().to_string(with_type_qualifier=False)
        self.registry.provision_device(address, kind=kind, location_id=self.residents[resident_id],
                                       resident_id=resident_id, bthome_key=bthome_key)
        return address

    def _bthome(self, device_class: type[_Advertiser], kind: str, resident_id: str) -> _Advertiser:
        key = secrets.token_bytes(BTHOME_KEY_BYTES)
        return device_class(self.link, self._provision(kind, resident_id, key), key=key)

    def _all_devices(self) -> list[EmulatedPeripheral]:
        found: list[EmulatedPeripheral] = []
        for devices in self.devices.values():
            found += [devices.oximeter, devices.cuff, devices.thermometer, devices.call_bell, devices.cup]
            if devices.pendant is not None:
                found.append(devices.pendant)
        return found
