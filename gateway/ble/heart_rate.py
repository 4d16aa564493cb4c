"""Heart Rate service 0x180D: server template, collector side and emulated chest strap (ble_health.md §9).

Heart Rate Measurement 0x2A37 is notified [AN-UUID], [GSS-HRM]. A strap streams readings, and a lost
notification is replaced by the next one.
"""

from __future__ import annotations

from collections.abc import Sequence

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from gateway.ble.devices import EmulatedGattDevice
from gateway.codecs import heart_rate

SERVICE_UUID = 0x180D
MEASUREMENT_UUID = 0x2A37

#: What a collector subscribes to.
MEASUREMENT_UUIDS = (MEASUREMENT_UUID,)


class HeartRateService(gatt.TemplateService):
    UUID = gatt.GATT_HEART_RATE_SERVICE

    def __init__(self) -> None:
        self.measurement = gatt.Characteristic(
            UUID.from_16_bits(MEASUREMENT_UUID), gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.Permissions(0), b"",
        )
        super().__init__([self.measurement])


class HeartRateStrap(EmulatedGattDevice):
    """An emulated chest strap with skin-contact detection."""

    def __init__(self, link: LocalLink, address: str, *, requires_pairing: bool = False) -> None:
        super().__init__(link, address, "HR strap", HeartRateService(), requires_pairing=requires_pairing)

    async def measure(
        self,
        heart_rate_bpm: int,
        *,
        rr_intervals_ms: Sequence[float] | None = None,
        sensor_contact: str = "detected",
    ) -> bytes:
        """Notify one reading. Returns the bytes sent."""
        payload = heart_rate.encode(
            heart_rate_bpm, sensor_contact=sensor_contact, rr_intervals_ms=rr_intervals_ms
        )
        await self.send(MEASUREMENT_UUID, payload)
        return payload
