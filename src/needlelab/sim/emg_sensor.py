"""A simulated BLE EMG sensor: a bumble peripheral that streams any EMG profile's frames.

It has its own crystal (a drift in ppm, a start offset of its clock), sends its frames in
connection-interval bursts with one-sided latency jitter and optional notification loss, and its
signal is band-limited noise with activation bursts, plus stimulation artefacts at the pulse times
of a simulated stimulator whose settings history it is given (`needlelab.sim.artefacts`).
It speaks each profile's wire format (`encode_frames`): reference frames with their counter and
clock, Myo int8 pairs on four characteristics in turn, MyoWare ASCII readings around mid-scale.
Faults are those of every simulated sensor (`SimulatedBleDevice`).
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from needlelab.config import EmgSimulatorConfig
from needlelab.devices.emg_codecs import encode_frames
from needlelab.events import StimSettings
from needlelab.profiles import EmgProfile
from needlelab.sim.artefacts import add_block_artefacts
from needlelab.sim.ble_peripheral import GattPeripheral, SimulatedBleDevice
from needlelab.sim.faults import WireKind

if TYPE_CHECKING:
    from needlelab.record.reader import Block

StimHistory = Callable[[], Sequence[tuple[int, StimSettings]]]
"""A simulated stimulator's settings history so far: (monotonic ns, settings) in time order."""

Outgoing = tuple[int, int, bytes, WireKind]
"""A notification to send: sequence number (-1 for garbage), characteristic, bytes, its kind."""

# Thalmic's myohw.h, typed here and not taken from the profile: what the simulated Myo answers.
MYO_COMMAND_UUID = "d5060401-a904-deb9-4748-2c7f4a124842"  # CommandCharacteristic 0x0401
MYO_SET_SLEEP_MODE = 0x09  # myohw_command_set_sleep_mode; payload: one byte, 1 = never sleep
MYO_FIRMWARE = (1, 5, 1970, 2)  # myohw_fw_version_t: major, minor, patch, hardware_rev (rev D)
MYO_SERIAL = bytes.fromhex("c35b0d25b3cc")  # myohw_fw_info_t.serial_number[6]
MYO_SKU = 1  # myohw_sku_black_myo
MYO_INFO_VALUES = {
    # FirmwareVersionCharacteristic 0x0201: four uint16 little-endian.
    "d5060201-a904-deb9-4748-2c7f4a124842": struct.pack("<4H", *MYO_FIRMWARE),
    # MyoInfoCharacteristic 0x0101: serial[6], unlock_pose u16 (0x0000: myohw_pose_rest), classifier
    # type, index, has custom, stream indicating, sku (u8 each), reserved[7]: 20 bytes.
    "d5060101-a904-deb9-4748-2c7f4a124842": MYO_SERIAL
    + struct.pack("<H", 0x0000)
    + bytes([0, 0, 0, 0, MYO_SKU])
    + bytes(7),
}


class SimulatedEmgSensor(SimulatedBleDevice):
    """An EMG sensor of any profile on the in-process link `local:<link_name>`.

    `lost_frames` lists the sequence numbers of the frames its simulated loss dropped (ground
    truth for loss detection); `frames_sent` counts the rest (a `duplicate` fault's copies
    aside: a copy goes out, or is lost, with its original). `wire` notes every notification
    sent, by kind."""

    def __init__(
        self,
        profile: EmgProfile,
        sim: EmgSimulatorConfig,
        link_name: str,
        advertised_name: str,
        stim_history: StimHistory | None = None,
    ) -> None:
        zero = np.zeros(1, np.int64)
        blank = np.zeros((1, profile.frame.samples_per_frame, profile.frame.channels), np.int16)
        size = len(encode_frames(profile.frame, 1, zero, zero, blank)[0][1])
        is_myo = profile.frame.format == "myo-raw"
        info = MYO_INFO_VALUES if is_myo else None
        super().__init__(profile.gatt, link_name, advertised_name, sim.faults, size, info)
        self.profile = profile
        # The Myo's sleep: mode 0 (normal) sleeps `sim.sleep_after_s` after the first connection
        # with no motion (a patient lying still); mode 1 (never sleep) is set by its command.
        self.sleep_mode = 0
        self.sleeps = is_myo and sim.sleep_after_s is not None
        self.asleep_ns: int | None = None  # monotonic ns it fell asleep
        self._connected_at: float | None = None
        self.sim = sim
        self.rng = np.random.default_rng(sim.seed)
        self.jitter_rng = random.Random(sim.seed + 1)
        self.frames_made = 0
        self.frames_sent = 0
        self.lost_frames: list[int] = []
        self._lp = np.zeros(profile.frame.channels)
        self.stim_history = stim_history
        # (send at loop time, frames); a negative time marks garbage, sent as it is, at once.
        self._outbox: asyncio.Queue[tuple[float, list[Outgoing]]] = asyncio.Queue()
        self.t0_ns = 0  # monotonic ns of sample 0 (true host time), set when streaming starts
        # Every notification handed to the link: (frame, monotonic ns, subscribed, kind, CRC-32).
        self.sent_log: list[tuple[int, int, bool, WireKind, int]] = []

    def sample_period_ns(self) -> float:
        """The true host-time period of one sample: shorter when the crystal runs fast."""
        return 1e9 / self.profile.frame.rate_hz / (1 + self.sim.drift_ppm * 1e-6)

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

    def _on_write(self, uuid: str, value: bytes) -> None:
        """A command written to the simulated Myo: set_sleep_mode (09 01 mode) is obeyed."""
        if uuid == MYO_COMMAND_UUID and len(value) == 3 and value[:2] == bytes([9, 1]):
            self.sleep_mode = value[2]

    def _dozes(self, now: float, connected: bool) -> bool:
        """Whether the Myo sleeps at loop time `now` (and from then on: nothing moves it)."""
        if self.asleep_ns is not None:
            return True
        if not self.sleeps or self.sleep_mode == 1:
            return False
        if self._connected_at is None:
            if connected:
                self._connected_at = now
            return False
        assert self.sim.sleep_after_s is not None
        if now - self._connected_at >= self.sim.sleep_after_s:
            self.asleep_ns = time.monotonic_ns()
            return True
        return False

    async def _stream(self, peripheral: GattPeripheral) -> None:
        peripheral.on_write = self._on_write
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._sender(peripheral))
        try:
            await self._produce(peripheral, loop)
        finally:
            sender.cancel()

    async def _produce(self, peripheral: GattPeripheral, loop: asyncio.AbstractEventLoop) -> None:
        frame = self.profile.frame
        spf = frame.samples_per_frame
        nominal_frame_s = spf / frame.rate_hz
        period_ns = self.sample_period_ns()
        offset_us = round(self.sim.clock_offset_s * 1e6)
        t0 = loop.time()  # time.monotonic(): the same clock as the stimulator's history
        last_send_at = t0
        self.t0_ns = round(t0 * 1e9)
        next_drop = self.sim.battery_drop_every_s
        while True:
            await asyncio.sleep(self.sim.connection_interval_ms / 1000)
            now = loop.time()
            if next_drop is not None and now - t0 >= next_drop:
                next_drop += self.sim.battery_drop_every_s or 0.0
                await self.set_battery(max(self.battery_pct - 1, 0))
            for fault in self.due_faults(peripheral, now):
                junk = await self._apply_fault(peripheral, fault, now)
                if junk:
                    self._outbox.put_nowait((-1.0, [(-1, 0, p, "malformed") for p in junk]))
            # Frame k is complete once its last sample, index (k+1)*spf - 1, has been taken.
            due = int(((now - t0) * 1e9 / period_ns + 1) // spf)
            if due <= self.frames_made:
                continue
            seq = np.arange(self.frames_made, due, dtype=np.int64)
            t_us = offset_us + np.round(seq * nominal_frame_s * 1e6).astype(np.int64)
            signal = self._signal(len(seq) * spf)
            if self.stim_history is not None:
                add_block_artefacts(
                    signal,
                    self.stim_history(),
                    self.sim.artefacts_channel,
                    self.t0_ns + self.frames_made * spf * period_ns,
                    period_ns,
                )
            level = np.round(signal / frame.scale_uv)
            if frame.format == "ascii-value":  # a 10-bit ADC reading around mid-scale
                level = np.clip(level + 512, 0, 1023)
            counts = np.clip(level, -32768, 32767).astype(np.int16).reshape(len(seq), spf, -1)
            self.frames_made = due
            connected = bool(peripheral.device.connections)
            if self._dozes(now, connected) or self.silent(now) or not connected:
                continue
            frames: list[Outgoing] = []
            for n, (turn, payload) in zip(
                seq, encode_frames(frame, len(self.data_uuids), seq, t_us, counts), strict=True
            ):
                wire = self._cut(payload)
                kind: WireKind = "valid" if wire == payload else "malformed"
                for copy in range(self._copies()):  # a copy of a cut frame is malformed too
                    frames.append(
                        (int(n), turn, wire, "duplicate" if copy and kind == "valid" else kind)
                    )
            # One-sided latency: a burst is never early, and never before the previous one (a
            # link delivers in order). The sender waits for each burst's time in turn: separate
            # timers would fire bursts due at the same instant in any order.
            send_at = now + self.jitter_rng.uniform(0, self.sim.jitter_ms) / 1000
            send_at = max(send_at, last_send_at)
            last_send_at = send_at
            self._outbox.put_nowait((send_at, frames))

    def _keep(self, frames: list[Outgoing]) -> list[Outgoing]:
        """A connection event's frames, less the ones the simulated link loses (a duplicate's
        copy shares its original's fate)."""
        kept: list[Outgoing] = []
        for frame in frames:
            if frame[3] == "duplicate":
                if kept and kept[-1][0] == frame[0]:
                    kept.append(frame)
                continue
            if self.sim.loss and self.jitter_rng.random() < self.sim.loss:
                self.lost_frames.append(frame[0])
            else:
                kept.append(frame)
        self.frames_sent += sum(f[3] != "duplicate" for f in kept)
        return kept

    async def _sender(self, peripheral: GattPeripheral) -> None:
        """Send bursts one after another, each at its time: bursts never overtake or interleave."""
        loop = asyncio.get_running_loop()
        while True:
            send_at, burst = await self._outbox.get()
            delay = send_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not peripheral.device.connections:
                continue
            for seq, turn, payload, kind in self._keep(burst) if send_at >= 0 else burst:
                sent = (seq, time.monotonic_ns(), self._subscribed(turn), kind, zlib.crc32(payload))
                self.sent_log.append(sent)
                await peripheral.notify(self.data_uuids[turn], payload)
                self.wire.sent(kind)

    def _subscribed(self, turn: int) -> bool:
        """Whether a central has subscribed to the characteristic of `turn` (else a
        notification on it reaches nobody)."""
        if self.peripheral is None:
            return False
        handle = self.peripheral.characteristics[self.data_uuids[turn].lower()].handle
        subscribers = self.peripheral.device.gatt_server.subscribers
        return any(cccd.get(handle) for cccd in subscribers.values())

    def truth(self) -> dict[str, Any]:
        """What it truly did, for tests that judge a recording: sample s was taken at
        `t0_ns + s * sample_period_ns` (monotonic ns, system-wide) and frame k holds samples
        k * samples_per_frame onwards; `sent` lists every notification handed to the link, in
        order, as [frame k (-1: garbage), monotonic ns, subscribed, kind, CRC-32 of its bytes];
        `faults_t0_ns` when its scheduled faults' clock started (a central first connected);
        `lost` the frames the simulated loss dropped. Frames made while stalled, asleep or
        unconnected are in neither. `writes` lists every write a central made ([monotonic ns,
        characteristic, hex]); `sleep_mode` the Myo's last (0 normal, 1 never sleep) and
        `asleep_ns` when it fell asleep (None: awake); `info_served` each info characteristic's
        value (hex); `battery` every level it had, [monotonic ns, percent]."""
        return {
            "profile": self.profile.profile,
            "samples_per_frame": self.profile.frame.samples_per_frame,
            "t0_ns": self.t0_ns,
            # When its fault schedule started (a central first connected; None: never).
            "faults_t0_ns": None if self._faults_t0 is None else round(self._faults_t0 * 1e9),
            "sample_period_ns": self.sample_period_ns(),
            "sent": [list(entry) for entry in self.sent_log],
            "lost": list(self.lost_frames),
            "writes": self.writes(),
            "sleep_mode": self.sleep_mode,
            "asleep_ns": self.asleep_ns,
            "info_served": dict(self.info_served),
            "battery": [list(entry) for entry in self.battery_log],
            "address": None if self.peripheral is None else str(self.peripheral.address),
        }


def frames_truth_path(truth_path: Path, device: str) -> Path:
    """Where `needlelab sim session --truth FILE` puts an EMG simulator's frames: beside FILE."""
    return truth_path.with_name(f"{truth_path.stem}.{device}.frames.json")


def write_frames_truth(truth_path: Path, devices: Mapping[str, object]) -> None:
    """Write each simulated EMG sensor's `truth()` to its `frames_truth_path`."""
    for name, device in devices.items():
        if isinstance(device, SimulatedEmgSensor):
            frames_truth_path(truth_path, name).write_text(json.dumps(device.truth()))


def sample_time_errors(
    truth: Mapping[str, Any], blocks: Sequence[Block], times: np.ndarray, anchor_ns: int
) -> np.ndarray:
    """Recorded − true time (ns) of every sample of an EMG stream (its `blocks` as recorded,
    `times` the file's sample times, `anchor_ns` the file's monotonic anchor), from a
    simulated sensor's `truth()`: its frames carry a counter, so each recorded block is the
    frame the counter says (the first one the sensor sent to a subscribed central with that
    counter value, and on from there), and the frame's samples were taken at
    `t0_ns + s * sample_period_ns`. Empty when the stream has no block or its frames no
    counter. Unlike the artefact check it cannot alias: a periodic pulse train matches a
    shifted copy of itself, a counter does not.
    """
    from needlelab.profiles import load_emg_profile

    bits = load_emg_profile(str(truth["profile"])).frame.counter_bits
    if not blocks or not bits or blocks[0].device_counter is None:
        return np.empty(0, np.int64)
    c0 = int(blocks[0].device_counter)
    first = next(
        (
            int(k)
            for k, _t, subscribed, kind, _crc in truth["sent"]
            if subscribed and kind == "valid" and k >= 0 and k % (1 << bits) == c0 % (1 << bits)
        ),
        None,
    )
    if first is None:
        return np.empty(0, np.int64)
    spf = int(truth["samples_per_frame"])
    sample = np.concatenate(
        [
            (first + int(b.device_counter or 0) - c0) * spf + np.arange(b.n, dtype=np.int64)
            for b in blocks
        ]
    )
    true_ns = truth["t0_ns"] + sample * float(truth["sample_period_ns"]) - anchor_ns
    return np.asarray(times - np.round(true_ns).astype(np.int64), dtype=np.int64)
