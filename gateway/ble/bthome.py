"""BTHome v2 advertisers (fall pendant, call bell, smart cup) and what the receiver makes of their objects.

BTHome devices do not connect. Each one broadcasts service data under UUID 0xFCD2 in its advertising
data (ble_health.md §11.1). An emulated advertiser encrypts every frame with its key and the next counter
value (§11.4). It puts the frame on the air for a short burst and then goes quiet, as a battery button
does. Objects go out in ascending id order (§11.3): packet id 0x00, battery 0x01, then the event or
measurement.

**Policy**, how care events are read from the BTHome button event 0x3A (§11.3):
- call bell, `press` (0x01): a call is raised;
- fall pendant, `long_press` (0x04): a fall alert. The alert needs a deliberate hold, so brushing against
  the pendant does not raise one. Staff must still confirm it before it counts as a fall
  (`events.Fall`, cqc_domain.md §2.1);
- smart cup: volume 0x48, in mL, is the liquid left in the cup. It is reported as a reading, and the
  intake is worked out downstream.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from bumble.core import AdvertisingData
from bumble.device import AdvertisingEventProperties, AdvertisingParameters
from bumble.link import LocalLink

from gateway.ble.devices import ADVERTISING_INTERVAL_MS, EmulatedPeripheral, ad_structure, advertising_data
from gateway.codecs import encode_bthome

SERVICE_DATA_UUID = 0xFCD2
SERVICE_DATA_UUID_BYTES = SERVICE_DATA_UUID.to_bytes(2, "little")  # D2 FC, as sent (§11.1)

# Object ids (§11.3 [BTH-FMT]).
PACKET_ID = 0x00
BATTERY = 0x01
BUTTON = 0x3A
VOLUME_ML = 0x48

CALL_BUTTON_EVENT = "press"
FALL_BUTTON_EVENT = "long_press"

#: How long one frame stays on the air. At a 20 ms interval that is about ten advertising events, so a
#: scanner that misses a few still hears the frame.
BURST_S = 0.2

# Key suffixes for the [BTH-FMT] units, so that a key carries its unit (`volume_ml`, `battery_pct`).
_UNIT_SUFFIXES = {
    "%": "pct", "°C": "c", "hPa": "hpa", "µg/m³": "ug_m3", "m/s": "m_s", "mL": "ml", "L": "l",
    "m³/h": "m3_h", "m³": "m3", "m/s²": "m_s2", "°/s": "deg_s", "°": "deg", "µS/cm": "us_cm",
}


def reading_values(decoded: dict[str, Any]) -> dict[str, float | int | str | bool]:
    """A decoded frame's objects as flat reading values.

    For example ``{"packet_id": 9, "battery_pct": 97, "volume_ml": 250}``.

    Keys are the object name plus its unit. A repeated property gets ``_2``, ``_3`` and so on in payload
    order, because order is what tells repeats apart (§11.3). A dimmer becomes ``dimmer_event`` and
    ``dimmer_steps``. When parsing stopped at an object id the table does not know, ``unparsed_from_id``
    keeps that id visible in the data.
    """
    values: dict[str, float | int | str | bool] = {}
    occurrences: dict[str, int] = {}
    for item in decoded["objects"]:
        base = _key(item["name"], item["unit"])
        occurrences[base] = occurrences.get(base, 0) + 1
        key = base if occurrences[base] == 1 else f"{base}_{occurrences[base]}"
        if isinstance(item["value"], dict):  # dimmer: {"event", "steps"}
            values |= {f"{key}_{part}": value for part, value in item["value"].items()}
        else:
            values[key] = item["value"]
    if decoded["unparsed_from_id"] is not None:
        values["unparsed_from_id"] = decoded["unparsed_from_id"]
    return values


def button_events(decoded: dict[str, Any]) -> list[str]:
    """The button events in a decoded frame, e.g. ``["long_press"]``."""
    return [item["value"] for item in decoded["objects"] if item["id"] == BUTTON]


def _key(name: str, unit: str | None) -> str:
    if unit is None:
        return name
    suffix = _UNIT_SUFFIXES.get(unit) or re.sub(r"[^a-z0-9]+", "_", unit.lower()).strip("_")
    return f"{name}_{suffix}"


class BTHomeAdvertiser(EmulatedPeripheral):
    """A BTHome v2 sensor. Each `broadcast` puts one service-data frame on the air for `burst_s` seconds.

    With a `key`, frames are AES-CCM encrypted for this device's address with a counter that goes up by
    one for every frame (§11.4). Without a key they go out as plaintext.
    """

    def __init__(
        self,
        link: LocalLink,
        address: str,
        name: str,
        *,
        key: bytes | None,
        trigger_based: bool,
        battery_pct: int = 100,
        burst_s: float = BURST_S,
    ) -> None:
        super().__init__(link, address, name)
        self.key = key
        self.trigger_based = trigger_based
        self.battery_pct = battery_pct
        self.burst_s = burst_s
        self.counter = 0  # of the last encrypted frame
        self.packet_id = 0  # of the last frame, uint8 (§11.3)
        self._radio = asyncio.Lock()  # one radio: a burst ends before the next one starts

    def frame(self, *objects: tuple[int, Any]) -> bytes:
        """The next frame (service data without the UUID) for `objects`, with packet id and battery first."""
        self.packet_id = (self.packet_id + 1) % 256
        if self.key is not None:
            self.counter += 1
        return encode_bthome(
            [(PACKET_ID, self.packet_id), (BATTERY, self.battery_pct), *objects],
            trigger_based=self.trigger_based, mac=self.address, key=self.key, counter=self.counter,
        )

    async def close(self) -> None:
        async with self._radio:  # a burst still on the air would otherwise tear down its own advertising set
            await super().close()

    async def broadcast(self, frame: bytes) -> None:
        """Advertise `frame` (any bytes, even a replayed or malformed frame) for one burst, then go quiet."""
        data = advertising_data(
            ad_structure(AdvertisingData.SERVICE_DATA_16_BIT_UUID, SERVICE_DATA_UUID_BYTES + frame)
        )
        async with self._radio:
            advertising_set = await self.device.create_advertising_set(
                advertising_parameters=AdvertisingParameters(
                    # Legacy non-connectable, non-scannable PDUs (ADV_NONCONN_IND), as BTHome sensors send.
                    advertising_event_properties=AdvertisingEventProperties(
                        is_connectable=False, is_scannable=False, is_legacy=True
                    ),
                    primary_advertising_interval_min=ADVERTISING_INTERVAL_MS,
                    primary_advertising_interval_max=ADVERTISING_INTERVAL_MS,
                ),
                advertising_data=data,
            )
            try:
                await asyncio.sleep(self.burst_s)
            finally:
                await advertising_set.stop()
                await advertising_set.remove()


class CallBell(BTHomeAdvertiser):
    """A resident's call point: one button."""

    def __init__(self, link: LocalLink, address: str, *, key: bytes | None, burst_s: float = BURST_S) -> None:
        super().__init__(link, address, "Call bell", key=key, trigger_based=True, burst_s=burst_s)

    async def emit(self) -> bytes:
        """The resident presses the call button. Returns the frame sent."""
        frame = self.frame((BUTTON, CALL_BUTTON_EVENT))
        await self.broadcast(frame)
        return frame


class FallPendant(BTHomeAdvertiser):
    """A worn pendant. A long press is a fall alert (module Policy)."""

    def __init__(self, link: LocalLink, address: str, *, key: bytes | None, burst_s: float = BURST_S) -> None:
        super().__init__(link, address, "Fall pendant", key=key, trigger_based=True, burst_s=burst_s)

    async def emit(self) -> bytes:
        """The wearer holds the button down after a fall. Returns the frame sent."""
        frame = self.frame((BUTTON, FALL_BUTTON_EVENT))
        await self.broadcast(frame)
        return frame


class SmartCup(BTHomeAdvertiser):
    """A cup that reports the liquid left in it, in mL."""

    def __init__(self, link: LocalLink, address: str, *, key: bytes | None, burst_s: float = BURST_S) -> None:
        super().__init__(link, address, "Smart cup", key=key, trigger_based=False, burst_s=burst_s)

    async def emit(self, volume_ml: int) -> bytes:
        """Report `volume_ml` left in the cup. Returns the frame sent."""
        frame = self.frame((VOLUME_ML, volume_ml))
        await self.broadcast(frame)
        return frame
