"""The device base class: lifecycle, watchdog, reconnect with backoff and gap events.

Drivers fill in three private hooks (`_connect`, `_service`, `_disconnect`) and decode their own
bytes; everything about staying alive lives here, once (the python-can `recv`/`_recv_internal`
pattern).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

from needlelab.config import DeviceBase
from needlelab.events import DataQualityEvent, DeviceStateEvent, Event, GapEvent
from needlelab.hub import Hub
from needlelab.streams import Chunk, StreamKind, StreamSpec

log = logging.getLogger(__name__)


class DeviceError(Exception):
    """A device failed in a way the lifecycle recovers from (reconnect), with a human message."""


class DeviceState(StrEnum):
    """Where a device is in its lifecycle."""

    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class DeviceStats:
    """Live health figures of one device, read by the monitor and the CLI progress line.

    The data-quality counts (cumulative, recorded as `device.quality` events):
    - `malformed`: received messages that could not be decoded, each counted once;
    - `duplicates`: well-formed messages that repeat the one before them (same sequence counter),
      dropped; only devices whose frames carry a counter can see them;
    - `resyncs`: times the decoder lost the framing and had to find it again: each run of
      malformed input between valid messages counts once, however many messages it spans.
    """

    state: DeviceState = DeviceState.IDLE
    reason: str = ""
    samples: int = 0
    malformed: int = 0
    duplicates: int = 0
    resyncs: int = 0
    reconnects: int = 0
    gaps: int = 0
    last_data_t_ns: int | None = None
    battery_pct: float | None = None
    malformed_detail: list[str] = field(default_factory=list)


class Device(ABC):
    """A data source with needlelab's shared lifecycle.

    `start()` runs a supervisor thread: connect → service in a loop → on failure or stall,
    disconnect, wait with exponential backoff, reconnect. A stall is no data for
    `config.stall_timeout_s`. When data flow again after an outage, a `gap` event is recorded for
    each of the device's streams. Malformed input is counted (`stats.malformed`), never fatal;
    with the duplicates and resyncs it is recorded as `device.quality` events (see `DeviceStats`).

    Hooks for drivers (called on the supervisor thread only):
    - `_connect()`: open the transport and do any handshake; raise on failure.
    - `_service(timeout_s)`: read what arrives within about `timeout_s`, decode it and call
      `_emit_chunk` / `_emit_event` / `_count_malformed` / `_count_duplicates`. It must return
      within about that time, so the watchdog and stop requests are seen.
    - `_disconnect()`: close the transport; must not raise.
    """

    RECOVERABLE: tuple[type[BaseException], ...] = (DeviceError, OSError)
    """Exceptions from hooks that mean 'reconnect'; drivers add their transport's error types."""

    MALFORMED_DETAIL_KEEP = 20

    QUALITY_EVERY_NS = 1_000_000_000
    """Changed data-quality counts are recorded at most this often (and at start and stop)."""

    WATCHDOG = True
    """Whether silence means a stall; off for sources that only speak on change (manual entry)."""

    def __init__(self, config: DeviceBase, hub: Hub) -> None:
        self.config = config
        self.name = config.name
        self.hub = hub
        self.stats = DeviceStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage_start_ns: int | None = None  # last data time before an outage
        self._outage_reason = ""
        self._stream_index: dict[str, int] = {}  # next sample index per stream
        self._quality_sent: tuple[int, int, int] | None = None  # counts last recorded
        self._quality_sent_ns = 0

    # -- public API ------------------------------------------------------------------------------
    @abstractmethod
    def streams(self) -> list[StreamSpec]:
        """The streams this device produces (declared on the hub at start)."""

    def start(self) -> None:
        """Declare streams and start the supervisor thread."""
        if self._thread is not None:
            raise RuntimeError(f"device {self.name} already started")
        for spec in self.streams():
            self.hub.add_stream(spec)
            self._stream_index.setdefault(spec.name, 0)
        self._thread = threading.Thread(
            target=self._supervise, name=f"device-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the supervisor, close the transport and record the final state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("device %s did not stop within %.1f s", self.name, timeout_s)
            self._thread = None

    @property
    def state(self) -> DeviceState:
        """Current lifecycle state."""
        return self.stats.state

    # -- helpers for drivers ---------------------------------------------------------------------
    def _emit_event(self, event: Event) -> Event:
        """Record an event from this device (source defaults to the device name)."""
        if not event.source:
            event = event.model_copy(update={"source": self.name})
        return self.hub.emit(event)

    def _emit_chunk(self, chunk: Chunk) -> None:
        """Record a chunk; marks the device alive and closes any open outage with gap events."""
        self._mark_alive(chunk.t_host_ns)
        self.stats.samples += chunk.n
        self._stream_index[chunk.stream] = chunk.first_index + chunk.n
        self.hub.push(chunk)

    def _next_index(self, stream: str) -> int:
        """The index the next sample of `stream` gets."""
        return self._stream_index.get(stream, 0)

    def _emit_samples(
        self,
        spec: StreamSpec,
        values: np.ndarray,
        t_host_ns: int,
        t_ns: np.ndarray | None = None,
        first_index: int | None = None,
        **raw: int | None,
    ) -> None:
        """Wrap decoded values in a chunk for `spec` and push it.

        `first_index` defaults to the stream's next index; a driver that knows better (from a
        device counter) passes it, and a jump records a known loss.
        """
        if spec.kind is StreamKind.IRREGULAR and t_ns is None:
            t_ns = np.full(values.shape[0], t_host_ns - spec.latency_ns, dtype=np.int64)
        self._emit_chunk(
            Chunk(
                spec.name,
                values,
                t_host_ns,
                self._next_index(spec.name) if first_index is None else first_index,
                t_ns,
                raw.get("device_counter"),
                raw.get("device_t_us"),
            )
        )

    def _mark_alive(self, t_ns: int | None = None) -> None:
        """Note that valid data arrived now (feeds the watchdog)."""
        now = self.hub.clock.now_ns() if t_ns is None else t_ns
        if self._outage_start_ns is not None:
            self._close_outage(now)
        self.stats.last_data_t_ns = now
        if self.stats.state is not DeviceState.STREAMING:
            self._set_state(DeviceState.STREAMING)

    def _count_malformed(self, n: int = 1, detail: str = "", resyncs: int = 0) -> None:
        """Count input that could not be decoded, and the resyncs it began (see `DeviceStats`);
        kept in stats, the log and the file, never fatal."""
        self.stats.malformed += n
        self.stats.resyncs += resyncs
        if detail:
            log.debug("device %s: malformed input: %s", self.name, detail)
            if len(self.stats.malformed_detail) < self.MALFORMED_DETAIL_KEEP:
                self.stats.malformed_detail.append(detail)
        self._record_quality()

    def _count_duplicates(self, n: int = 1) -> None:
        """Count messages dropped as repeats of the one before them (see `DeviceStats`)."""
        self.stats.duplicates += n
        self._record_quality()

    def _record_quality(self, when: Literal["due", "changed", "always"] = "due") -> None:
        """Record the data-quality counts as a `device.quality` event: `due`, if they changed
        and `QUALITY_EVERY_NS` has passed since the last (counts that change in between are
        recorded once it has: the service loop calls this); `changed`, if they changed;
        `always` (at start and stop)."""
        counts = (self.stats.malformed, self.stats.duplicates, self.stats.resyncs)
        now = self.hub.clock.now_ns()
        if when != "always" and counts == self._quality_sent:
            return
        if when == "due" and now - self._quality_sent_ns < self.QUALITY_EVERY_NS:
            return
        self._quality_sent, self._quality_sent_ns = counts, now
        malformed, duplicates, resyncs = counts
        self._emit_event(
            DataQualityEvent(malformed=malformed, duplicates=duplicates, resyncs=resyncs)
        )

    def _sleep(self, seconds: float) -> bool:
        """Wait, returning early (True) if the device is being stopped."""
        return self._stop.wait(seconds)

    # -- hooks -----------------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> None:
        """Open the transport; raise one of `RECOVERABLE` on failure."""

    @abstractmethod
    def _service(self, timeout_s: float) -> None:
        """Read and decode what arrives within about `timeout_s`."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the transport; never raises."""

    # -- lifecycle -------------------------------------------------------------------------------
    def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is self.stats.state and reason == self.stats.reason:
            return
        self.stats.state, self.stats.reason = state, reason
        log.info("device %s: %s %s", self.name, state.value, reason)
        if state is not DeviceState.IDLE:
            self._emit_event(DeviceStateEvent(state=state.value, reason=reason))

    def _open_outage(self, reason: str) -> None:
        if self._outage_start_ns is None:
            last = self.stats.last_data_t_ns
            self._outage_start_ns = last if last is not None else self.hub.clock.now_ns()
            self._outage_reason = reason

    def _close_outage(
        self, end_ns: int, lost: dict[str, int] | None = None, inferred: bool = False
    ) -> None:
        """Record the gap of each stream. `lost` gives counts the driver knows: exact from a
        device counter, or `inferred` from the arrival pattern; the rest are estimated from the
        outage's length at the nominal rate."""
        start = self._outage_start_ns
        if start is None:
            return
        self._outage_start_ns = None
        lost = lost or {}
        for spec in self.streams():
            count: int | None = lost.get(spec.name)
            if count is None and spec.kind is StreamKind.REGULAR:
                # Samples that would have arrived strictly between the last and the next delivery.
                count = max(0, round((end_ns - start) * spec.nominal_rate_hz / 1e9) - 1)
            self.stats.gaps += 1
            self._emit_event(
                GapEvent(
                    stream=spec.name,
                    start_ns=start,
                    end_ns=end_ns,
                    samples_lost=count,
                    inferred=inferred or spec.name not in lost,
                    reason=self._outage_reason,
                )
            )

    def _supervise(self) -> None:
        backoff = self.config.reconnect_min_s
        first = True
        self._record_quality("always")  # zeros: counting starts here
        self._set_state(DeviceState.CONNECTING)
        while not self._stop.is_set():
            try:
                self._connect()
            except self.RECOVERABLE as exc:
                reason = f"connect failed: {exc}"
                self._open_outage(reason)
                # Same state and reason on every retry: recorded once, not once per attempt.
                self._set_state(DeviceState.RECONNECTING, reason)
                log.info("device %s: %s; retry in %.2f s", self.name, reason, backoff)
                first = False
                if self._sleep(backoff):
                    break
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            if not first:
                self.stats.reconnects += 1
            first = False
            backoff = self.config.reconnect_min_s
            lost = self._run_connected(self.hub.clock.now_ns())
            self._disconnect()
            if lost is None:  # stop requested
                break
            self._record_quality("changed")  # now, not after a backoff that may last seconds
            self._open_outage(lost)
            self._set_state(DeviceState.RECONNECTING, lost)
            if self._sleep(backoff):
                break
        self._disconnect()
        if self._outage_start_ns is not None:
            self._close_outage(self.hub.clock.now_ns())
        self._record_quality("always")  # the final counts
        self._set_state(DeviceState.CLOSED, "stopped")

    def _run_connected(self, connected_ns: int) -> str | None:
        """Service the connection until it fails or stalls; the reason, or None on stop."""
        stall_ns = int(self.config.stall_timeout_s * 1e9)
        while not self._stop.is_set():
            try:
                self._service(0.1)
            except self.RECOVERABLE as exc:
                return f"link lost: {exc}"
            self._record_quality()  # counts held back by the rate limit
            now = self.hub.clock.now_ns()
            last = self.stats.last_data_t_ns
            since = now - max(last if last is not None else connected_ns, connected_ns)
            if self.WATCHDOG and since > stall_ns:
                reason = f"no data for {since / 1e9:.1f} s"
                self._set_state(DeviceState.STALLED, reason)
                return reason
        return None
