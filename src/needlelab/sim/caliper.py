"""A simulated BLE caliper: the distances of a two-point-discrimination session.

The clinician sets the caliper for each trial (a few readings while the jaws move), then presses
the data button on the trial distance. Distances follow a 1-up/2-down staircase from 60 mm in
5 mm steps with a simulated patient whose lumbar threshold is about 45 mm. Faults are those of
every simulated sensor (`SimulatedBleDevice`); a stall silences the presses.

With `control` in its config the caliper has no staircase of its own: it presses the distances
`press()` is given (the demo's clinician setting each TPD trial), and `presses` logs each one it
sent with its time.
"""

from __future__ import annotations

import asyncio
import queue
import random
import struct
import time

from needlelab.config import CaliperSimulatorConfig
from needlelab.profiles import CaliperProfile
from needlelab.sim.ble_peripheral import GattPeripheral, SimulatedBleDevice
from needlelab.sim.faults import WireKind

TICK_S = 0.05  # how often faults are looked at
CONTROL_TICK_S = 0.005  # how often a controlled caliper looks for a press to make
JAW_S = 0.05  # between the readings sent while the jaws move to a distance
CONTROL_JAW_S = 0.01  # the same for a controlled caliper (the demo's quick clinician)
SYLVAC = "<i"  # distance, 1e-7 m
REFERENCE = "<HiB"  # seq, distance µm, flags (bit 0: the button)


class SimulatedCaliper(SimulatedBleDevice):
    """A caliper speaking a caliper profile (Sylvac simple or the needlelab reference)."""

    def __init__(
        self,
        profile: CaliperProfile,
        sim: CaliperSimulatorConfig,
        link_name: str,
        advertised_name: str,
    ) -> None:
        sylvac = profile.frame.format == "sylvac-simple"
        size = struct.calcsize(SYLVAC if sylvac else REFERENCE)
        super().__init__(profile.gatt, link_name, advertised_name, sim.faults, size)
        self.profile = profile
        self._seq = 0
        self.sim = sim
        self.rng = random.Random(sim.seed)
        self.pressed_mm: list[float] = []  # every button reading sent, for tests
        # (monotonic ns, mm) of every press sent, malformed or not (`wire` says which were cut)
        self.presses: list[tuple[int, float]] = []
        self._requests: queue.SimpleQueue[float] = queue.SimpleQueue()

    def press(self, distance_mm: float) -> None:
        """Set the jaws to `distance_mm` and press the data button, soon (a caliper with
        `control`; any thread). Not while stalled or without a central, as for a real one."""
        if not self.sim.control:
            raise ValueError("this simulated caliper presses on its own schedule (no control)")
        self._requests.put(float(distance_mm))

    def encode(self, distance_mm: float, button: bool) -> bytes:
        """One reading on the wire."""
        if self.profile.frame.format == "sylvac-simple":
            return struct.pack(SYLVAC, round(distance_mm / self.profile.frame.scale_mm))
        self._seq = (self._seq + 1) % 65536
        return struct.pack(REFERENCE, self._seq, round(distance_mm * 1000), 1 if button else 0)

    async def _send(self, peripheral: GattPeripheral, distance_mm: float, button: bool) -> None:
        payload = self.encode(distance_mm, button)
        wire = self._cut(payload)
        kind: WireKind = "valid" if wire == payload else "malformed"
        for copy in range(self._copies()):  # a copy of a cut reading is malformed too
            await peripheral.notify(self.data_uuid, wire)
            self.wire.sent("duplicate" if copy and kind == "valid" else kind)

    async def _press(
        self, peripheral: GattPeripheral, distance: float, previous: float, jaw_s: float
    ) -> None:
        """The jaws move from `previous` (a reading on the way, for the reference profile,
        whose frames carry the button), then the button is pressed on `distance`."""
        if self.profile.frame.format != "sylvac-simple":
            for k in (1, 2):
                await self._send(peripheral, previous + (distance - previous) * k / 3, False)
                await asyncio.sleep(jaw_s)
        await self._send(peripheral, distance, True)
        self.pressed_mm.append(distance)
        self.presses.append((time.monotonic_ns(), distance))

    async def _stream(self, peripheral: GattPeripheral) -> None:
        if self.sim.control:
            await self._controlled(peripheral)
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        next_press = t0 + self.sim.press_every_s
        distance, correct_in_row, previous = 60.0, 0, 60.0
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            await self._faults(peripheral, now)
            if now < next_press:
                continue
            next_press += self.sim.press_every_s
            if self.silent(now) or not peripheral.device.connections:
                continue
            await self._press(peripheral, distance, previous, JAW_S)
            previous = distance
            felt_two = distance > 45.0 + self.rng.gauss(0, 5)
            correct_in_row = correct_in_row + 1 if felt_two else 0
            if correct_in_row >= 2:
                distance, correct_in_row = max(5.0, distance - 5.0), 0
            elif not felt_two:
                distance = min(120.0, distance + 5.0)

    async def _faults(self, peripheral: GattPeripheral, now: float) -> None:
        """Apply the faults due now (garbage goes out as notifications of the data
        characteristic)."""
        for fault in self.due_faults(peripheral, now):
            for junk in await self._apply_fault(peripheral, fault, now):
                await peripheral.notify(self.data_uuid, junk)
                self.wire.sent("malformed")

    async def _controlled(self, peripheral: GattPeripheral) -> None:
        """Press what `press()` asked for, in order; faults on their schedule meanwhile."""
        loop = asyncio.get_running_loop()
        previous = 0.0
        while True:
            await asyncio.sleep(CONTROL_TICK_S)
            now = loop.time()
            await self._faults(peripheral, now)
            while not self._requests.empty():
                distance = self._requests.get_nowait()
                if self.silent(now) or not peripheral.device.connections:
                    continue  # a press nobody hears: the clinician presses again, or types
                await self._press(peripheral, distance, previous, CONTROL_JAW_S)
                previous = distance
