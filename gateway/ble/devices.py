"""Plumbing shared by the emulated BLE devices. Each one is a complete bumble `Device` on a virtual
controller.

An emulated device runs bumble's whole host stack unchanged: HCI, L2CAP, ATT/GATT and SMP. Only the
controller differs. It is bumble's in-process `Controller` on a `LocalLink`, where a real device has a
radio. The gateway's central therefore reaches an emulated device through the same code path as a real
one: advertising reports, LE connections, GATT discovery, CCCD writes, notifications, indications and
pairing. Values are encoded with `gateway.codecs`, the same tables the central decodes with
(style.md, bumble profiles).

Two virtual-link behaviours are handled here:
- the virtual controller ignores HCI Reset and has no supervision timeout. `close` therefore ends
  connections and advertising explicitly before the controller leaves the link. Otherwise the central
  would keep a connection that nothing ever ends;
- a device stops advertising when a central connects. A GATT device starts advertising again when that
  connection ends, as a real sensor does, so that the central can reconnect.
"""

from __future__ import annotations

import asyncio

from bumble import att, gatt
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

#: The shortest legal advertising interval: a central on the virtual link finds the device at once.
ADVERTISING_INTERVAL_MS = 20.0
#: How long `send` waits for a collector to subscribe, like a device holding a stored measurement.
DELIVERY_TIMEOUT_S = 10.0

# AD Flags "LE General Discoverable, BR/EDR not supported". BlueZ in passive mode needs it
# (ble_health.md §11.1).
_AD_FLAGS = bytes([0x02, AdvertisingData.FLAGS, 0x06])


def ad_structure(ad_type: int, value: bytes) -> bytes:
    """One AD structure: length, type and value (Bluetooth Core Vol 3, Part C, §11)."""
    return bytes([len(value) + 1, ad_type]) + value


def advertising_data(*structures: bytes) -> bytes:
    """Advertising data: the flags structure first, then `structures`."""
    return _AD_FLAGS + b"".join(structures)


class EmulatedPeripheral:
    """A bumble `Device` with its own virtual controller on `link`, at `address` (a random static address).

    Construct it inside a running event loop, because bumble's controller binds to that loop.
    """

    def __init__(self, link: LocalLink, address: str, name: str) -> None:
        self.link = link
        self.name = name
        self._controller = Controller(name, link=link)
        self.device = Device(
            name=name,
            address=Address(address, Address.RANDOM_DEVICE_ADDRESS),
            host=Host(self._controller, AsyncPipeSink(self._controller)),
        )

    @property
    def address(self) -> str:
        """The address as the registry and the central write it, e.g. ``C4:12:34:56:78:9A``."""
        return self.device.random_address.to_string(with_type_qualifier=False)

    async def start(self) -> None:
        await self.device.power_on()

    async def disconnect(self) -> None:
        """End every connection, as a device that walks out of range or finishes its upload does."""
        for connection in list(self.device.connections.values()):
            await connection.disconnect()

    async def close(self) -> None:
        await self._stop_advertising()
        await self.disconnect()
        await self.device.power_off()
        self.link.remove_controller(self._controller)

    async def _stop_advertising(self) -> None:
        await self.device.stop_advertising()
        for advertising_set in list(self.device.extended_advertising_sets.values()):
            if advertising_set.enabled:
                await advertising_set.stop()
            await advertising_set.remove()


class EmulatedGattDevice(EmulatedPeripheral):
    """A GATT server with one health service. It advertises connectably and sends measurements to subscribers.

    With `requires_pairing`, its CCCDs can be written only over an encrypted link. A collector that
    subscribes before pairing gets ATT "Insufficient Encryption" and must pair (or encrypt with its bond)
    first, as with health devices that insist on bonding.
    """

    def __init__(
        self,
        link: LocalLink,
        address: str,
        name: str,
        service: gatt.Service,
        *,
        requires_pairing: bool = False,
    ) -> None:
        super().__init__(link, address, name)
        self.service = service
        self.requires_pairing = requires_pairing
        if requires_pairing:
            self._encrypt_subscriptions(service)
        self.device.add_service(service)
        self._closing = False
        self._readvertising: set[asyncio.Task[None]] = set()
        self._subscriptions_changed = asyncio.Event()
        self.device.gatt_server.on(
            self.device.gatt_server.EVENT_CHARACTERISTIC_SUBSCRIPTION,
            lambda *_: self._subscriptions_changed.set(),
        )
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)

    async def start(self) -> None:
        await super().start()
        await self._advertise()

    async def send(
        self, characteristic_uuid: int, payload: bytes, *, timeout_s: float = DELIVERY_TIMEOUT_S
    ) -> None:
        """Notify or indicate `payload` (any bytes, even malformed ones) once a collector has subscribed.

        The characteristic's own property decides between notify and indicate. An indication returns only
        after the collector confirms it.
        """
        characteristic = self._characteristic(characteristic_uuid)
        indicate = bool(characteristic.properties & gatt.Characteristic.Properties.INDICATE)
        try:
            await asyncio.wait_for(self._subscribed(characteristic, indicate), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name} {self.address}: no collector subscribed to 0x{characteristic_uuid:04X} "
                f"within {timeout_s} s"
            ) from None
        if indicate:
            await self.device.indicate_subscribers(characteristic, payload)
        else:
            await self.device.notify_subscribers(characteristic, payload)

    async def close(self) -> None:
        self._closing = True
        # A restart that is already running would otherwise race the teardown for the same advertising set.
        await asyncio.gather(*self._readvertising)
        await super().close()

    # -- internals -------------------------------------------------------------------------------
    async def _advertise(self) -> None:
        service_uuid = self.service.uuid.to_bytes()  # little-endian, as AD structures carry it
        await self.device.start_advertising(
            advertising_data=advertising_data(
                ad_structure(AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, service_uuid),
                ad_structure(AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
            ),
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    def _on_connection(self, connection: Connection) -> None:
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._readvertise())

    def _readvertise(self) -> None:
        # This is not bumble's auto_restart. That would restart an advertising set that `close` may
        # already have removed.
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._advertise())
        self._readvertising.add(task)
        task.add_done_callback(self._readvertising.discard)

    def _characteristic(self, uuid: int) -> gatt.Characteristic:
        wanted = UUID.from_16_bits(uuid)
        for characteristic in self.service.characteristics:
            if characteristic.uuid == wanted:
                return characteristic
        raise ValueError(f"{self.name} has no characteristic 0x{uuid:04X}")

    async def _subscribed(self, characteristic: gatt.Characteristic, indicate: bool) -> None:
        enabled_bit = 0x02 if indicate else 0x01  # CCCD bit 1 indications, bit 0 notifications
        while not any(
            len(cccd) == 2 and cccd[0] & enabled_bit
            for cccds in self.device.gatt_server.subscribers.values()
            if (cccd := cccds.get(characteristic.handle))
        ):
            self._subscriptions_changed.clear()
            await self._subscriptions_changed.wait()

    def _encrypt_subscriptions(self, service: gatt.Service) -> None:
        # bumble adds an open CCCD to every notify/indicate characteristic that has none. This one
        # declares its own, backed by the server's per-connection subscription state.
        for characteristic in service.characteristics:
            if characteristic.properties & (
                gatt.Characteristic.Properties.NOTIFY | gatt.Characteristic.Properties.INDICATE
            ):
                characteristic.descriptors = [*characteristic.descriptors, gatt.Descriptor(
                    gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                    att.Attribute.READABLE | att.Attribute.WRITEABLE
                    | att.Attribute.WRITE_REQUIRES_ENCRYPTION,
                    self.device.gatt_server.make_descriptor_value(characteristic),
                )]


__all__ = [
    "ADVERTISING_INTERVAL_MS", "DELIVERY_TIMEOUT_S", "EmulatedGattDevice", "EmulatedPeripheral",
    "ad_structure", "advertising_data",
]
