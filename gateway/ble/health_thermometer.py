"""Health Thermometer service 0x1809: server template, collector side and emulated thermometer
(ble_health.md §5).

Temperature Measurement 0x2A1C is indicated [AN-UUID], [GSS-TM]. Intermediate Temperature 0x2A1E
carries interim readings shown while a measurement runs (§5 [GSS-IT]). A collector does not subscribe
to it.
"""

from __future__ import annotations

from decimal import Decimal

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from gateway.ble.devices import EmulatedGattDevice
from gateway.codecs import temperature

SERVICE_UUID = 0x1809
MEASUREMENT_UUID = 0x2A1C

#: What a collector subscribes to.
MEASUREMENT_UUIDS = (MEASUREMENT_UUID,)

Number = float | int | Decimal


class HealthThermometerService(gatt.TemplateService):
    UUID = gatt.GATT_HEALTH_THERMOMETER_SERVICE

    def __init__(self) -> None:
        self.measurement = gatt.Characteristic(
            UUID.from_16_bits(MEASUREMENT_UUID), gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.Permissions(0), b"",
        )
        super().__init__([self.measurement])


class Thermometer(EmulatedGattDevice):
    """An emulated clinical thermometer reporting in °C."""

    def __init__(self, link: LocalLink, address: str, *, requires_pairing: bool = False) -> None:
        super().__init__(
            link, address, "Thermometer", HealthThermometerService(), requires_pairing=requires_pairing
        )

    async def measure(
        self,
        temperature_c: Number,
        *,
        temperature_type: str | None = None,
        timestamp: str | None = None,
    ) -> bytes:
        """Indicate a measurement and return the bytes sent.

        `temperature_type` is a [GSS-TT] name such as "tympanum".
        """
        payload = temperature.encode(temperature_c, temperature_type=temperature_type, timestamp=timestamp)
        await self.send(MEASUREMENT_UUID, payload)
        return payload
