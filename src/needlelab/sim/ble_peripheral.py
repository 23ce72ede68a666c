"""A bumble GATT peripheral for simulated BLE sensors: advertise, serve, notify, drop the link."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bumble import gatt, hci, ll
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.hci import Address
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from needlelab.ble.bumble_backend import QuietController, QuietHost
from needlelab.config import FaultSpec
from needlelab.profiles import BleGatt
from needlelab.sim.faults import FaultSchedule, WireLog

HCI_CONNECTION_TIMEOUT = 0x08  # the reason a real link loss reports

_addresses = itertools.count(1)


@dataclass
class CharacteristicSpec:
    """One characteristic: UUID, properties (bleak-style names) and initial value."""

    uuid: str
    properties: tuple[str, ...]
    value: bytes = b""


@dataclass
class ServiceSpec:
    """One primary service and its characteristics."""

    uuid: str
    characteristics: list[CharacteristicSpec] = field(default_factory=list)


_PROPS = {
    "read": gatt.Characteristic.Properties.READ,
    "write": gatt.Characteristic.Properties.WRITE,
    "write-without-response": gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
    "notify": gatt.Characteristic.Properties.NOTIFY,
    "indicate": gatt.Characteristic.Properties.INDICATE,
}


class CentralController(QuietController):
    """The controller a simulator process serves to the app: bumble's (without formatting each
    data packet for a debug log that is off), and Reset ends links.

    bumble's Controller takes HCI Reset as a no-op. A real controller drops every link on Reset,
    and its peers see the link end. Without that, an app SIGKILLed mid-session left the
    peripheral connected to a central nobody drove: it never advertised again, and the next
    app (whose stack resets the controller first) found nothing.
    """

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        for connection in list(self.le_connections.values()):
            # What the peripheral sees when a central falls silent: the supervision timeout.
            connection.send_ll_control_pdu(
                ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
            )
            del self.le_connections[connection.peer_address]
        return super().on_hci_reset_command(command)


class GattPeripheral:
    """A simulated BLE peripheral on a bumble `LocalLink` (runs in the caller's event loop).

    Writes to its characteristics are kept in `written` (uuid -> list of values) so tests can
    check exactly what a driver sent.
    """

    def __init__(self, link: LocalLink, name: str, services: list[ServiceSpec]) -> None:
        self.name = name
        self.link = link
        self.address = Address(f"F0:00:00:00:{next(_addresses) & 0xFF:02X}:02")
        # bumble's own stack, without formatting each packet for a debug log that is off: in
        # the simulator process that was most of the BLE loop's CPU per notification, and a
        # simulated radio that spends less sends on time under load.
        controller = QuietController(f"periph-{name}", link=link)
        host = QuietHost(controller, AsyncPipeSink(controller))
        self.device = Device(address=self.address, host=host)
        self.device.name = name
        self.characteristics: dict[str, gatt.Characteristic[bytes]] = {}
        self.written: dict[str, list[bytes]] = {}
        # Every write as it came: (monotonic ns, characteristic uuid, bytes).
        self.write_log: list[tuple[int, str, bytes]] = []
        self.on_write: Callable[[str, bytes], None] | None = None  # told of each write
        self._values: dict[str, bytes] = {}
        self.service_uuids = [s.uuid for s in services]
        for service in services:
            chars = []
            for spec in service.characteristics:
                props = gatt.Characteristic.Properties(0)
                for p in spec.properties:
                    props |= _PROPS[p]
                char: gatt.Characteristic[bytes] = gatt.Characteristic(
                    spec.uuid,
                    props,
                    gatt.Characteristic.READABLE | gatt.Characteristic.WRITEABLE,
                    gatt.CharacteristicValue(
                        read=self._reader(spec.uuid), write=self._writer(spec.uuid)
                    ),
                )
                self.characteristics[spec.uuid.lower()] = char
                self.written[spec.uuid.lower()] = []
                self._values[spec.uuid.lower()] = spec.value
                chars.append(char)
            self.device.add_service(gatt.Service(service.uuid, chars))

    def _reader(self, uuid: str) -> Callable[[Connection], bytes]:
        return lambda _connection: self._values[uuid.lower()]

    def _writer(self, uuid: str) -> Callable[[Connection, bytes], None]:
        def write(_connection: Connection, value: bytes) -> None:
            self.written[uuid.lower()].append(bytes(value))
            self.write_log.append((time.monotonic_ns(), uuid.lower(), bytes(value)))
            self._values[uuid.lower()] = bytes(value)
            if self.on_write is not None:
                self.on_write(uuid.lower(), bytes(value))

        return write

    async def start(self) -> None:
        """Power on and advertise (name + service UUIDs); re-advertises after a disconnect."""
        await self.device.power_on()
        await self.advertise()

    async def advertise(self) -> None:
        """Start connectable advertising."""
        uuids16 = [UUID(u) for u in self.service_uuids if len(u.replace("-", "")) == 4]
        uuids128 = [UUID(u) for u in self.service_uuids if len(u.replace("-", "")) == 32]
        entries: list[tuple[int, bytes]] = [
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
        ]
        if uuids16:
            entries.append(
                (
                    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                    b"".join(bytes(u) for u in uuids16),
                )
            )
        if uuids128:
            entries.append(
                (
                    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                    b"".join(bytes(u) for u in uuids128),
                )
            )
        # A fast advertising interval (20-30 ms) so scans and reconnects find it at once.
        await self.device.start_advertising(
            advertising_data=bytes(AdvertisingData(entries)),
            auto_restart=True,
            advertising_interval_min=20,
            advertising_interval_max=30,
        )

    def set_value(self, uuid: str, value: bytes) -> None:
        """Set what a read returns."""
        self._values[uuid.lower()] = value

    async def notify(self, uuid: str, value: bytes) -> None:
        """Notify (or indicate) every subscriber of a characteristic."""
        self._values[uuid.lower()] = value
        await self.device.notify_subscribers(self.characteristics[uuid.lower()], value)

    async def drop_link(self, reason: int = HCI_CONNECTION_TIMEOUT) -> None:
        """Disconnect every central with an HCI reason (0x08: connection timeout, a link loss)."""
        for connection in list(self.device.connections.values()):
            await connection.disconnect(reason=reason)

    async def stop(self) -> None:
        """Stop advertising and power off."""
        await self.device.power_off()


class SimulatedBleDevice:
    """Base of the simulated BLE sensors: a `GattPeripheral` from a profile's GATT layout, on
    the in-process link `local:<link_name>`, with one streaming task (`_stream`) and a fault
    schedule (`faults`; `inject()` from any thread).

    The faults every sensor has are applied here (`_apply_fault`): `disconnect` drops the link
    with HCI reason 0x08 and re-advertises after `duration_s`; `stall` keeps the link and sends
    nothing for `duration_s` (`silent(now)`); `garbage` sends `count` notifications that are
    never a valid frame (a 0xFF first byte, which no format starts with, and the wrong length);
    `truncate` asks the sensor to cut the last byte off its next `count` frames (`_truncate`);
    `duplicate` asks it to send each of its next `count` frames twice in a row (`_copies`).
    Sensors note every notification they send, by kind, in `wire` (a `WireLog`).

    Construct anywhere; `start()` and `stop()` run on the BLE loop (bumble needs a running loop).
    """

    def __init__(
        self,
        gatt: BleGatt,
        link_name: str,
        advertised_name: str,
        faults: Sequence[FaultSpec] = (),
        frame_size: int = 0,
        info_values: Mapping[str, bytes] | None = None,
        battery_pct: int = 90,
    ) -> None:
        self.link_name = link_name
        self.advertised_name = advertised_name
        self.faults = FaultSchedule(faults)
        self._faults_t0: float | None = None  # loop time a central first connected
        self._frame_size = frame_size  # garbage is never this long
        self._junk_rng = random.Random(link_name)
        self._silent_until = 0.0
        self._truncate = 0  # frames still to cut short
        self._duplicate = 0  # frames still to send twice
        self.wire = WireLog()
        chars = [CharacteristicSpec(u, ("read", "notify")) for u in gatt.data]
        control = chars if gatt.control_service is None else []
        commands = [gatt.start_write] if gatt.start_write else []
        for uuid in dict.fromkeys(commands + [w.characteristic for w in gatt.writes]):
            control.append(CharacteristicSpec(uuid, ("write",)))
        # Info characteristics serve the values given (a device's facts), else zero bytes of
        # their layout's size; `info_served` is what a read returns, as hex.
        values = dict(info_values or {})
        self.info_served: dict[str, str] = {}
        for info in gatt.info:
            value = values.get(info.characteristic, bytes(struct.calcsize(info.layout)))
            self.info_served[info.characteristic] = value.hex()
            control.append(CharacteristicSpec(info.characteristic, ("read",), value))
        self._services = [ServiceSpec(gatt.service, chars)]
        if gatt.control_service is not None:
            self._services.append(ServiceSpec(gatt.control_service, control))
        self.battery_uuid = gatt.battery
        self.battery_pct = battery_pct
        # (monotonic ns, percent) of every battery level it had: the first is its level at start.
        self.battery_log: list[tuple[int, int]] = [(time.monotonic_ns(), battery_pct)]
        if gatt.battery:
            self._services.append(
                ServiceSpec(
                    "180f",
                    [CharacteristicSpec(gatt.battery, ("read", "notify"), bytes([battery_pct]))],
                )
            )
        self.data_uuids = list(gatt.data)  # in turn order
        self.data_uuid = gatt.data[0]
        self.peripheral: GattPeripheral | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Power on, advertise and start the streaming task."""
        from needlelab.ble.bumble_backend import local_link

        self.peripheral = GattPeripheral(
            local_link(self.link_name), self.advertised_name, self._services
        )
        await self.peripheral.start()
        self._task = asyncio.get_running_loop().create_task(self._stream(self.peripheral))

    async def stop(self) -> None:
        """Stop streaming and power off."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.peripheral is not None:
            await self.peripheral.stop()

    async def set_battery(self, pct: int) -> None:
        """Change the battery level: what a read returns from now, and a notification."""
        self.battery_pct = pct
        self.battery_log.append((time.monotonic_ns(), pct))
        if self.peripheral is not None and self.battery_uuid is not None:
            await self.peripheral.notify(self.battery_uuid, bytes([pct]))

    def writes(self) -> list[list[Any]]:
        """Every write a central made, as [monotonic ns, characteristic uuid, hex bytes]."""
        if self.peripheral is None:
            return []
        return [[t, uuid, value.hex()] for t, uuid, value in self.peripheral.write_log]

    def inject(self, fault: FaultSpec) -> None:
        """Apply a fault at the sensor's next turn; callable from any thread."""
        self.faults.inject(fault)

    def silent(self, now: float) -> bool:
        """Whether a stall keeps the sensor quiet at loop time `now`."""
        return now < self._silent_until

    def _junk(self, count: int) -> list[bytes]:
        sizes = [self._junk_rng.randrange(1, 40) for _ in range(count)]
        return [b"\xff" + self._junk_rng.randbytes(n + (n + 1 == self._frame_size)) for n in sizes]

    def due_faults(self, peripheral: GattPeripheral, now: float) -> list[FaultSpec]:
        """The faults due at loop time `now`, on the time since a central first connected (not
        since the simulator started: how long a recorder takes to find and connect to it, a
        latency probe before it or a busy machine, does not move them); injected ones at once."""
        if self._faults_t0 is None and peripheral.device.connections:
            self._faults_t0 = now
        return self.faults.due(-1.0 if self._faults_t0 is None else now - self._faults_t0)

    async def _apply_fault(
        self, peripheral: GattPeripheral, fault: FaultSpec, now: float
    ) -> list[bytes]:
        """Apply a fault; the garbage notifications to send, in order with the sensor's data."""
        if fault.kind == "garbage":
            return self._junk(fault.count)
        if fault.kind == "truncate":
            self._truncate += fault.count
        elif fault.kind == "duplicate":
            self._duplicate += fault.count
        elif fault.kind == "stall":
            self._silent_until = now + fault.duration_s
        elif fault.kind == "disconnect":
            await peripheral.device.stop_advertising()
            await peripheral.drop_link()
            asyncio.get_running_loop().call_later(
                fault.duration_s, lambda: asyncio.ensure_future(peripheral.advertise())
            )
        return []

    def _cut(self, payload: bytes) -> bytes:
        """The payload, one byte short if a `truncate` fault is still pending."""
        if not self._truncate:
            return payload
        self._truncate -= 1
        return payload[:-1]

    def _copies(self) -> int:
        """How many times the next frame goes out: 2 if a `duplicate` fault is still pending."""
        if not self._duplicate:
            return 1
        self._duplicate -= 1
        return 2

    async def _stream(self, peripheral: GattPeripheral) -> None:
        raise NotImplementedError
