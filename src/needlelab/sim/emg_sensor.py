"""A simulated BLE EMG sensor: a bumble peripheral that streams reference-profile frames.

It has its own crystal (a drift in ppm), sends its frames in connection-interval bursts with
one-sided latency jitter and optional notification loss, and its signal is band-limited noise with
activation bursts. Faults: `disconnect` drops the link with HCI reason 0x08 and re-advertises after
`duration_s`; `stall` keeps the link but sends nothing for `duration_s`.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np

from needlelab.config import EmgSimulatorConfig, FaultSpec
from needlelab.devices.emg_codecs import encode_ref_frames
from needlelab.profiles import EmgProfile
from needlelab.sim.ble_peripheral import GattPeripheral, SimulatedBleDevice


class SimulatedEmgSensor(SimulatedBleDevice):
    """A reference-profile EMG sensor on the in-process link `local:<link_name>`."""

    def __init__(
        self, profile: EmgProfile, sim: EmgSimulatorConfig, link_name: str, advertised_name: str
    ) -> None:
        if profile.frame.format != "needlelab-ref":
            raise ValueError(f"the EMG simulator speaks needlelab-ref, not {profile.frame.format}")
        super().__init__(profile.gatt, link_name, advertised_name)
        self.profile = profile
        self.sim = sim
        self.rng = np.random.default_rng(sim.seed)
        self.jitter_rng = random.Random(sim.seed + 1)
        self.frames_made = 0
        self.frames_sent = 0
        self._silent_until = 0.0
        self._lp = np.zeros(profile.frame.channels)

    def _signal(self, n: int) -> np.ndarray:
        """n samples × channels of EMG in µV: band-limited noise, bursts of activation."""
        frame = self.profile.frame
        white = self.rng.standard_normal((n, frame.channels)) * 20.0
        # One-pole low-pass per channel keeps the noise band-limited without scipy.
        out = np.empty_like(white)
        state = self._lp
        for i in range(n):  # n is one burst (tens of samples); cheap enough for a simulator
            state = 0.7 * state + 0.3 * white[i]
            out[i] = state
        self._lp = state
        t = (self.frames_made * frame.samples_per_frame + np.arange(n)) / frame.rate_hz
        active = ((t % 4.0) > 2.5)[:, None]
        return out + active * self.rng.standard_normal((n, frame.channels)) * 150.0

    async def _stream(self, peripheral: GattPeripheral) -> None:
        loop = asyncio.get_running_loop()
        frame = self.profile.frame
        spf = frame.samples_per_frame
        nominal_frame_s = spf / frame.rate_hz
        true_frame_s = nominal_frame_s * (1 + self.sim.drift_ppm * 1e-6)
        faults = sorted(((f.at_s, f) for f in self.sim.faults), key=lambda x: x[0])
        t0 = loop.time()
        while True:
            await asyncio.sleep(self.sim.connection_interval_ms / 1000)
            now = loop.time()
            while faults and now - t0 >= faults[0][0]:
                _, fault = faults.pop(0)
                await self._apply(peripheral, fault, now)
                if fault.every_s:
                    faults.append(
                        (
                            fault.at_s
                            + fault.every_s * (1 + int((now - t0 - fault.at_s) / fault.every_s)),
                            fault,
                        )
                    )
                    faults.sort(key=lambda x: x[0])
            due = int((now - t0) / true_frame_s)
            if due <= self.frames_made:
                continue
            seq = np.arange(self.frames_made, due, dtype=np.int64)
            t_us = np.round(seq * nominal_frame_s * 1e6).astype(np.int64)
            counts = (
                np.clip(np.round(self._signal(len(seq) * spf) / frame.scale_uv), -32768, 32767)
                .astype(np.int16)
                .reshape(len(seq), spf, -1)
            )
            self.frames_made = due
            frames = encode_ref_frames(frame, seq, t_us, counts)
            if now < self._silent_until or not peripheral.device.connections:
                continue
            if self.sim.jitter_ms:  # one-sided: a burst is never early
                await asyncio.sleep(self.jitter_rng.uniform(0, self.sim.jitter_ms) / 1000)
            for payload in frames:
                if self.sim.loss and self.jitter_rng.random() < self.sim.loss:
                    continue
                await peripheral.notify(self.data_uuid, payload)
                self.frames_sent += 1

    async def _apply(self, peripheral: GattPeripheral, fault: FaultSpec, now: float) -> None:
        if fault.kind == "stall":
            self._silent_until = now + fault.duration_s
        elif fault.kind == "disconnect":
            await peripheral.device.stop_advertising()
            await peripheral.drop_link()
            asyncio.get_running_loop().call_later(
                fault.duration_s, lambda: asyncio.ensure_future(peripheral.advertise())
            )
