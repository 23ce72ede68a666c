"""A bleak backend on Google's bumble stack: bleak's own front ends reach bumble peripherals.

`BleakScanner(..., backend=BumbleScanner, bumble_transport=T)` and
`BleakClient(addr, backend=BumbleClient, bumble_transport=T)` work unchanged, where T is a
`bumble.link.LocalLink` or `"local:NAME"` (peripherals in the same process), or a bumble
transport spec such as `tcp-client:127.0.0.1:PORT` or `unix:/path/sock` (peripherals served in
another process). Drivers cannot tell this from the platform backend, so the simulated path runs
the same driver code as hardware. bleak's backend API is not stable: bleak is pinned to one major
version and `tests/unit/test_ble_interface_guard.py` fails if the interface moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any, ClassVar

from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble import att, gatt_client, hci
from bumble import controller as bumble_controller
from bumble import core as bumble_core
from bumble import host as bumble_host
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

log = logging.getLogger(__name__)

Transport = LocalLink | str
"""Where the bumble central reaches peripherals: an in-process link or a transport spec."""

_addresses = itertools.count(1)

TRANSPORT_LOST = 0x08  # reported to clients as a link loss (connection timeout) when it dies


def _debug_off(logger: logging.Logger) -> bool:
    return not logger.isEnabledFor(logging.DEBUG)


# bumble 0.0.236 (pinned) formats every HCI packet and ATT PDU it passes into an f-string for a
# debug log, before the logger can say it is off (HCI_Object.format_fields, colors): a third of
# the BLE loop's time per notification in benchmarks/ble_latency.py, where both ends run on it.
# The classes below take the same steps without that formatting while the debug log is off, and
# are bumble's own otherwise (or with a snooper). The central uses them; a simulated peripheral
# could too.


class QuietController(Controller):
    """bumble's emulated `Controller`, without formatting each data packet for a debug log that
    is off."""

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if self.host is None or not _debug_off(bumble_controller.logger):
            super().send_hci_packet(packet)
            return
        asyncio.get_running_loop().call_soon(self.host.on_packet, bytes(packet))

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if isinstance(packet, hci.HCI_AclDataPacket) and _debug_off(bumble_controller.logger):
            self.on_hci_acl_data_packet(packet)
            return
        super().on_hci_packet(packet)


class QuietHost(Host):
    """bumble's `Host`, without formatting each packet to or from the controller for a debug log
    that is off."""

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if self.snooper or not _debug_off(bumble_host.logger):
            super().send_hci_packet(packet)
            return
        if self.hci_sink:
            self.hci_sink.on_packet(bytes(packet))

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if self.snooper or not _debug_off(bumble_host.logger):
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        elif isinstance(packet, hci.HCI_Event):
            self.on_hci_event_packet(packet)
        else:
            super().on_hci_packet(packet)


class QuietDevice(Device):
    """bumble's `Device`, handing a notification to its GATT client without formatting the PDU
    for a debug log that is off (what `gatt_client.Client.on_gatt_pdu` does first)."""

    def on_gatt_pdu(self, connection_handle: int, pdu: bytes) -> None:
        if (
            pdu
            and pdu[0] == att.Opcode.ATT_HANDLE_VALUE_NOTIFICATION
            and _debug_off(gatt_client.logger)
        ):
            connection = self.lookup_connection(connection_handle)
            if connection is not None and connection.gatt_client is not None:
                notification = att.ATT_PDU.from_bytes(pdu)
                assert isinstance(notification, att.ATT_Handle_Value_Notification)
                connection.gatt_client.on_att_handle_value_notification(notification)
                return
        super().on_gatt_pdu(connection_handle, pdu)


def _bumble_errors() -> tuple[type[BaseException], ...]:
    return (
        bumble_core.BaseBumbleError,
        bumble_core.ProtocolError,
        asyncio.TimeoutError,
        ConnectionError,
    )


class BumbleCentral:
    """The host side: one bumble `Device` acting as central on one transport, per event loop.

    Shared by every scanner and client on that transport in that loop, because a controller has
    one host. `get()` powers it on once; `close_all()` (the BLE loop calls it at shutdown)
    closes the transports. When the transport dies (the controller's process is gone), its
    clients are told they are disconnected, and the next `get()` opens the transport afresh, so
    a restarted controller is reached again.
    """

    _instances: ClassVar[dict[tuple[int, int | str], BumbleCentral]] = {}

    def __init__(self, device: Device, transport: Any | None) -> None:
        self.device = device
        self._transport = transport  # a bumble Transport to close, or None for a LocalLink
        self.rx_ns: int | None = None  # when the bytes being processed arrived (monotonic ns)
        self.clients: set[BumbleClient] = set()  # connected clients, told of a transport loss
        source = getattr(transport, "source", None)
        self._terminated: asyncio.Future[None] | None = getattr(source, "terminated", None)
        if self._terminated is not None:
            self._terminated.add_done_callback(lambda _f: self._transport_lost())
        if source is not None and hasattr(source, "data_received"):
            # Stamp bytes as they come off the socket, before bumble's Python stack parses them
            # (about 0.4 ms per notification here): the analogue of a kernel receive timestamp.
            # Parsing up to the notification callback is synchronous, so a callback reads the
            # stamp of the bytes that carried its notification.
            received = source.data_received

            def stamped(data: bytes) -> None:
                self.rx_ns = time.monotonic_ns()
                received(data)

            source.data_received = stamped

    @property
    def alive(self) -> bool:
        """False once the transport to the controller has been lost."""
        return self._terminated is None or not self._terminated.done()

    def _transport_lost(self) -> None:
        log.info("bumble backend: the transport to the controller was lost")
        for client in list(self.clients):
            client._on_disconnection(TRANSPORT_LOST)

    async def close(self) -> None:
        """Power off and close the transport, quietly (it may be dead already)."""
        with contextlib.suppress(Exception):
            await self.device.power_off()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()

    @classmethod
    async def get(cls, spec: Transport) -> BumbleCentral:
        """The central for `spec` in the running loop, created on first use or after its
        transport was lost."""
        loop = asyncio.get_running_loop()
        key = (id(loop), id(spec) if isinstance(spec, LocalLink) else spec)
        central = cls._instances.get(key)
        if central is not None and not central.alive:
            del cls._instances[key]
            await central.close()
            central = None
        if central is None:
            address = Address(f"C0:00:00:00:{next(_addresses) & 0xFF:02X}:01")
            if isinstance(spec, LocalLink):
                controller = QuietController(f"central-{address}", link=spec)
                host = QuietHost(controller, AsyncPipeSink(controller))
                device = QuietDevice(address=address, host=host)
                transport = None
            else:
                try:
                    transport = await open_transport(spec)
                except Exception as exc:  # bumble raises many kinds; all mean "cannot reach"
                    raise BleakError(f"cannot open bumble transport {spec!r}: {exc}") from exc
                host = QuietHost(transport.source, transport.sink)
                device = QuietDevice(name="needlelab-central", address=address, host=host)
            try:
                await device.power_on()
            except _bumble_errors() as exc:
                if transport is not None:
                    with contextlib.suppress(Exception):
                        await transport.close()
                raise BleakError(f"the controller on {spec!r} did not start: {exc}") from exc
            central = cls(device, transport)
            cls._instances[key] = central
        return central

    @classmethod
    async def close_all(cls) -> None:
        """Close every central of the running loop (call before the loop ends)."""
        loop_id = id(asyncio.get_running_loop())
        for key in [k for k in cls._instances if k[0] == loop_id]:
            await cls._instances.pop(key).close()


_local_links: dict[str, LocalLink] = {}


def local_link(name: str) -> LocalLink:
    """The in-process link called `name` (created on first use); configs say `local:NAME`."""
    link = _local_links.get(name)
    if link is None:
        link = _local_links[name] = LocalLink()  # type: ignore[no-untyped-call]  # bumble: untyped
    return link


def forget_local_link(name: str) -> None:
    """Drop a named in-process link (when its simulators are gone)."""
    _local_links.pop(name, None)


def _transport_from(kwargs: dict[str, Any]) -> Transport:
    spec = kwargs.pop("bumble_transport", None)
    if spec is None:
        raise BleakError("the bumble backend needs bumble_transport= (a LocalLink or a spec)")
    if isinstance(spec, str) and spec.startswith("local:"):
        return local_link(spec.removeprefix("local:"))
    if not isinstance(spec, LocalLink | str):
        raise BleakError(f"bumble_transport must be a LocalLink or a transport spec, not {spec!r}")
    return spec


def _advertisement_data(adv: Advertisement) -> AdvertisementData:
    data = adv.data
    name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
        AdvertisingData.SHORTENED_LOCAL_NAME
    )
    uuids: list[str] = []
    for ad_type in (
        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    ):
        uuids += [u.to_hex_str("-").lower() for u in data.get(ad_type) or []]
    manufacturer: dict[int, bytes] = {}
    raw_manufacturer = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA)
    if raw_manufacturer:
        company, payload = raw_manufacturer
        manufacturer[company] = payload
    tx_power = data.get(AdvertisingData.TX_POWER_LEVEL)
    return AdvertisementData(
        local_name=name if isinstance(name, str) else None,
        manufacturer_data=manufacturer,
        service_data={},
        service_uuids=[_full_uuid(u) for u in uuids],
        tx_power=tx_power if isinstance(tx_power, int) else None,
        rssi=adv.rssi,
        platform_data=(adv,),
    )


def _full_uuid(uuid: str) -> str:
    """A 16-bit UUID as bleak writes it: in the Bluetooth base UUID."""
    hex_only = uuid.replace("-", "")
    if len(hex_only) == 4:
        return f"0000{hex_only}-0000-1000-8000-00805f9b34fb"
    return uuid.lower()


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: advertisements seen by a bumble central."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._transport = _transport_from(kwargs)
        self._active = scanning_mode != "passive"
        self._central: BumbleCentral | None = None

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = _advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = str(adv.address).split("/")[0]
        device = self.create_or_update_device(address, address, data.local_name, adv.address, data)
        self.call_detection_callbacks(device, data)

    async def start(self) -> None:
        self.seen_devices = {}
        self._central = await BumbleCentral.get(self._transport)
        self._central.device.on("advertisement", self._on_advertisement)
        try:
            await self._central.device.start_scanning(active=self._active, filter_duplicates=False)
        except _bumble_errors() as exc:
            raise BleakError(f"cannot scan: {exc}") from exc

    async def stop(self) -> None:
        if self._central is None:
            return
        with contextlib.suppress(*_bumble_errors()):
            await self._central.device.stop_scanning()
        self._central.device.remove_listener("advertisement", self._on_advertisement)
        self._central = None


class StampedBytes(bytearray):
    """A notification's value, with `rx_ns`: when its bytes reached the host (monotonic ns), or
    None where the transport gives no receive stamp (an in-process link)."""

    rx_ns: int | None = None


class BumbleClient(BaseBleakClient):
    """bleak client backend: a GATT client over a bumble LE connection."""

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        transport = _transport_from(kwargs)
        kwargs.pop("services", None)
        kwargs.pop("bluez", None)
        kwargs.pop("winrt", None)
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        self._transport = transport
        self._peer_address: Address | str = (
            address_or_ble_device.details
            if isinstance(address_or_ble_device, BLEDevice)
            and isinstance(address_or_ble_device.details, Address)
            else self.address
        )
        self._connection: Connection | None = None
        self._central: BumbleCentral | None = None
        self._peer: Peer | None = None
        self._name = ""

    @property
    def name(self) -> str:
        return self._name or self.address

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            log.info("bumble backend: pairing is not simulated; connecting without it")
        central = await BumbleCentral.get(self._transport)
        self._central = central
        try:
            connection = await central.device.connect(self._peer_address, timeout=self._timeout)
        except (TimeoutError, bumble_core.TimeoutError) as exc:
            raise BleakDeviceNotFoundError(
                self.address, f"{self.address} did not answer: {exc}"
            ) from exc
        except _bumble_errors() as exc:
            raise BleakError(f"cannot connect to {self.address}: {exc}") from exc
        self._connection = connection
        connection.on("disconnection", self._on_disconnection)
        central.clients.add(self)
        peer = Peer(connection)
        self._peer = peer
        try:
            await peer.request_mtu(247)
            self.services = await self._discover(peer)
        except _bumble_errors() as exc:
            await self.disconnect()
            raise BleakError(f"service discovery on {self.address} failed: {exc}") from exc

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        await peer.discover_services()
        for service in peer.services:
            await service.discover_characteristics()
            bleak_service = BleakGATTService(
                service, service.handle, _full_uuid(service.uuid.to_hex_str("-").lower())
            )
            collection.add_service(bleak_service)
            for char in service.characteristics:
                await char.discover_descriptors()
                props = sorted(gatt_char_props_to_strs(int(char.properties)))
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    _full_uuid(char.uuid.to_hex_str("-").lower()),
                    props,
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)  # also attaches it to its service
                for desc in char.descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            desc,
                            desc.handle,
                            _full_uuid(desc.type.to_hex_str("-").lower()),
                            bleak_char,
                        )
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        if self._central is not None:
            self._central.clients.discard(self)
        if self._connection is None:
            return  # told twice (the link and then its transport), or after disconnect()
        self._connection = None
        self._peer = None
        log.info("bumble backend: %s disconnected (reason 0x%02X)", self.address, reason)
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        connection.remove_listener("disconnection", self._on_disconnection)
        if self._central is not None:
            self._central.clients.discard(self)
        self._connection = None
        self._peer = None
        with contextlib.suppress(*_bumble_errors()):
            await connection.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not supported by the bumble simulation backend")

    async def unpair(self) -> None:
        raise BleakError("pairing is not supported by the bumble simulation backend")

    def _require(self) -> None:
        if self._connection is None:
            raise BleakError(f"not connected to {self.address}")

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require()
        value: bytearray = await self._io(characteristic.obj.read_value())
        return value

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require()
        value: bytearray = await self._io(descriptor.obj.read_value())
        return value

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        self._require()
        await self._io(characteristic.obj.write_value(bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        self._require()
        await self._io(descriptor.obj.write_value(bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        self._require()
        proxy: gatt_client.CharacteristicProxy[Any] = characteristic.obj

        central = self._central

        def deliver(value: Any) -> None:
            data = StampedBytes(value)
            data.rx_ns = central.rx_ns if central is not None else None
            callback(data)

        await self._io(proxy.subscribe(deliver, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._require()
        await self._io(characteristic.obj.unsubscribe())

    async def _io(self, operation: Any) -> Any:
        try:
            result = await operation
        except _bumble_errors() as exc:
            raise BleakError(f"{self.address}: {exc}") from exc
        return bytearray(result) if isinstance(result, bytes | bytearray) else result
