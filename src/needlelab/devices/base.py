"""The device base class: lifecycle, watchdog, reconnect with backoff and gap events.

Drivers fill in three private hooks (`_connect`, `_service`, `_disconnect`) and decode their own
bytes; everything about staying alive lives here, once (the python-can `recv`/`_recv_internal`
pattern).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
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
    FAILED = "failed"  # its driver raised an exception it does not expect; it reconnects
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

    `failures` counts the driver's unexpected exceptions (each one a `failed` state).
    """

    state: DeviceState = DeviceState.IDLE
    reason: str = ""
    samples: int = 0
    malformed: int = 0
    duplicates: int = 0
    resyncs: int = 0
    reconnects: int = 0
    gaps: int = 0
    failures: int = 0
    last_data_t_ns: int | None = None
    battery_pct: float | None = None
    malformed_detail: list[str] = field(default_factory=list)


class Device(ABC):
    """A data source with needlelab's shared lifecycle.

    `start()` runs a supervisor thread: connect → service in a loop → on failure or stall,
    disconnect, wait, reconnect. Malformed input is counted (`stats.malformed`), never fatal;
    with the duplicates and resyncs it is recorded as `device.quality` events (see `DeviceStats`).

    - **Watchdog**: a stall is no data for `config.stall_timeout_s`; it is marked by then (the
      loop wakes for the deadline, `watchdog_margin_ns` early so that its own wake-up and the
      link's latency do not make the mark late).
    - **Failures**: an exception from a hook that is not one of `RECOVERABLE` (a driver bug, bad
      data the decoder did not expect) is a `failed` state with the exception's type and message
      as its reason, logged with its traceback once; the device then reconnects like after a
      link loss. A stop request makes any exception from a hook the end, quietly.
    - **Reconnect**: attempts start at most every `reconnect_min_s` doubling to
      `reconnect_max_s`, counted from the start of the previous attempt (a 10 s BLE scan that
      found nothing is retried at once). On a local link (`_local_link`: a device path, a pty,
      a loopback socket, a simulated controller) a failed attempt costs nothing, so they come at
      least every `RETRY_LOCAL_S`; and a driver with a cheap `_probe` (is the port there?) is
      tried the moment the probe sees the device come back.
    - **Gaps**: an outage opens when a device that has delivered data stops (a device that
      never streamed has only its `device.state` history) and closes at the first data after
      it; for a device without a watchdog (it speaks when something happens), from the moment
      its link was lost until it is connected again. Each is one `gap` event per stream: its
      start and end are the time without data, its
      `samples_lost` what the driver knows: counted by a device counter (a chunk with a
      `device_counter` whose index jumps), inferred by the driver and flagged (`_close_outage`
      with `inferred=True`), or None: unknown. The base class never guesses a count from the
      outage's length.

    Hooks for drivers (called on the supervisor thread only):
    - `_connect()`: open the transport and do any handshake; raise on failure.
    - `_service(timeout_s)`: read what arrives within about `timeout_s`, decode it and call
      `_emit_chunk` / `_emit_event` / `_count_malformed` / `_count_duplicates`. It must return
      within about that time, so the watchdog and stop requests are seen.
    - `_disconnect()`: close the transport; must not raise (it is called after a failed
      `_connect` too, so a half-made connection does not leak).
    - `_local_link()` and `_probe()`: see Reconnect above (default: not local, no probe).
    """

    RECOVERABLE: tuple[type[BaseException], ...] = (DeviceError, OSError)
    """Exceptions from hooks that mean 'reconnect'; drivers add their transport's error types."""

    MALFORMED_DETAIL_KEEP = 20

    QUALITY_EVERY_NS = 1_000_000_000
    """Changed data-quality counts are recorded at most this often (and at start and stop)."""

    WATCHDOG = True
    """Whether silence means a stall; off for sources that only speak on change (manual entry)."""

    WATCHDOG_MARGIN = 0.05
    WATCHDOG_MARGIN_MAX_NS = 100_000_000
    """The watchdog marks a stall 5 % (at most 100 ms) before `stall_timeout_s` of silence has
    passed, so that the mark is never later than that: a driver's read can overrun the slice
    it was given (the serial driver's reads time out after 50 ms), the thread can wake late on
    a busy machine, and the last data's arrival trails its sending by the link's latency."""

    SERVICE_SLICE_S = 0.1
    """The longest `_service` call: stop requests and the watchdog are looked at between calls."""

    RETRY_LOCAL_S = 0.25
    """On a local link, reconnect attempts come at least this often, whatever the backoff."""

    PROBE_EVERY_S = 0.05
    """How often a driver's `_probe` is asked, while waiting to reconnect, if the device is back."""

    FAILURE_RESET_S = 10.0
    """A connection that runs this long without failing resets the failures' backoff."""

    COUNT_SLACK_S = 1.0
    """A count of samples lost may exceed what the outage's length allows at the nominal rate
    (+1 %) by this much time's worth (latency that differs before and after it); beyond, the
    device's counter restarted (it was reset or power-cycled) and the count is unknown."""

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
        self._failures_in_row = 0  # failed connections since one ran without failing
        self._connected_once = False
        self._failure_logged = ""  # the last failure logged with its traceback

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

    @property
    def watchdog_margin_ns(self) -> int:
        """How much before `stall_timeout_s` of silence the watchdog marks a stall."""
        timeout_ns = self.config.stall_timeout_s * 1e9
        return int(min(self.WATCHDOG_MARGIN * timeout_ns, self.WATCHDOG_MARGIN_MAX_NS))

    # -- helpers for drivers ---------------------------------------------------------------------
    def _emit_event(self, event: Event) -> Event:
        """Record an event from this device (source defaults to the device name)."""
        if not event.source:
            event = event.model_copy(update={"source": self.name})
        return self.hub.emit(event)

    def _emit_chunk(self, chunk: Chunk) -> None:
        """Record a chunk; marks the device alive and closes any open outage with gap events.

        A chunk numbered by a device counter (`device_counter` set) that ends an outage says
        how many samples the outage cost its stream: the jump of its index."""
        if self._outage_start_ns is not None and chunk.device_counter is not None:
            # A counter that went back restarted: _close_outage says the loss is unknown.
            jump = chunk.first_index - self._stream_index.get(chunk.stream, 0)
            self._close_outage(chunk.t_host_ns, {chunk.stream: jump})
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
        device counter) passes it with `device_counter=`, and a jump records a known loss.
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
        """Note that valid data arrived now (feeds the watchdog; ends an outage, its losses
        unknown unless the driver closed it first with what it knows)."""
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

    def _local_link(self) -> bool:
        """Whether the device is reached over a link on this machine, where a failed connect
        attempt is cheap (a device path, a pty, a loopback socket, a simulated controller)
        rather than over a radio or a network: reconnect attempts then come every
        `RETRY_LOCAL_S` at least."""
        return False

    def _probe(self) -> bool | None:
        """A cheap look at whether the device is there (e.g. its port's path exists), or None
        if the driver has none; asked every `PROBE_EVERY_S` while waiting to reconnect."""
        return None

    # -- lifecycle -------------------------------------------------------------------------------
    def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is self.stats.state and reason == self.stats.reason:
            return
        self.stats.state, self.stats.reason = state, reason
        log.info("device %s: %s %s", self.name, state.value, reason)
        if state is not DeviceState.IDLE:
            self._emit_event(DeviceStateEvent(state=state.value, reason=reason))

    def _open_outage(self, reason: str) -> None:
        """The link is lost, stalled or failed: an outage opens. A device with a watchdog
        streams continuously, so its outage starts at its last data (and there is none if it
        never delivered any); a device without one speaks when something happens (a caliper's
        press), so its outage starts now, if it ever was connected, and ends when it is again.
        """
        if self._outage_start_ns is not None:
            return
        if self.WATCHDOG:
            start = self.stats.last_data_t_ns
        else:
            start = self.hub.clock.now_ns() if self._connected_once else None
        if start is not None:
            self._outage_start_ns = start
            self._outage_reason = reason

    def _close_outage(
        self,
        end_ns: int,
        lost: Mapping[str, int] | None = None,
        inferred: bool = False,
        confidence: float | None = None,
    ) -> None:
        """Record the outage's gap on each stream. `lost` gives the samples lost the driver
        knows, counted from a device counter, or `inferred` from the arrival pattern (with a
        `confidence`, 0..1, if it has one); every other stream's loss is unknown (None)."""
        start = self._outage_start_ns
        if start is None:
            return
        self._outage_start_ns = None
        end_ns = max(end_ns, start)
        lost = lost or {}
        for spec in self.streams():
            count = lost.get(spec.name)
            reason = self._outage_reason
            if count is not None and not self._possible(spec, count, end_ns - start):
                log.warning(
                    "device %s: %s's counter jumped %d samples over a %.2f s outage; the "
                    "device restarted, what it lost is unknown",
                    self.name, spec.name, count, (end_ns - start) / 1e9,
                )  # fmt: skip
                reason += f"; the device's counter restarted (a jump of {count}): loss unknown"
                count = None
            self.stats.gaps += 1
            self._emit_event(
                GapEvent(
                    stream=spec.name,
                    start_ns=start,
                    end_ns=end_ns,
                    samples_lost=count,
                    inferred=inferred and count is not None,
                    confidence=confidence if inferred and count is not None else None,
                    reason=reason,
                )
            )

    def _possible(self, spec: StreamSpec, count: int, outage_ns: int) -> bool:
        """Whether a device can have made `count` samples of `spec` during an outage this long
        (never fewer than none; a regular stream at most its nominal rate allows)."""
        if count < 0:
            return False
        if spec.kind is not StreamKind.REGULAR or spec.nominal_rate_hz <= 0:
            return True
        most = (outage_ns / 1e9 * 1.01 + self.COUNT_SLACK_S) * spec.nominal_rate_hz
        return count <= most

    def _fail(self, exc: BaseException, during: str) -> str:
        """Enter `failed` for an exception the driver did not expect; its reason."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.stats.failures += 1
        if reason != self._failure_logged:  # the traceback once, not on every retry
            self._failure_logged = reason
            log.error(
                "device %s failed (%s, during %s); it reconnects",
                self.name,
                reason,
                during,
                exc_info=exc,
            )
        else:
            log.debug("device %s failed again (%s, during %s)", self.name, reason, during)
        self._set_state(DeviceState.FAILED, reason)
        return reason

    def _disconnect_quietly(self) -> None:
        try:
            self._disconnect()
        except Exception as exc:  # the hook must not raise; one that does must not end us
            log.warning("device %s: disconnect raised %s: %s", self.name, type(exc).__name__, exc)

    def _probe_quietly(self) -> bool | None:
        try:
            return self._probe()
        except Exception as exc:
            log.debug("device %s: probe raised %r", self.name, exc)
            return None

    def _retry_delay(self, backoff_s: float) -> float:
        if self._local_link():
            return min(backoff_s, self.RETRY_LOCAL_S)
        return backoff_s

    def _wait_to_retry(self, delay_s: float, since: float) -> bool:
        """Wait until `delay_s` after `since` (time.monotonic), or until the probe sees the
        device come back (absent, then present: a device that is there but will not connect
        waits the whole delay); True if the device is being stopped."""
        deadline = since + delay_s
        was_there = self._probe_quietly()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._stop.is_set()
            step = remaining if was_there is None else min(remaining, self.PROBE_EVERY_S)
            if self._sleep(step):
                return True
            if was_there is not None:
                there = self._probe_quietly()
                if there and not was_there:
                    log.debug("device %s: it is back; connecting", self.name)
                    return False
                was_there = there

    def _supervise(self) -> None:
        try:
            self._lifecycle()
        except BaseException as exc:  # SystemExit, KeyboardInterrupt in this thread: said, then on
            self._fail(exc, "the device thread")
            raise

    def _lifecycle(self) -> None:
        backoff = self.config.reconnect_min_s
        self._record_quality("always")  # zeros: counting starts here
        self._set_state(DeviceState.CONNECTING)
        while not self._stop.is_set():
            attempt = time.monotonic()
            try:
                self._connect()
            except Exception as exc:
                self._disconnect_quietly()
                if self._stop.is_set():  # the connect noticed the stop (a scan cancelled)
                    log.debug("device %s: connect ended by the stop: %r", self.name, exc)
                    break
                if isinstance(exc, self.RECOVERABLE):
                    reason = f"connect failed: {exc}"
                    # Same state and reason on every retry: recorded once, not once per attempt.
                    self._set_state(DeviceState.RECONNECTING, reason)
                    delay = self._retry_delay(backoff)
                    backoff = min(backoff * 2, self.config.reconnect_max_s)
                else:
                    reason = f"failed: {self._fail(exc, 'connect')}"
                    delay = self._failure_delay()
                self._open_outage(reason)
                log.debug("device %s: %s; retry in %.2f s", self.name, reason, delay)
                if self._wait_to_retry(delay, attempt):
                    break
                continue
            if self._connected_once:
                self.stats.reconnects += 1
            self._connected_once = True
            if not self.WATCHDOG and self._outage_start_ns is not None:
                self._close_outage(self.hub.clock.now_ns())  # its link is back: it can speak
            backoff = self.config.reconnect_min_s
            connected = time.monotonic()
            ended = self._run_connected(self.hub.clock.now_ns())
            self._disconnect_quietly()
            if ended is None:  # stop requested
                break
            reason, failed = ended
            if not failed and time.monotonic() - connected >= self.FAILURE_RESET_S:
                self._failures_in_row = 0
            self._record_quality("changed")  # now, not after a backoff that may last seconds
            self._open_outage(reason)
            if failed:
                delay = self._failure_delay()
            else:
                self._set_state(DeviceState.RECONNECTING, reason)
                delay = self._retry_delay(backoff)
            if self._wait_to_retry(delay, time.monotonic()):
                break
        self._disconnect_quietly()
        if self._outage_start_ns is not None:
            self._close_outage(self.hub.clock.now_ns())
        self._record_quality("always")  # the final counts
        self._set_state(DeviceState.CLOSED, "stopped")

    def _failure_delay(self) -> float:
        """After a failure: `reconnect_min_s`, doubling for each failure in a row."""
        self._failures_in_row += 1
        delay = self.config.reconnect_min_s * 2.0 ** min(self._failures_in_row - 1, 16)
        return min(delay, self.config.reconnect_max_s)

    def _run_connected(self, connected_ns: int) -> tuple[str, bool] | None:
        """Service the connection until it fails or stalls: (the reason, whether it was a
        failure), or None on stop."""
        stall_ns = int(self.config.stall_timeout_s * 1e9) - self.watchdog_margin_ns
        started = time.monotonic()
        while not self._stop.is_set():
            timeout = self.SERVICE_SLICE_S
            if self.WATCHDOG:  # wake for the deadline, not a slice after it
                left_ns = self._silent_since(connected_ns) + stall_ns - self.hub.clock.now_ns()
                timeout = min(timeout, max(left_ns, 0) / 1e9)
            try:
                self._service(timeout)
                self._record_quality()  # counts held back by the rate limit
            except Exception as exc:
                if self._stop.is_set():
                    log.debug("device %s: service ended by the stop: %r", self.name, exc)
                    return None
                if isinstance(exc, self.RECOVERABLE):
                    return f"link lost: {exc}", False
                return f"failed: {self._fail(exc, 'service')}", True
            if self._failures_in_row and time.monotonic() - started >= self.FAILURE_RESET_S:
                self._failures_in_row = 0
            since = self.hub.clock.now_ns() - self._silent_since(connected_ns)
            if self.WATCHDOG and since >= stall_ns:
                reason = f"no data for {since / 1e9:.2f} s"
                self._set_state(DeviceState.STALLED, reason)
                return reason, False
        return None

    def _silent_since(self, connected_ns: int) -> int:
        """When the silence the watchdog measures began: the last data, or the connection."""
        last = self.stats.last_data_t_ns
        return connected_ns if last is None else max(last, connected_ns)
