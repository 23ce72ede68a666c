"""A simulated BLE link's latency floor, measured before its endpoint is handed out.

A real setup is calibrated once against a reference: a short recording whose true sample times
are known (a stimulation artefact, a reference pulse), giving the floor of arrival latency that
the clock fit's offset sits on; the config declares it as `latency_us`. A simulator
knows its true times, so the simulator set does that calibration itself, over the same kind of
link it is about to serve: a twin of the EMG sensor (same profile, connection interval and
jitter; no faults, no loss, no artefacts) on its own link of the same mode (in-process, unix or
TCP HCI socket), a central through needlelab's own bumble bleak backend (the stack the app
uses) subscribed to its data for `PROBE_S`, and the floor is the typical floor
(`clock.typical_floor`: the median over half-second stretches of the least) of `arrival − true
time of the frame's last sample` (the sample a frame's arrival is tied to), with arrivals stamped
as the app stamps them (bytes off the socket): the statistic the clock fit puts sample times at,
which does not depend on how long the probe or the session lasts (the least of all does: over a
3 s probe on a loaded machine it was 2.32 ms, over the 45 s session 1.05 ms, while the typical
floors were 3.00 and 2.97 ms). The twin keeps the real
sensor's truth log clean: no probe frame is in it.

What it is not: the floor is measured once, at start, on this machine's load at that moment,
with the probe's central in the simulator's process (the app's host runs in another); it does
not follow a floor that moves during a session, and a real adapter's radio part is not in it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from needlelab.clock import typical_floor

PROBE_S = 3.0
"""How long the probe listens: 200-400 connection events at the demo's 7.5-15 ms intervals (a
1 s probe overlapping the start of the other simulators read the floor up to 1 ms high, and the
clock fit, whose offset rests on a whole session's arrivals, then sat that far early)."""


PROBE_ATTEMPTS = 3
"""How many times the probe listens at most: again while its frames queued (`LinkFloor.queued`;
on a loaded machine one 3 s probe read a typical floor of 94 ms where the session's was 3 ms).
The lowest typical floor of the attempts is declared."""


@dataclass(frozen=True)
class LinkFloor:
    """A probe's result (µs): the typical floor (`clock.typical_floor`, the statistic the clock
    fit puts sample times at), the least and the median latency, and the frames matched."""

    floor_us: float
    least_us: float
    median_us: float
    frames: int

    def queued(self, interval_ms: float, jitter_ms: float) -> bool:
        """Whether the probe's frames waited behind a backlog for most of it (its central
        starved on a busy machine): a frame waits at most a connection interval and the
        jitter's range for its turn, so a typical floor higher than that above the least is
        frames queued, not the link."""
        return self.floor_us - self.least_us > (interval_ms + jitter_ms) * 1000

    def as_dict(self) -> dict[str, float]:
        """JSON-ready: what `needlelab sim session` reports beside the endpoint."""
        return {
            "floor_us": self.floor_us,
            "least_us": self.least_us,
            "median_us": self.median_us,
            "frames": self.frames,
        }


def floor_from(
    arrivals: list[tuple[int, int]],
    sent: list[tuple[int, int, bool, str, int]],
    t0_ns: int,
    period_ns: float,
    samples_per_frame: int,
) -> LinkFloor | None:
    """The floor of `arrival − true last-sample time` over the frames a central received.

    `arrivals` are (monotonic ns, CRC-32 of the bytes) as received; `sent` the simulator's log
    (frame, monotonic ns, subscribed, kind, CRC-32). A frame is recognised by its bytes' CRC
    (one whose CRC two frames share is left out); None when no frame was matched.
    """
    by_crc: dict[int, int] = {}
    shared: set[int] = set()
    for frame, _t, _sub, kind, crc in sent:
        if kind != "valid" or frame < 0:
            continue
        if crc in by_crc:
            shared.add(crc)
        by_crc[crc] = frame
    matched = [(t, by_crc[crc]) for t, crc in arrivals if crc in by_crc and crc not in shared]
    if not matched:
        return None
    t = np.array([t for t, _ in matched], dtype=np.float64)
    frames = np.array([k for _, k in matched], dtype=np.float64)
    d = t - (t0_ns + ((frames + 1) * samples_per_frame - 1) * period_ns)
    typical, least, median = typical_floor(d, t), float(d.min()), float(np.median(d))
    return LinkFloor(typical / 1e3, least / 1e3, median / 1e3, len(d))


async def listen(
    spec: str, advertised_name: str, data_uuids: list[str], seconds: float
) -> list[tuple[int, int]]:
    """Be the probe's central: find `advertised_name` on bumble transport `spec` through
    needlelab's bumble bleak backend, subscribe to `data_uuids` for `seconds`; every
    notification's (arrival monotonic ns, CRC-32), stamped as the app stamps it."""
    from bleak import BleakClient, BleakScanner

    from needlelab.ble.bumble_backend import BumbleClient, BumbleScanner, local_link

    transport: Any = local_link(spec.removeprefix("local:")) if spec.startswith("local:") else spec
    arrivals: list[tuple[int, int]] = []

    def received(_char: Any, data: bytearray) -> None:
        rx_ns = getattr(data, "rx_ns", None)  # bytes off the socket, as the app stamps them
        arrivals.append((rx_ns or time.monotonic_ns(), zlib.crc32(bytes(data))))

    kw: dict[str, Any] = {"bumble_transport": transport}  # the bumble backend's own keyword
    found = await BleakScanner.find_device_by_name(
        advertised_name, timeout=10, backend=BumbleScanner, **kw
    )
    if found is None:
        return arrivals
    client = BleakClient(found, backend=BumbleClient, bumble_transport=transport, timeout=10)
    await client.connect()
    try:
        for uuid in data_uuids:
            await client.start_notify(uuid, received)
        await asyncio.sleep(seconds)
    finally:
        await client.disconnect()
    return arrivals


async def probe_floor(
    sensor: Any,
    serve: Callable[[Any], Awaitable[str]],
    seconds: float = PROBE_S,
) -> LinkFloor | None:
    """Serve `sensor` (a twin, started by `serve`) and listen to it for `seconds`: its floor
    (None if no frame was matched).

    Over a socket the central runs in a process of its own (`python -m
    needlelab.sim.link_probe`), as the app's does: a central in the simulator's process would
    share its CPU and measure a slower stack. On an in-process link it runs here, as the app's.
    """
    spec = await serve(sensor)
    if spec.startswith("local:"):
        arrivals = await listen(spec, sensor.advertised_name, sensor.data_uuids, seconds)
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "needlelab.sim.link_probe", spec, sensor.advertised_name,
            f"{seconds:g}", *sensor.data_uuids,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the link probe failed: {err.decode(errors='replace').strip()}")
        arrivals = [(int(t), int(c)) for t, c in json.loads(out)]
    await sensor.stop()  # quiet before the link goes: nothing is sent into a closed one
    return floor_from(
        arrivals,
        sensor.sent_log,
        sensor.t0_ns,
        sensor.sample_period_ns(),
        sensor.profile.frame.samples_per_frame,
    )


def main(argv: list[str]) -> int:
    """`python -m needlelab.sim.link_probe SPEC NAME SECONDS UUID...`: print the arrivals."""
    spec, name, seconds, *uuids = argv
    arrivals = asyncio.run(listen(spec, name, uuids, float(seconds)))
    sys.stdout.write(json.dumps(arrivals) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
