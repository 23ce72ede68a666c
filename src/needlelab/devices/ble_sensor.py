"""Bluetooth LE sensors through bleak: the shared plumbing, surface EMG and the caliper."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import queue
import struct
import threading
from abc import abstractmethod
from collections import deque
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from needlelab.ble.loop import BleLoop
from needlelab.config import BleDeviceConfig, CaliperBleConfig, EmgBleConfig
from needlelab.devices.base import Device, DeviceError
from needlelab.devices.emg_codecs import EmgDecoder, repeats, runs_begun, unwrap
from needlelab.devices.frame_index import HOLD_NS, FrameIndexer, Numbered
from needlelab.events import DeviceInfoEvent, GapEvent
from needlelab.hub import Hub
from needlelab.profiles import BleGatt, CaliperProfile, EmgProfile, ProfileFile, read_profile
from needlelab.streams import StreamKind, StreamSpec

log = logging.getLogger(__name__)

_LINK_LOST = None  # inbox marker: bleak reported a disconnect


class Notification(NamedTuple):
    """One notification as received: host arrival (session ns), its bytes, and which of the
    profile's data characteristics it came on (their position in `gatt.data`)."""

    t_ns: int
    payload: bytes
    turn: int


class BatteryReading(NamedTuple):
    """A battery level read or notified (percent), with its host time (session ns)."""

    t_ns: int
    pct: float


class RecordFailed(NamedTuple):
    """Inbox item: recording a notification on the BLE loop raised `error` (the device thread
    raises it, as if its own `_record` had)."""

    error: Exception


MAX_BATCH = 2000


class BleSensor(Device):
    """A BLE sensor read with bleak on the shared BLE loop; subclasses decode notifications.

    Notifications are stamped with their host arrival time on the BLE loop thread. Once the
    device thread services the connection (its first `_service`), each is recorded (`_record`)
    right there, in the bleak callback. Handed to the device thread instead, it waited for the
    GIL until the BLE loop had nothing left to do (the loop takes the GIL back between callbacks,
    so the switch interval never came due): the first frame of a connection event waited for the
    others to be delivered, about 1 ms for three, and notify -> ring took 3x what bleak itself
    needs. Until then, and after a disconnect, notifications are queued, and `_service` records
    them in batches, in order, before any recorded on the loop. `_record_lock` keeps the two
    threads from recording at once. A bleak disconnect, or silence past the stall timeout, goes
    through the base class: reconnect with backoff, gap events.

    Data quality: a notification is malformed if it is not a whole frame of the profile (wrong
    length, inconsistent header, not a number); a resync is each run of malformed notifications
    between whole frames (the decoder drops notifications until a whole frame comes again); a
    duplicate is a whole frame whose sequence counter equals the frame's just before it, which
    only profiles with a counter can see (`_drop_repeats`).
    """

    RECOVERABLE = (DeviceError, OSError, BleakError, TimeoutError)

    def __init__(
        self, config: BleDeviceConfig, hub: Hub, gatt: BleGatt, profile_file: ProfileFile
    ) -> None:
        super().__init__(config, hub)
        self.ble_config = config
        self.gatt = gatt
        self.profile_file = profile_file
        self._inbox: queue.SimpleQueue[Notification | BatteryReading | RecordFailed | None] = (
            queue.SimpleQueue()
        )
        # Held while recording (on either thread): decoder, frame numbering and counts are one
        # thread's at a time. Re-entrant: `_record` counts quality, which takes it too.
        self._record_lock = threading.RLock()
        self._inline = False  # notifications are recorded in the bleak callback (under the lock)
        self._loop: BleLoop | None = None
        self._client: BleakClient | None = None
        self._in_bad_run = False  # the last notification was malformed
        self._last_counter: int | None = None  # raw counter of the last whole frame
        self._socket_seen: tuple[int, ...] | None = None  # the controller socket last reached
        self._facts: dict[str, Any] = {}  # what the last connect learnt: its device.info event
        self._battery_recorded: float | None = None  # the battery level last in the file
        self._battery_task: asyncio.Task[None] | None = None

    def stop(self, timeout_s: float = 5.0) -> None:
        super().stop(timeout_s)
        if self._loop is not None:
            self._loop.release()
            self._loop = None

    @abstractmethod
    def _record(self, items: list[Notification]) -> None:
        """Decode and record a batch of notifications in arrival order."""

    def _count_bad(self, n: int, good: npt.NDArray[np.intp], what: str) -> None:
        """Count a batch's malformed notifications (all of its `n` but `good`) and the resyncs
        they begin (a run that goes on from the batch before is not counted again)."""
        if not n:
            return
        bad = np.ones(n, dtype=np.bool_)
        bad[good] = False
        malformed = n - len(good)
        if malformed:
            resyncs = runs_begun(bad, self._in_bad_run)
            self._count_malformed(malformed, f"{malformed} bad {what}", resyncs)
        self._in_bad_run = bool(bad[-1])

    def _drop_repeats(self, counter: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which whole frames to keep: not those repeating the counter of the frame before,
        which are counted as duplicates (their samples are recorded already)."""
        dup = repeats(counter, self._last_counter)
        if len(counter):
            self._last_counter = int(counter[-1])
        if dup.any():
            self._count_duplicates(int(np.count_nonzero(dup)))
        return ~dup

    # -- BLE side (runs on the BLE loop) -----------------------------------------------------------
    def _backend_kwargs(self) -> dict[str, Any]:
        if self.ble_config.backend == "bumble":
            from needlelab.ble.bumble_backend import BumbleClient, BumbleScanner

            return {
                "bumble_transport": self.ble_config.bumble_transport,
                "scanner": BumbleScanner,
                "client": BumbleClient,
            }
        return {}

    async def _open(self) -> None:
        kw = self._backend_kwargs()
        scanner_backend, client_backend = kw.pop("scanner", None), kw.pop("client", None)
        timeout = self.ble_config.connect_timeout_s
        target: Any = self.ble_config.address
        if target is None:
            name = self.ble_config.advertised_name
            target = await BleakScanner.find_device_by_name(
                name or "", timeout=timeout, backend=scanner_backend, **kw
            )
            if target is None:
                raise DeviceError(f"no BLE device advertising as {name!r} found in {timeout:g} s")
        client = BleakClient(
            target,
            disconnected_callback=lambda _c: self._inbox.put(_LINK_LOST),
            timeout=timeout,
            backend=client_backend,
            **kw,
        )
        self._client = client  # before connecting: a cancelled or half-made link is closed too
        await client.connect()
        gatt = self.gatt
        facts: dict[str, Any] = {"address": client.address, "writes_hex": {}}
        if gatt.start_write and gatt.start_payload:
            await client.write_gatt_char(
                gatt.start_write, bytes.fromhex(gatt.start_payload), response=True
            )
            facts["writes_hex"]["start"] = gatt.start_payload
        for write in gatt.writes:  # each is a command the profile declares: sent as written there
            await client.write_gatt_char(
                write.characteristic, bytes.fromhex(write.payload), response=True
            )
            facts["writes_hex"][write.name] = write.payload
        for info in gatt.info:
            if client.services.get_characteristic(info.characteristic) is None:
                facts[info.name] = None  # this unit (or firmware) does not have it
                continue
            value = bytes(await client.read_gatt_char(info.characteristic))
            try:
                facts[info.name] = info.unpack(value)
            except struct.error:
                facts[info.name] = {"unreadable_hex": value.hex()}
        battery = gatt.battery and client.services.get_characteristic(gatt.battery)
        if battery:
            level = await client.read_gatt_char(battery)
            self.stats.battery_pct = float(level[0]) if level else None
            facts["battery_pct"] = self.stats.battery_pct
            if "notify" in battery.properties:
                await client.start_notify(battery, self._on_battery)
            self._battery_task = asyncio.get_running_loop().create_task(
                self._poll_battery(client, battery)
            )
        self._facts = facts
        for turn, uuid in enumerate(gatt.data):
            await client.start_notify(uuid, functools.partial(self._on_notify, turn))

    async def _poll_battery(self, client: BleakClient, battery: Any) -> None:
        """Re-read the battery level every `gatt.battery_poll_s` while the link lasts."""
        while True:
            await asyncio.sleep(self.gatt.battery_poll_s)
            try:
                level = await client.read_gatt_char(battery)
            except Exception as exc:  # a link going away says so on its own (disconnect)
                log.debug("%s: battery read: %r", self.name, exc)
                continue
            if level:
                self._inbox.put(BatteryReading(self.hub.clock.now_ns(), float(level[0])))

    def _on_battery(self, _char: Any, data: bytearray) -> None:
        if data:
            self._inbox.put(BatteryReading(self.hub.clock.now_ns(), float(data[0])))

    def _on_notify(self, turn: int, _char: Any, data: bytearray) -> None:
        # A backend that knows when the bytes reached the host (needlelab's bumble backend on a
        # socket) says so; otherwise now is the arrival time.
        rx_ns = getattr(data, "rx_ns", None)
        t_ns = rx_ns - self.hub.clock.anchor_monotonic_ns if rx_ns else self.hub.clock.now_ns()
        item = Notification(t_ns, bytes(data), turn)
        with self._record_lock:
            if not self._inline:
                self._inbox.put(item)
                return
            try:
                self._record([item])
            except Exception as exc:  # the device thread raises it; until then, queue
                self._inline = False
                self._inbox.put(RecordFailed(exc))

    async def _close(self) -> None:
        task, self._battery_task = self._battery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except BleakError as exc:
                log.debug("%s: disconnect: %s", self.name, exc)

    # -- hooks (device thread) ---------------------------------------------------------------------
    def _connect(self) -> None:
        if self._loop is None:
            self._loop = BleLoop.acquire()
        while True:  # notifications or a disconnect from a previous link are stale
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        # A stop cancels the scan or the connection attempt (OperationStopped): seen at once.
        self._facts = {}
        self._loop.run(
            self._open(), timeout_s=self.ble_config.connect_timeout_s + 5, stop=self._stop
        )
        self._socket_seen = self._controller_socket()
        self._emit_event(DeviceInfoEvent(info=self.device_info()))
        self._battery_recorded = self._facts.get("battery_pct")

    def device_info(self) -> dict[str, Any]:
        """What the `device.info` event of a connect says: the profile (and the SHA-256 of its
        file), the address connected to, the commands written (hex, by name), each info
        characteristic's fields (None where the unit has no such characteristic) and the
        battery level."""
        return {
            "profile": self.ble_config.profile,
            "profile_sha256": self.profile_file.sha256,
            **self._facts,
        }

    def _record_battery(self, readings: list[BatteryReading]) -> None:
        """Keep the latest battery level; a `device.info` event each time it changes."""
        for reading in readings:
            self.stats.battery_pct = reading.pct
            if reading.pct != self._battery_recorded:
                self._battery_recorded = reading.pct
                self._emit_event(DeviceInfoEvent(info={"battery_pct": reading.pct}))

    def _controller_socket(self) -> tuple[int, ...] | None:
        """The identity of the bumble controller's unix socket (device, inode and change time:
        a freed inode number can be reused at once), if that is the transport and it is there."""
        transport = self.ble_config.bumble_transport or ""
        try:
            st = os.stat(transport.removeprefix("unix:"))
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_ctime_ns

    def _probe(self) -> bool | None:
        # A controller on a unix socket (a simulator's, a bridge's) is back when a socket is
        # there that is not the one last reached: a restarted server binds a new one, so its
        # return is seen at once instead of at the next attempt.
        if self.ble_config.backend != "bumble" or not (
            self.ble_config.bumble_transport or ""
        ).startswith("unix:"):
            return None
        socket = self._controller_socket()
        return socket is not None and socket != self._socket_seen

    def _local_link(self) -> bool:
        # A bumble controller on this machine: a scan or a refused socket costs nothing there,
        # unlike a real radio that the other sensors share.
        transport = self.ble_config.bumble_transport or ""
        return self.ble_config.backend == "bumble" and transport.startswith(
            ("local:", "unix:", "tcp-client:127.0.0.1:", "tcp-client:localhost:")
        )

    def _disconnect(self) -> None:
        with self._record_lock:  # what still comes is queued, and dropped at the next connect
            self._inline = False
        if self._loop is not None and self._client is not None:
            try:
                self._loop.run(self._close(), timeout_s=5)
            except (TimeoutError, BleakError, OSError) as exc:
                log.debug("%s: close: %s", self.name, exc)

    def _record_quality(self, when: Literal["due", "changed", "always"] = "due") -> None:
        with self._record_lock:  # the counts change on the BLE loop while recording there
            super()._record_quality(when)

    def _service(self, timeout_s: float) -> None:
        if not self._inline:
            # What came before the connection was serviced is recorded first, then each
            # notification as it comes (the lock holds them back until then).
            with self._record_lock:
                while True:
                    items = self._take(None)
                    self._handle(items)
                    if len(items) < MAX_BATCH:
                        break
                self._inline = True
            return
        self._handle(self._take(timeout_s))

    def _take(
        self, timeout_s: float | None
    ) -> list[Notification | BatteryReading | RecordFailed | None]:
        """What the inbox holds (up to `MAX_BATCH`), after waiting up to `timeout_s` for the
        first item (None: not waiting)."""
        items: list[Notification | BatteryReading | RecordFailed | None] = []
        if timeout_s is not None:
            try:
                items.append(self._inbox.get(timeout=timeout_s))
            except queue.Empty:
                return items
        while len(items) < MAX_BATCH:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _handle(self, items: list[Notification | BatteryReading | RecordFailed | None]) -> None:
        """Record queued notifications and battery readings, in order; raise for a lost link or
        a failed recording on the loop (what follows either is dropped)."""
        ends = [
            k
            for k, item in enumerate(items)
            if item is _LINK_LOST or isinstance(item, RecordFailed)
        ]
        end = items[ends[0]] if ends else None
        if ends:
            items = items[: ends[0]]
        good = [item for item in items if isinstance(item, Notification)]
        if good:
            with self._record_lock:
                self._record(good)
        self._record_battery([item for item in items if isinstance(item, BatteryReading)])
        if isinstance(end, RecordFailed):
            raise end.error
        if ends:
            raise DeviceError("link lost (the sensor disconnected)")


class EmgBleSensor(BleSensor):
    """A BLE surface-EMG sensor: notifications decoded in batches (vectorised with numpy).

    One block is recorded per notification, with the device's counter and clock when the
    profile has them. A jump in the counter is a known loss: the sample index jumps with it and
    a `gap` event is recorded.
    """

    def __init__(self, config: EmgBleConfig, hub: Hub) -> None:
        profile, profile_file = read_profile(config.profile, EmgProfile)
        super().__init__(config, hub, profile.gatt, profile_file)
        self.profile = profile
        frame = self.profile.frame
        where = f"{config.muscle} " if config.muscle else ""
        self.spec = StreamSpec(
            name=f"{config.name}.emg",
            type="EMG",
            channels=tuple(f"EMG {where}{i + 1}" for i in range(frame.channels)),
            units=(frame.unit,) * frame.channels,
            kind=StreamKind.REGULAR,
            nominal_rate_hz=frame.rate_hz,
            dtype="float32",
            device=config.name,
            latency_ns=self.profile.latency_ns + round(config.latency_us * 1000),
            latency_floor=config.latency_floor,
        )
        self.decoder = EmgDecoder(frame)
        # What numbers the frames: the counter in them, else the turn of the characteristics
        # they come on (the Myo's four), else nothing; see `frame_index`.
        self._turns = not frame.counter_bits and len(profile.gatt.data) > 1
        modulus = 1 << frame.counter_bits if frame.counter_bits else len(profile.gatt.data)
        # Frames it holds back (a late burst or a loss, not yet told apart) are not recorded
        # longer than half the stall timeout, so holding never looks like a stall.
        hold_ns = min(HOLD_NS, int(config.stall_timeout_s * 5e8))
        self.indexer = FrameIndexer(
            frame.samples_per_frame * 1e9 / frame.rate_hz, modulus, self._turns, hold_ns
        )
        # Decoded frames waiting for the indexer's numbers: arrival, values, device clock.
        self._unnumbered: deque[tuple[int, np.ndarray, int | None]] = deque()
        self._counter0: int | None = None  # the first frame's counter, unwrapped from there
        self._clock_us: int | None = None

    def streams(self) -> list[StreamSpec]:
        return [self.spec]

    def _record(self, items: list[Notification]) -> None:
        batch = self.decoder.decode([item.payload for item in items])
        self._count_bad(len(items), batch.good, "notifications")
        frame = self.profile.frame
        spf = frame.samples_per_frame
        good, seq, device_t_us, values = batch.good, batch.counter, batch.device_t_us, batch.values
        if frame.counter_bits:
            keep = self._drop_repeats(seq)
            if not keep.all():
                good, seq, device_t_us = good[keep], seq[keep], device_t_us[keep]
                values = values.reshape(-1, spf, frame.channels)[keep].reshape(-1, frame.channels)
        if not len(good):
            return
        arrivals = np.array([items[i].t_ns for i in good], dtype=np.int64)
        raw: np.ndarray | None = None
        if frame.counter_bits:
            raw = seq
        elif self._turns:
            raw = np.array([items[i].turn for i in good], dtype=np.int64)
        if frame.counter_bits and self._counter0 is None:
            self._counter0 = int(seq[0])
        clock_us = None
        if frame.device_clock_bits:
            clock_us = unwrap(device_t_us, frame.device_clock_bits, self._clock_us)
            self._clock_us = int(clock_us[-1])
        for k in range(len(good)):
            t_us = None if clock_us is None else int(clock_us[k])
            self._unnumbered.append((int(arrivals[k]), values[k * spf : (k + 1) * spf], t_us))
        self._emit_numbered(self.indexer.push(raw, arrivals))

    def _emit_numbered(self, numbered: Numbered) -> None:
        """Record the frames the indexer has numbered (the oldest waiting), with their gaps."""
        spf = self.profile.frame.samples_per_frame
        expected = self._next_index(self.spec.name)
        for k in range(len(numbered)):
            arrival, values, t_us = self._unnumbered.popleft()
            first = int(numbered.frame[k]) * spf
            inferred = bool(numbered.inferred_lost[k])
            if first > expected and expected > 0:
                lost = {self.spec.name: first - expected}
                if self._outage_start_ns is not None:  # after a reconnect: one gap
                    self._close_outage(arrival, lost, inferred)
                else:
                    confidence = float(numbered.confidence[k])
                    self._record_loss(expected, first, arrival, inferred, confidence)
            counter = None
            if self._counter0 is not None:
                counter = self._counter0 + int(numbered.frame[k])
            self._emit_samples(
                self.spec,
                values,
                arrival,
                device_counter=counter,
                device_t_us=t_us,
                first_index=first,
            )
            expected = first + spf

    def _connect(self) -> None:
        with self._record_lock:
            self._emit_numbered(self.indexer.restart())  # the next frame follows an outage
        super()._connect()

    def _service(self, timeout_s: float) -> None:
        super()._service(timeout_s)
        with self._record_lock:
            if self.indexer.pending:  # held for a judgement the arrivals have not made in time
                self._emit_numbered(self.indexer.release_due(self.hub.clock.now_ns()))

    def _disconnect(self) -> None:
        with self._record_lock:  # nothing is recorded on the loop after the flush
            self._inline = False
            self._emit_numbered(self.indexer.flush())  # what the link gave before it went
        super()._disconnect()

    def _record_loss(
        self, expected: int, got: int, arrival_ns: int, inferred: bool, confidence: float
    ) -> None:
        period_ns = 1e9 / self.profile.frame.rate_hz
        self.stats.gaps += 1
        sure = inferred and not math.isnan(confidence)
        what = "the arrival times" if inferred else "the frame numbering"
        if sure:
            what += f", confidence {confidence:.2f}"
        self._emit_event(
            GapEvent(
                stream=self.spec.name,
                start_ns=int(arrival_ns - (got - expected) * period_ns),
                end_ns=arrival_ns,
                samples_lost=got - expected,
                inferred=inferred,
                reason=f"lost notifications (seen in {what})",
                confidence=confidence if sure else None,
            )
        )


CALIPER_REF_DTYPE = np.dtype([("seq", "<u2"), ("distance_um", "<i4"), ("flags", "u1")])
"""The needlelab reference caliper frame: seq u16, distance µm int32, flags (bit 0: button)."""


class CaliperBatch(NamedTuple):
    """Decoded caliper notifications: indices of the good ones, their (n, 2) [distance_mm,
    button] readings, their raw sequence counters (None where the format has none) and how
    many were malformed."""

    good: npt.NDArray[np.intp]
    readings: npt.NDArray[np.float32]
    counter: npt.NDArray[np.int64] | None
    malformed: int


def decode_caliper_batch(fmt: str, scale_mm: float, payloads: list[bytes]) -> CaliperBatch:
    """Caliper notifications → a `CaliperBatch` (a wrong length is malformed)."""
    size = 4 if fmt == "sylvac-simple" else CALIPER_REF_DTYPE.itemsize
    good = np.array([i for i, p in enumerate(payloads) if len(p) == size], dtype=np.intp)
    joined = b"".join(payloads[i] for i in good)
    out = np.zeros((len(good), 2), dtype=np.float32)
    counter = None
    if fmt == "sylvac-simple":
        # sint32 in units of 1e-7 m (Characteristic Presentation Format 10 f9 01 27 ...); a
        # notification is a reading the user sent with the data button.
        out[:, 0] = np.frombuffer(joined, dtype="<i4") * scale_mm
        out[:, 1] = 1.0
    else:
        arr = np.frombuffer(joined, dtype=CALIPER_REF_DTYPE)
        out[:, 0] = arr["distance_um"] * scale_mm
        out[:, 1] = arr["flags"] & 1
        counter = arr["seq"].astype(np.int64)
    return CaliperBatch(good, out, counter, len(payloads) - len(good))


def decode_caliper(
    fmt: str, scale_mm: float, payloads: list[bytes]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Caliper notifications → (good indices, (n, 2) [distance_mm, button], malformed count)."""
    batch = decode_caliper_batch(fmt, scale_mm, payloads)
    return batch.good, batch.readings, batch.malformed


class CaliperBleSensor(BleSensor):
    """A BLE digital caliper: every reading a sample of `<name>.distance` (mm, button flag).

    Calipers speak when moved or when their button is pressed, so silence is not a stall; a
    lost link is still seen (bleak's disconnect callback) and reconnected.
    """

    WATCHDOG = False

    def __init__(self, config: CaliperBleConfig, hub: Hub) -> None:
        profile, profile_file = read_profile(config.profile, CaliperProfile)
        super().__init__(config, hub, profile.gatt, profile_file)
        self.profile = profile
        self.spec = StreamSpec(
            name=f"{config.name}.distance",
            type="Caliper",
            channels=("distance_mm", "button"),
            units=("mm", "bool"),
            kind=StreamKind.IRREGULAR,
            dtype="float32",
            device=config.name,
            latency_ns=profile.latency_ns + round(config.latency_us * 1000),
        )

    def streams(self) -> list[StreamSpec]:
        return [self.spec]

    def _record(self, items: list[Notification]) -> None:
        good, readings, counter, _ = decode_caliper_batch(
            self.profile.frame.format, self.profile.frame.scale_mm, [i.payload for i in items]
        )
        self._count_bad(len(items), good, "caliper notifications")
        if counter is not None:  # the reference caliper numbers its readings
            keep = self._drop_repeats(counter)
            good, readings = good[keep], readings[keep]
        if not len(good):
            return
        arrivals = np.array([items[i].t_ns for i in good], dtype=np.int64)
        self._emit_samples(self.spec, readings, int(arrivals[-1]), arrivals - self.spec.latency_ns)
