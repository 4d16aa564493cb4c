"""Pulse Oximeter service 0x1822: server template, collector side and emulated oximeter
(ble_health.md §7, §8).

Characteristics [AN-UUID], [XML-PLXS], [XML-PLXC], [PLXF]:
- PLX Spot-check Measurement 0x2A5E, indicated: one acknowledged reading per spot check;
- PLX Continuous Measurement 0x2A5F, notified: a stream while the probe is on;
- PLX Features 0x2A60, read: a uint16 bitmap of what the device supports (§7).
"""

from __future__ import annotations

from decimal import Decimal

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from gateway.ble.devices import EmulatedGattDevice
from gateway.codecs import plx

SERVICE_UUID = 0x1822
SPOT_CHECK_UUID = 0x2A5E
CONTINUOUS_UUID = 0x2A5F
FEATURES_UUID = 0x2A60

#: What a collector subscribes to. The features characteristic describes the device and is not a reading.
MEASUREMENT_UUIDS = (SPOT_CHECK_UUID, CONTINUOUS_UUID)

#: PLX Features bit 3, "spot-check timestamp" (§7 [PLXF]). Bits 0 and 1 are clear, so no status-support
#: fields follow the bitmap.
SPOT_CHECK_TIMESTAMP_SUPPORTED = 1 << 3

Number = float | int | Decimal


class PulseOximeterService(gatt.TemplateService):
    UUID = gatt.GATT_PULSE_OXIMETER_SERVICE

    def __init__(self, features: int = SPOT_CHECK_TIMESTAMP_SUPPORTED) -> None:
        self.spot_check = gatt.Characteristic(
            UUID.from_16_bits(SPOT_CHECK_UUID), gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.Permissions(0), b"",
        )
        self.continuous = gatt.Characteristic(
            UUID.from_16_bits(CONTINUOUS_UUID), gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.Permissions(0), b"",
        )
        self.features = gatt.Characteristic(
            UUID.from_16_bits(FEATURES_UUID), gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE, features.to_bytes(2, "little"),
        )
        super().__init__([self.spot_check, self.continuous, self.features])


class PulseOximeter(EmulatedGattDevice):
    """An emulated fingertip oximeter."""

    def __init__(self, link: LocalLink, address: str, *, requires_pairing: bool = False) -> None:
        super().__init__(
            link, address, "PLX oximeter", PulseOximeterService(), requires_pairing=requires_pairing
        )

    async def measure(
        self, spo2_pct: Number, pulse_rate_bpm: Number, *, timestamp: str | None = None
    ) -> bytes:
        """Indicate a spot-check reading and return the bytes sent.

        `timestamp` is naive device-local time (§4).
        """
        payload = plx.encode_spot_check(spo2_pct, pulse_rate_bpm, timestamp=timestamp)
        await self.send(SPOT_CHECK_UUID, payload)
        return payload

    async def measure_continuous(self, spo2_pct: Number, pulse_rate_bpm: Number) -> bytes:
        """Notify one continuous reading (SpO2PR-Normal only). Returns the bytes sent."""
        payload = plx.encode_continuous(spo2_pct, pulse_rate_bpm)
        await self.send(CONTINUOUS_UUID, payload)
        return payload
