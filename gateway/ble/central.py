"""The gateway's BLE central: advertisements and GATT values in, carepulse events out.

It runs on any bumble `Device` (`gateway.ble.transport` picks the controller) and scans passively the
whole time. Only devices in the `Registry` count. An advertisement from any other address is ignored
and counted.

BTHome sensors (ble_health.md §11): call bell, fall pendant, smart cup.
- The service data under 0xFCD2 is decrypted with the device's registry key. The counter must then
  pass `Registry.accept_bthome_counter`, which rejects a replayed frame (counted). A plaintext frame
  from a device that has a key is refused as a downgrade (§11.4 [BTH-ENC], [BTH-BLE]).
- A frame is repeated in every advertising event of its burst. Repeats of the frame last handled for a
  device are dropped before decryption, so one frame is one event and repeats do not count as replays.
- Every accepted frame becomes a `DeviceReading(characteristic="bthome")` on READINGS, keyed by
  resident, with the objects flattened (`gateway.ble.bthome.reading_values`). A location-level device
  with no resident has no READINGS entry.
- A call bell's `press` becomes `CallBell(phase="raised")` on CARE_EVENTS. A fall pendant's
  `long_press` becomes an unconfirmed device `Fall`, also on CARE_EVENTS. Both are keyed by location.
  Their ids come from the address and the frame counter, so handling the same frame again gives the
  same event.

GATT health devices (§5-§10): pulse oximeter, blood-pressure cuff, thermometer, heart-rate strap, weight
scale.
- An advertisement from a registered GATT device that has no session starts one. The session connects,
  discovers services and subscribes to each measurement characteristic the device has, preferring
  indications, which are acknowledged. If the device refuses the CCCD write with "Insufficient
  Encryption" or "Insufficient Authentication", the central encrypts with its bond, or pairs and bonds
  when it has none, and subscribes again.
- Each value is decoded with `gateway.codecs.decode` and becomes a `DeviceReading` on READINGS, keyed by
  resident. Its `values` are the decoded fields that the event contract can carry: scalars and lists of
  numbers. Lists of status names are dropped. An indication is confirmed only after `sink.publish`
  returns (bumble confirms after calling the subscriber), so a durable sink has stored the reading
  before the device may discard it.
- **Time policy** (§4 Note: store the device time as naive local time next to the gateway's receive
  time): ``occurred_at`` is always the gateway's receive time in UTC. The device's own Time Stamp has no
  zone (§4) and the device clock may be wrong, so it is kept as device-local ISO text in
  ``values["timestamp"]`` (``None`` when not sent). A reading that carries a device timestamp gets an
  id derived from device, characteristic and bytes. A stored measurement that is sent again after a
  reconnect therefore keeps its id, and consumers drop the duplicate.
- When the connection ends, the next advertisement from that device starts a new session after a
  back-off. The back-off starts at `reconnect_backoff_s` and doubles after each failed session, up to
  `reconnect_backoff_max_s`. A session that managed to subscribe resets it.

Buffer refusals (hazard H-22): every event the central publishes is `Priority.DEVICE`. Nobody sends a
device reading again: ble_health.md does not describe a device keeping what a gateway did not store (it
only names a PLX "spot-check storage" feature bit [PLXF] and a "data from measurement storage" status bit
[XML-PLXS], §7), so the central cannot count on the device. The buffer keeps a reserve for these readings
and refuses tablet entries first. If it refuses a device reading all the same (reserve used up, disk full),
the reading is lost, and loudly: a CRITICAL log line with the device, the characteristic and the bytes
(enough to recover it by hand), `readings_lost`, and ``carepulse_gateway_device_readings_lost_total``: a
counter of its own, so an alert tells these losses from tablet refusals, which the tablets send again (a
buffer refusal is on ``carepulse_gateway_buffer_rejected_total`` as well). An indication is still
confirmed: leaving it unconfirmed would stall the device's link without any source saying the device would
keep the value.

Errors: the central never lets an input stop it. A value or frame that cannot be handled (a
`DecodeError`, a reading from a device with no resident, any other exception) becomes a `DeadLetter`
with ``stage="gateway.ble"`` on DEAD_LETTERS. The dead letter keeps the reason, ``original_topic`` as
``ble:0x<UUID>``, the device address as ``original_key`` and the bytes as hex. It is also logged.

The counters are plain attributes: `devices_seen` (registered devices heard), `devices_connected`
(GATT sessions open now), `readings_published`, `care_events_published`, `dead_letters`,
`replays_rejected`, `downgrades_rejected`, `unregistered_ignored` (advertisements from unregistered
addresses), and `readings_lost` (values and frames the buffer refused, see above). The same facts are recorded on `metrics` (`carepulse.metrics.GatewayMetrics`, the process-wide
`GATEWAY` unless one is passed): ``carepulse_gateway_ble_devices_seen``/``_connected``,
``carepulse_gateway_ble_rejected_total{reason="replay"|"downgrade"|"unregistered"}``,
``carepulse_dead_letters_total{stage="gateway.ble"}`` by reason category and
``carepulse_gateway_device_readings_lost_total``. Readings and care events are
counted where they enter the buffer (`gateway.publisher.Publisher`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from bumble import att
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.hci import Address

from carepulse import events
from carepulse.metrics import GATEWAY, GatewayMetrics
from carepulse.topics import CARE_EVENTS, DEAD_LETTERS, READINGS, TopicSpec
from gateway import codecs
from gateway.ble import blood_pressure, bthome, health_thermometer, heart_rate, pulse_oximeter, weight_scale
from gateway.buffer import BufferFull, Priority
from gateway.registry import Device as RegisteredDevice
from gateway.registry import Registry

log = logging.getLogger(__name__)

STAGE = "gateway.ble"

#: Registry device kinds served over GATT, and the measurement characteristics of each service.
GATT_KINDS = frozenset({"pulse_oximeter", "blood_pressure", "thermometer", "heart_rate", "weight_scale"})
MEASUREMENTS: dict[int, tuple[int, ...]] = {
    module.SERVICE_UUID: module.MEASUREMENT_UUIDS
    for module in (pulse_oximeter, blood_pressure, health_thermometer, heart_rate, weight_scale)
}
_SECURITY_ERRORS = (att.ErrorCode.INSUFFICIENT_ENCRYPTION, att.ErrorCode.INSUFFICIENT_AUTHENTICATION)


class EventSink(Protocol):
    """Where events go. `gateway.publisher.Publisher` is one: it buffers durably before returning, or raises
    `gateway.buffer.BufferFull`."""

    def publish(self, spec: TopicSpec, key: str | None, event: events.Event, *, priority: Priority) -> object: ...


def _stopping() -> bool:
    """Whether the current task is being cancelled.

    bumble also raises CancelledError when the link drops under a pending operation, and that case is
    a failed session. This tells the two apart.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _measurement_uuid16(service_uuid: UUID, characteristic_uuid: UUID) -> int | None:
    """The 16-bit UUID of a measurement characteristic this gateway subscribes to, else None.

    The comparison goes through bumble's `UUID` equality, so a device that declares the 128-bit
    Bluetooth-base form (§1) matches too.
    """
    for service16, measurements16 in MEASUREMENTS.items():
        if service_uuid == UUID.from_16_bits(service16):
            matches = (uuid16 for uuid16 in measurements16
                       if characteristic_uuid == UUID.from_16_bits(uuid16))
            return next(matches, None)
    return None


def device_id(address: str) -> str:
    """A device address as an event `Identifier`: ``AA:BB:CC:DD:EE:FF`` becomes ``AA-BB-CC-DD-EE-FF``."""
    return address.replace(":", "-")


def reading_values(decoded: dict[str, Any]) -> dict[str, Any]:
    """The decoded fields a `DeviceReading` can carry: scalars, lists of numbers and lists of status names
    (which say whether the device trusts its own measurement).

    The characteristic name is left out, because the reading carries it in its own field.
    """
    return {
        name: value for name, value in decoded.items()
        if name != "characteristic" and (
            value is None or isinstance(value, (bool, int, float, str))
            or (isinstance(value, list) and (
                all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value)
                or all(isinstance(item, str) for item in value)
            ))
        )
    }


class BleCentral:
    def __init__(
        self,
        device: Device,
        registry: Registry,
        sink: EventSink,
        *,
        gateway_id: str,
        scan_interval_ms: float = 100.0,
        connect_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 1.0,
        reconnect_backoff_max_s: float = 60.0,
        now: Callable[[], datetime] = events.utc_now,
        metrics: GatewayMetrics = GATEWAY,
    ) -> None:
        self.device = device
        self.registry = registry
        self.sink = sink
        # Validated here so that a bad gateway id fails at start-up and not on every event.
        self.gateway_id = events.Source(gateway_id=gateway_id).gateway_id
        self.scan_interval_ms = scan_interval_ms
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.reconnect_backoff_max_s = reconnect_backoff_max_s
        self.now = now
        self.metrics = metrics

        self.devices_seen = 0
        self.devices_connected = 0
        self.readings_published = 0
        self.care_events_published = 0
        self.dead_letters = 0
        self.replays_rejected = 0
        self.downgrades_rejected = 0
        self.unregistered_ignored = 0
        self.readings_lost = 0

        self._seen: set[str] = set()
        self._last_frame: dict[str, bytes] = {}
        self._sessions: dict[str, asyncio.Task[None]] = {}
        self._backoff_s: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}  # time.monotonic() before which no new session starts
        # bumble allows one pending LE connection per device.
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        """Power the controller on and start the passive scan."""
        self._record_devices()
        await self.device.power_on()
        self.device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        # Window equal to interval: listen the whole time. No duplicate filtering, because a controller's
        # filter can drop a sensor's next frame.
        await self.device.start_scanning(
            active=False, scan_interval=self.scan_interval_ms, scan_window=self.scan_interval_ms,
            filter_duplicates=False,
        )

    async def stop(self) -> None:
        """Stop scanning and close every GATT session."""
        self.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        if self.device.is_scanning:
            await self.device.stop_scanning()
        sessions = list(self._sessions.values())
        for session in sessions:
            session.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)

    # -- advertisements --------------------------------------------------------------------------
    def _on_advertisement(self, advertisement: Advertisement) -> None:
        # A passive scan sends no scan requests, so a real controller reports no scan responses. bumble's
        # virtual controller makes one up for every advertising PDU, with the data doubled.
        if advertisement.is_scan_response:
            return
        address = advertisement.address.to_string(with_type_qualifier=False)
        try:
            self._handle_advertisement(address, advertisement)
        except Exception:
            # bumble calls this from its HCI event handling, and one bad advertisement must not stop the scan.
            log.exception("could not handle an advertisement from %s", address)

    def _handle_advertisement(self, address: str, advertisement: Advertisement) -> None:
        record = self.registry.device(address)
        if record is None:
            self.unregistered_ignored += 1
            self.metrics.ble_reject("unregistered")
            return
        if address not in self._seen:
            self._seen.add(address)
            self.devices_seen = len(self._seen)
            self._record_devices()
        if record.kind in GATT_KINDS:
            if advertisement.is_connectable:
                self._start_session(record, advertisement.address)
            return
        for service_data in advertisement.data.get_all(AdvertisingData.SERVICE_DATA_16_BIT_UUID, raw=True):
            if service_data[:2] == bthome.SERVICE_DATA_UUID_BYTES:
                self._on_bthome_frame(record, bytes(service_data[2:]))

    # -- BTHome ----------------------------------------------------------------------------------
    def _on_bthome_frame(self, record: RegisteredDevice, frame: bytes) -> None:
        if self._last_frame.get(record.address) == frame:
            return
        self._last_frame[record.address] = frame
        received_at = self.now()
        try:
            self._publish_bthome(record, frame, received_at)
        except BufferFull as error:
            self._lost(record, bthome.SERVICE_DATA_UUID, frame, error)
        except Exception as error:
            self._dead_letter(record, bthome.SERVICE_DATA_UUID, frame, error, received_at)

    def _publish_bthome(self, record: RegisteredDevice, frame: bytes, received_at: datetime) -> None:
        decoded = codecs.decode(bthome.SERVICE_DATA_UUID, frame, mac=record.address, key=record.bthome_key)
        if record.bthome_key is not None and not decoded["encrypted"]:
            self.downgrades_rejected += 1
            self.metrics.ble_reject("downgrade")
            log.warning("refused a plaintext BTHome frame from %s, which has a key: a downgrade "
                        "(ble_health.md §11.4)", record.address)
            return
        counter = decoded["counter"]
        if counter is not None and not self.registry.accept_bthome_counter(record.address, counter):
            self.replays_rejected += 1
            self.metrics.ble_reject("replay")
            log.warning("refused a replayed BTHome frame from %s: counter %d is not above the last accepted "
                        "one (ble_health.md §11.4)", record.address, counter)
            return
        # The counter is unique per encrypted frame. A plaintext frame has none, so its events get random ids.
        frame_id = f"{device_id(record.address)}-{counter if counter is not None else uuid.uuid4().hex[:12]}"
        source = events.Source(gateway_id=self.gateway_id, device_id=device_id(record.address))
        envelope = dict(occurred_at=received_at, received_at=received_at, source=source,
                        location_id=record.location_id)
        buttons = bthome.button_events(decoded)
        if record.kind == "call_bell" and bthome.CALL_BUTTON_EVENT in buttons:
            call_id = f"call-{frame_id}"
            self._publish_care_event(events.CallBell(
                event_id=events.derived_event_id("ble.call_bell", call_id), resident_id=record.resident_id,
                call_id=call_id, phase="raised", call_type="call_point", **envelope,
            ))
        if record.kind == "fall_pendant" and bthome.FALL_BUTTON_EVENT in buttons:
            if record.resident_id is None:
                raise ValueError(f"fall pendant {record.address} has no resident assigned, so its alert "
                                 "cannot be recorded as a fall; assign it in the registry")
            alert_id = f"fall-{frame_id}"
            self._publish_care_event(events.Fall(
                event_id=events.derived_event_id("ble.fall", alert_id), resident_id=record.resident_id,
                detected_by="device", confirmed=False, alert_id=alert_id, recorded_by=source.device_id,
                **envelope,
            ))
        if record.resident_id is not None:
            self.sink.publish(READINGS, record.resident_id, events.DeviceReading(
                event_id=events.derived_event_id("ble.bthome", frame_id), resident_id=record.resident_id,
                characteristic="bthome", values=bthome.reading_values(decoded), **envelope,
            ), priority=Priority.DEVICE)
            self.readings_published += 1

    def _publish_care_event(self, event: events.CallBell | events.Fall) -> None:
        self.sink.publish(CARE_EVENTS, event.location_id, event, priority=Priority.DEVICE)
        self.care_events_published += 1

    def _record_devices(self) -> None:
        self.metrics.set_ble_devices(self.devices_seen, self.devices_connected)

    # -- GATT sessions ---------------------------------------------------------------------------
    def _start_session(self, record: RegisteredDevice, address: Address) -> None:
        if record.address in self._sessions or time.monotonic() < self._retry_at.get(record.address, 0.0):
            return
        session = asyncio.get_running_loop().create_task(self._session(record, address))
        self._sessions[record.address] = session

    async def _session(self, record: RegisteredDevice, address: Address) -> None:
        subscribed = False
        try:
            async with self._connecting:
                connection = await self.device.connect(address, timeout=self.connect_timeout_s)
            disconnected = asyncio.Event()
            connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: disconnected.set())
            self.devices_connected += 1
            self._record_devices()
            try:
                count = await self._subscribe_measurements(record, connection)
                subscribed = True
                log.info("connected to %s %s: subscribed to %d measurement characteristics",
                         record.kind, record.address, count)
                await disconnected.wait()
                log.info("%s %s disconnected", record.kind, record.address)
            finally:
                self.devices_connected -= 1
                self._record_devices()
                if not disconnected.is_set():
                    await connection.disconnect()
        except Exception as error:
            log.warning("session with %s %s failed (%s: %s); retrying on its next advertisement",
                        record.kind, record.address, type(error).__name__, error)
        except asyncio.CancelledError:
            if _stopping():
                raise
            log.warning("session with %s %s failed: the link dropped during set-up; retrying on its next "
                        "advertisement", record.kind, record.address)
        finally:
            del self._sessions[record.address]
            backoff_s = self.reconnect_backoff_s if subscribed else self._backoff_s.get(
                record.address, self.reconnect_backoff_s)
            self._retry_at[record.address] = time.monotonic() + backoff_s
            self._backoff_s[record.address] = (
                self.reconnect_backoff_s if subscribed else min(2 * backoff_s, self.reconnect_backoff_max_s)
            )

    async def _subscribe_measurements(self, record: RegisteredDevice, connection: Connection) -> int:
        peer = Peer(connection)
        await peer.discover_services()
        count = 0
        for service in peer.services:
            if not any(service.uuid == UUID.from_16_bits(service_uuid) for service_uuid in MEASUREMENTS):
                continue
            await service.discover_characteristics()
            for characteristic in service.characteristics:
                uuid16 = _measurement_uuid16(service.uuid, characteristic.uuid)
                if uuid16 is not None:
                    await self._subscribe(connection, characteristic, self._value_handler(record, uuid16))
                    count += 1
        if not count:
            raise LookupError(f"{record.kind} {record.address} offers no measurement characteristic this "
                              "gateway decodes")
        return count

    async def _subscribe(
        self,
        connection: Connection,
        characteristic: CharacteristicProxy[bytes],
        handler: Callable[[bytes], None],
    ) -> None:
        try:
            await characteristic.subscribe(handler, prefer_notify=False)
        except att.ATT_Error as error:
            if error.error_code not in _SECURITY_ERRORS:
                raise
            await self._secure(connection)
            # The same handler object again. A failed subscribe leaves its handler registered in bumble,
            # and a new object would then be called twice for every value.
            await characteristic.subscribe(handler, prefer_notify=False)

    async def _secure(self, connection: Connection) -> None:
        """Encrypt the link with the bond when there is one, or pair and bond when there is not."""
        peer = str(connection.peer_address)
        if await self.device.keystore.get(peer) is None:
            log.info("pairing with %s, which requires an encrypted link", peer)
            await connection.pair()
            return
        try:
            await connection.encrypt()
        except (Exception, asyncio.CancelledError):
            if _stopping():
                raise
            # The device has lost the bond (a reset, say), and a peer with a different key usually drops the
            # link. If the bond were kept, every reconnect would fail the same way, so it is dropped and the
            # next session pairs again.
            log.warning("encryption with the bond for %s failed; forgetting the bond so that the next "
                        "connection pairs again", peer)
            await self.device.keystore.delete(peer)
            raise

    def _value_handler(self, record: RegisteredDevice, uuid16: int) -> Callable[[bytes], None]:
        def on_value(value: bytes) -> None:
            received_at = self.now()
            try:
                self._publish_reading(record, uuid16, bytes(value), received_at)
            except BufferFull as error:
                self._lost(record, uuid16, bytes(value), error)
            except Exception as error:
                self._dead_letter(record, uuid16, bytes(value), error, received_at)
        return on_value

    def _publish_reading(
        self, record: RegisteredDevice, uuid16: int, value: bytes, received_at: datetime
    ) -> None:
        decoded = codecs.decode(uuid16, value)
        if record.resident_id is None:
            raise ValueError(f"{record.kind} {record.address} has no resident assigned, so its reading "
                             "cannot be attributed; assign it in the registry")
        event_id = (
            events.derived_event_id("ble.reading", record.address, f"{uuid16:04X}", value.hex())
            if decoded.get("timestamp") else uuid.uuid4()
        )
        reading = events.DeviceReading(
            event_id=event_id,
            occurred_at=received_at,
            received_at=received_at,
            source=events.Source(gateway_id=self.gateway_id, device_id=device_id(record.address)),
            location_id=record.location_id,
            resident_id=record.resident_id,
            characteristic=decoded["characteristic"],
            values=reading_values(decoded),
        )
        self.sink.publish(READINGS, record.resident_id, reading, priority=Priority.DEVICE)
        self.readings_published += 1

    # -- dead letters ----------------------------------------------------------------------------
    def _dead_letter(
        self, record: RegisteredDevice, uuid16: int, payload: bytes, error: Exception, received_at: datetime
    ) -> None:
        if isinstance(error, codecs.DecodeError):
            reason = str(error)
            log.warning("undecodable value 0x%04X from %s: %s", uuid16, record.address, reason)
        else:
            reason = f"{type(error).__name__}: {events.describe_validation_error(error)}"
            # A ValueError (pydantic's ValidationError is one) is bad input and gets no traceback. Anything
            # else is a bug here and does.
            log.error("could not handle value 0x%04X from %s: %s", uuid16, record.address, reason,
                      exc_info=not isinstance(error, ValueError))
        try:
            self.sink.publish(DEAD_LETTERS, STAGE, events.DeadLetter(
                event_id=uuid.uuid4(),
                occurred_at=received_at,
                received_at=received_at,
                source=events.Source(gateway_id=self.gateway_id, device_id=device_id(record.address)),
                location_id=record.location_id,
                reason=reason,
                stage=STAGE,
                original_topic=f"ble:0x{uuid16:04X}",
                original_key=record.address,
                original_payload=payload.hex(),
            ), priority=Priority.DEVICE)
            self.dead_letters += 1
            self.metrics.dead_letter(STAGE, error)
        except Exception as failure:  # BufferFull, or a bug: the value is lost either way
            self._lost(record, uuid16, payload, failure)

    def _lost(self, record: RegisteredDevice, uuid16: int, payload: bytes, cause: Exception) -> None:
        """A device's value or frame that could not be stored: nobody sends it again, so this log line is its
        record. A refusal by the buffer is expected at its limits; anything else is a bug and gets a traceback."""
        self.readings_lost += 1
        self.metrics.device_reading_lost()
        log.critical("LOST value 0x%04X from %s %s, bytes %s: %s. The device will not send it again; this line "
                     "is its only record", uuid16, record.kind, record.address, payload.hex(), cause,
                     exc_info=not isinstance(cause, BufferFull))
