"""A simulated BLE caliper: the distances of a two-point-discrimination session.

The clinician sets the caliper for each trial (a few readings while the jaws move), then presses
the data button on the trial distance. Distances follow a 1-up/2-down staircase from 60 mm in
5 mm steps with a simulated patient whose lumbar threshold is about 45 mm.
"""

from __future__ import annotations

import asyncio
import random
import struct

from needlelab.config import CaliperSimulatorConfig
from needlelab.profiles import CaliperProfile
from needlelab.sim.ble_peripheral import GattPeripheral, SimulatedBleDevice


class SimulatedCaliper(SimulatedBleDevice):
    """A caliper speaking a caliper profile (Sylvac simple or the needlelab reference)."""

    def __init__(
        self,
        profile: CaliperProfile,
        sim: CaliperSimulatorConfig,
        link_name: str,
        advertised_name: str,
    ) -> None:
        super().__init__(profile.gatt, link_name, advertised_name)
        self.profile = profile
        self.sim = sim
        self.rng = random.Random(sim.seed)
        self.pressed_mm: list[float] = []  # every button reading sent, for tests
        self._seq = 0

    def encode(self, distance_mm: float, button: bool) -> bytes:
        """One reading on the wire."""
        if self.profile.frame.format == "sylvac-simple":
            return struct.pack("<i", round(distance_mm / self.profile.frame.scale_mm))
        self._seq = (self._seq + 1) % 65536
        return struct.pack("<HiB", self._seq, round(distance_mm * 1000), 1 if button else 0)

    async def _stream(self, peripheral: GattPeripheral) -> None:
        distance, correct_in_row, previous = 60.0, 0, 60.0
        while True:
            await asyncio.sleep(self.sim.press_every_s)
            if not peripheral.device.connections:
                continue
            if self.profile.frame.format != "sylvac-simple":  # the jaws move to the distance
                for k in (1, 2):
                    moving = previous + (distance - previous) * k / 3
                    await peripheral.notify(self.data_uuid, self.encode(moving, False))
                    await asyncio.sleep(0.05)
            await peripheral.notify(self.data_uuid, self.encode(distance, True))
            self.pressed_mm.append(distance)
            previous = distance
            felt_two = distance > 45.0 + self.rng.gauss(0, 5)
            correct_in_row = correct_in_row + 1 if felt_two else 0
            if correct_in_row >= 2:
                distance, correct_in_row = max(5.0, distance - 5.0), 0
            elif not felt_two:
                distance = min(120.0, distance + 5.0)
