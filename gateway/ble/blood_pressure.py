"""Blood Pressure service 0x1810: server template, collector side and emulated cuff (ble_health.md §6).

Blood Pressure Measurement 0x2A35 is indicated [AN-UUID], [GSS-BPM]. Intermediate Cuff Pressure 0x2A36
carries the pressure during inflation, not a measurement (§6 [GSS-ICP]). The emulated cuff does not
expose it, and a collector does not subscribe to it.
"""

from __future__ import annotations

from decimal import Decimal

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from gateway.ble.devices import EmulatedGattDevice
from gateway.codecs import blood_pressure
from gateway.codecs.ieee11073 import SpecialValue

SERVICE_UUID = 0x1810
MEASUREMENT_UUID = 0x2A35

#: What a collector subscribes to.
MEASUREMENT_UUIDS = (MEASUREMENT_UUID,)

Number = float | int | Decimal


class BloodPressureService(gatt.TemplateService):
    UUID = gatt.GATT_BLOOD_PRESSURE_SERVICE

    def __init__(self) -> None:
        self.measurement = gatt.Characteristic(
            UUID.from_16_bits(MEASUREMENT_UUID), gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.Permissions(0), b"",
        )
        super().__init__([self.measurement])


class BloodPressureCuff(EmulatedGattDevice):
    """An emulated upper-arm cuff reporting in mmHg."""

    def __init__(self, link: LocalLink, address: str, *, requires_pairing: bool = False) -> None:
        super().__init__(link, address, "BP cuff", BloodPressureService(), requires_pairing=requires_pairing)

    async def measure(
        self,
        systolic_mmhg: Number,
        diastolic_mmhg: Number,
        *,
        mean_arterial_pressure_mmhg: Number | SpecialValue = SpecialValue.NAN,
        pulse_rate_bpm: Number | None = None,
        timestamp: str | None = None,
    ) -> bytes:
        """Indicate a measurement. Returns the bytes sent.

        By default the MAP is sent as SFLOAT NaN, the usual way for a cuff that does not compute it
        (§6 Note).
        """
        payload = blood_pressure.encode(
            systolic_mmhg, diastolic_mmhg, mean_arterial_pressure_mmhg,
            pulse_rate_bpm=pulse_rate_bpm, timestamp=timestamp,
        )
        await self.send(MEASUREMENT_UUID, payload)
        return payload
