"""The controller the gateway's central runs on, chosen by `Settings.ble_transport`.

The central never learns which transport this is: it gets a bumble `Device` and nothing else.
- A real dongle is a bumble transport spec such as ``usb:0`` or ``hci-socket:0``, opened with
  `bumble.transport.open_transport`. bumble 0.0.236 deprecates `open_transport_or_link` in its favour,
  because the link relay that function also opened has been removed.
- ``virtual`` is an in-process bumble `Controller` on a new `LocalLink`. Emulated devices join the same
  link (`gateway.ble.home.EmulatedHome`) and reach the central over the same HCI path a dongle uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

VIRTUAL = "virtual"


@dataclass
class ControllerTransport:
    """An open controller: `device` is the central's bumble Device (not yet powered on).

    `link` is the virtual link when the spec was ``virtual``. Emulated devices join it, and it is
    ``None`` for a real dongle.
    """

    device: Device
    link: LocalLink | None
    _hci: Transport | None = None

    async def close(self) -> None:
        await self.device.power_off()
        if self._hci is not None:
            await self._hci.close()

    async def __aenter__(self) -> ControllerTransport:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


async def open_controller_transport(
    spec: str, *, name: str = "carepulse-gateway", address: str | None = None
) -> ControllerTransport:
    """Open the controller named by `spec` (``virtual``, ``usb:0``, ``hci-socket:0``, …).

    `address` is the central's random static address. When it is ``None``, a new one is made at power-on.
    A peripheral keeps its bond with the address it paired with, so the caller should pass a fixed
    address if bonds are to survive a restart.
    """
    own_address = Address(address, Address.RANDOM_DEVICE_ADDRESS) if address else Address.ANY_RANDOM
    if spec == VIRTUAL:
        link = LocalLink()
        controller = Controller(name, link=link)
        device = Device(name=name, address=own_address, host=Host(controller, AsyncPipeSink(controller)))
        return ControllerTransport(device, link)
    hci = await open_transport(spec)
    return ControllerTransport(Device.with_hci(name, own_address, hci.source, hci.sink), None, hci)
