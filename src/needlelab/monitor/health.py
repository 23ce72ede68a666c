"""Device health for the monitor: one row of figures per device, and whether it needs attention.

Pure Python over the devices' live stats and the hub, so the rule that turns a device red is
tested without Qt: a device is unhealthy when it is stalled, reconnecting, failed (its driver
raised an exception it did not expect, watchdog or not) or connecting after it had streamed, or
when a device that must stream continuously has been silent longer than its stall timeout
(caught here even before its own watchdog trips).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from needlelab.devices import Device
from needlelab.devices.base import DeviceState
from needlelab.events import GapEvent
from needlelab.hub import Hub
from needlelab.session import Session

BAD_STATES = {DeviceState.STALLED, DeviceState.RECONNECTING, DeviceState.FAILED}
RATE_WINDOW_S = 5.0  # the effective rate is counted over this long: a steady figure
RATE_FIRST_S = 1.0  # the first figure is shown after this long


@dataclass(frozen=True)
class DeviceHealth:
    """What the device panel shows for one device."""

    name: str
    state: str
    healthy: bool
    problem: str  # what is wrong and what to do, for the banner ("" when healthy)
    rate_hz: float | None  # effective sample rate over the last RATE_WINDOW_S (regular streams)
    nominal_hz: float | None
    lost: int  # samples lost (counted or inferred) so far
    battery_pct: float | None
    clock_ms: float | None  # clock-model uncertainty of its regular stream, ms
    last_seen_s: float | None  # since its last data


class HealthTracker:
    """Keeps the per-device figures that need history (rates, lost samples) between calls.

    `hub` is the one the devices write to: the session's, or a preview's before it records."""

    def __init__(self, session: Session, hub: Hub | None = None) -> None:
        self.session = session
        self.hub = hub if hub is not None else session.hub
        self._lost: dict[str, int] = {}
        # stream: (t_ns, samples so far) as seen at each call, over the last RATE_WINDOW_S
        self._counts: dict[str, deque[tuple[int, int]]] = {}

    def take_event(self, event: object) -> None:
        """Count lost samples from `gap` events."""
        if isinstance(event, GapEvent) and event.samples_lost:
            spec = self.hub.streams.get(event.stream)
            device = spec.device if spec is not None else event.stream.split(".", 1)[0]
            self._lost[device] = self._lost.get(device, 0) + event.samples_lost

    def _effective_rate(self, stream: str, now_ns: int) -> float | None:
        """Samples that arrived over the last RATE_WINDOW_S, per second. A sensor sends its
        samples in packets: over one second the count swung ±9 % (1955-2174 / 2000 Hz) with
        the packets' timing; over five it holds within a fraction of a percent."""
        total = self.hub.ring(stream).total
        counts = self._counts.setdefault(stream, deque())
        if counts and counts[0][1] == total:  # nothing yet, or stopped: count from what comes
            counts.clear()
        counts.append((now_ns, total))
        while len(counts) > 2 and now_ns - counts[1][0] >= RATE_WINDOW_S * 1e9:
            counts.popleft()
        t0, total0 = counts[0]
        if now_ns - t0 < RATE_FIRST_S * 1e9:
            return None
        return (total - total0) / ((now_ns - t0) / 1e9)

    def health(self, device: Device) -> DeviceHealth:
        """The figures and verdict for one device now."""
        stats = device.stats
        now = self.session.clock.now_ns()
        regular = [s for s in device.streams() if s.nominal_rate_hz > 0]
        rate = nominal = clock_ms = None
        if regular and regular[0].name in self.hub.streams:
            spec = regular[0]
            nominal = spec.nominal_rate_hz
            rate = self._effective_rate(spec.name, now)
            segment = self.session.live_clock(spec.name)
            clock_ms = segment.uncertainty_ns / 1e6 if segment is not None else None
        seen = None if stats.last_data_t_ns is None else (now - stats.last_data_t_ns) / 1e9
        problem = ""
        if stats.state in BAD_STATES:
            problem = f"{device.name}: {stats.state.value}"
            if stats.reason:
                problem += f" ({stats.reason})"
        elif stats.state is DeviceState.CONNECTING and stats.last_data_t_ns is not None:
            problem = f"{device.name}: connecting again"
        elif (
            device.WATCHDOG
            and stats.state is DeviceState.STREAMING
            and seen is not None
            and seen > device.config.stall_timeout_s
        ):
            problem = f"{device.name}: no data for {seen:.1f} s"
        if stats.state is DeviceState.FAILED:
            problem += " - a driver error (the log has its traceback); it reconnects by itself"
        elif problem:
            problem += " - check it is on, charged and in range; it reconnects by itself"
        return DeviceHealth(
            name=device.name,
            state=stats.state.value,
            healthy=not problem,
            problem=problem,
            rate_hz=rate,
            nominal_hz=nominal,
            lost=self._lost.get(device.name, 0),
            battery_pct=stats.battery_pct,
            clock_ms=clock_ms,
            last_seen_s=seen,
        )
