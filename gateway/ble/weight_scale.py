"""Weight Scale service 0x181D: server template, collector side and emulated scale (ble_health.md §10).

Characteristics [AN-UUID], [GSS-WM], [GSS-WSF]:
- Weight Measurement 0x2A9D, indicated;
- Weight Scale Feature 0x2A9E, read. It states the weight and height resolution, but decoding always
  uses the GSS resolutions (§10 Note). The emulated scale sends 0, "resolution not specified".
"""

from __future__ import annotations

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from gateway.ble.devices import EmulatedGattDevice
from gateway.codecs import weight

SERVICE_UUID = 0x181D
MEASUREMENT_UUID = 0x2A9D
FEATURE_UUID = 0x2A9E

#: What a collector subscribes to.
MEASUREMENT_UUIDS = (MEASUREMENT_UUID,)


class WeightScaleService(gatt.TemplateService):
    UUID = gatt.GATT_WEIGHT_SCALE_SERVICE

    def __init__(self) -> None:
        self.feature = gatt.Characteristic(
            UUID.from_16_bits(FEATURE_UUID), gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE, bytes(4),  # uint32 feature bitmap
        )
        self.measurement = gatt.Characteristic(
            UUID.from_16_bits(MEASUREMENT_UUID), gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.Permissions(0), b"",
        )
        super().__init__([self.feature, self.measurement])


class WeightScale(EmulatedGattDevice):
    """An emulated SI scale, such as a seated or chair scale."""

    def __init__(self, link: LocalLink, address: str, *, requires_pairing: bool = False) -> None:
        super().__init__(
            link, address, "Weight scale", WeightScaleService(), requires_pairing=requires_pairing
        )

    async def measure(
        self, weight_kg: float, *, user_id: int | None = None, timestamp: str | None = None
    ) -> bytes:
        """Indicate a measurement (rounded to the 0.005 kg GSS resolution). Returns the bytes sent."""
        payload = weight.encode(weight_kg, user_id=user_id, timestamp=timestamp)
        await self.send(MEASUREMENT_UUID, payload)
        return payload
