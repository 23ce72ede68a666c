"""Session files for the export tests, written by the real `SessionWriter` from a real `Hub`.

Regular streams arrive in blocks whose host times come from a simulated crystal (its drift in
ppm) plus a one-sided latency, as a BLE sensor's do, so the stored clock model has a drift to
correct; the exports are then judged against the file read back with `open_session`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from needlelab.clock import SessionClock
from needlelab.events import Event
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, session_file_name
from needlelab.streams import Chunk, StreamKind, StreamSpec

Signal = Callable[[int, int], npt.NDArray[np.float32]]
"""(first sample index, n) -> n x channels of values: a stream's content, made block by block."""


@dataclass
class Regular:
    """A regular stream to record: its spec, its content, and its device's crystal."""

    spec: StreamSpec
    seconds: float
    signal: Signal
    drift_ppm: float = 0.0
    start_ns: int = 5_000_000  # session time of its first sample
    block: int = 100
    latency_ns: int = 3_000_000
    jitter_ns: int = 2_000_000
    gaps: Sequence[tuple[int, int]] = ()  # (first index, samples) never delivered


@dataclass
class Irregular:
    """An irregular stream: its spec and its samples (session times, values)."""

    spec: StreamSpec
    t_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]


@dataclass
class Plan:
    """What a session file holds."""

    patient: str = "EXP01"
    wall_ns: int = 1_795_443_906_661_234_567  # 2026-11-23 ... .661234567 UTC: sub-second
    regular: list[Regular] = field(default_factory=list)
    irregular: list[Irregular] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    config_json: str = '{"session": {"patient_id": "EXP01"}, "devices": []}'


def noise(channels: int, seed: int = 1, sigma: float = 50.0) -> Signal:
    """White Gaussian noise (broadband: flat to the Nyquist frequency), reproducible by index."""

    def make(first: int, n: int) -> npt.NDArray[np.float32]:
        rng = np.random.default_rng([seed, first])
        return (rng.standard_normal((n, channels)) * sigma).astype(np.float32)

    return make


def write(folder: Path, plan: Plan) -> Path:
    """Record `plan` into a new session file in `folder`; its path."""
    hub = Hub(SessionClock())
    meta = SessionMeta(session_id="export-test", patient_id=plan.patient,
                       anchor_monotonic_ns=0, anchor_wall_ns=plan.wall_ns,
                       config_json=plan.config_json, software_version="test")  # fmt: skip
    writer = SessionWriter(folder / session_file_name(plan.patient, plan.wall_ns), hub, meta)
    writer.start()
    try:
        for r in plan.regular:
            hub.add_stream(r.spec)
        for s in plan.irregular:
            hub.add_stream(s.spec)
        for s in plan.irregular:
            hub.push(Chunk(s.spec.name, s.values, int(s.t_ns[-1]), 0, s.t_ns))
        for event in plan.events:
            hub.emit(event)
        for r in plan.regular:
            _push_regular(hub, r)
    finally:
        writer.stop()
    assert writer.error is None and writer.dropped == 0
    return writer.path


def _push_regular(hub: Hub, r: Regular) -> None:
    rate = r.spec.nominal_rate_hz
    period = 1e9 / rate / (1 + r.drift_ppm * 1e-6)  # a fast crystal: shorter true periods
    total = round(r.seconds * rate)
    rng = np.random.default_rng(99)
    lost = [(a, a + n) for a, n in r.gaps]
    for first in range(0, total, r.block):
        n = min(r.block, total - first)
        if any(a <= first < b for a, b in lost):
            continue
        arrival = r.start_ns + (first + n - 1) * period + r.latency_ns
        arrival += int(rng.integers(0, r.jitter_ns + 1))
        hub.push(
            Chunk(r.spec.name, r.signal(first, n), round(arrival), first, device_counter=first)
        )
        while hub.backlog() > 2000:
            time.sleep(0.001)


def emg_spec(name: str, channels: Sequence[str], rate: float = 2000.0) -> StreamSpec:
    """A regular EMG stream (µV, float32) of the given channel names."""
    return StreamSpec(name, "EMG", tuple(channels), ("uV",) * len(channels), StreamKind.REGULAR,
                      rate, device=name.split(".")[0])  # fmt: skip
