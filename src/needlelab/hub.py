"""The hub: fans chunks and events out to the recorder (lossless) and to ring buffers (lossy)."""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from needlelab.clock import SessionClock
from needlelab.events import Event
from needlelab.streams import Chunk, StreamSpec


@dataclass(frozen=True)
class StreamAdded:
    """Record-queue item: a stream was declared (its header goes to the store)."""

    spec: StreamSpec


RecordItem = StreamAdded | Chunk | Event
"""What travels on the lossless record queue."""

CHUNK_OVERHEAD_BYTES = 512  # a Chunk's Python and numpy objects beside its sample bytes (measured)
EVENT_BYTES = 1280  # an event model in memory (measured with tracemalloc: 1.1-1.25 kB)
EVENT_RESERVE_BYTES = 1_000_000  # room kept above the limit for events (the warning, the stop)


@dataclass(frozen=True)
class BacklogLimits:
    """When the writer's backlog warns, and where it stops taking data (`RecordQueue`)."""

    warn_s: float = 2.0  # the oldest item has waited this long: the disk is not keeping up
    # (and it caught up once it stayed under half of both warnings as long, so a disk that
    # stalls on and off is one warning, not one every few seconds)
    warn_bytes: int = 16_000_000
    limit_bytes: int = 64_000_000  # the most held in memory; data beyond it is refused


@dataclass(frozen=True)
class Backlog:
    """What is waiting for the writer: queued, or taken but not yet committed.

    `bytes` estimates the memory held (sample bytes plus each item's objects); `seconds` is how
    long the oldest waiting item has waited, i.e. how far the file is behind (and what a kill
    now would lose on top of the last commit interval). `refused` counts items refused at the
    limit, `state` says where it stands: "ok", "slow" (warned) or "full" (the limit was reached).
    """

    items: int
    bytes: int
    seconds: float
    refused: int
    state: Literal["ok", "slow", "full"]
    peak_bytes: int
    peak_seconds: float


BacklogListener = Callable[[Literal["slow", "cleared", "full"], Backlog], None]
"""Told when the backlog starts to lag ("slow"), catches up again ("cleared") or fills ("full")."""


class RecordQueue:
    """The lossless record queue between the hub and the session writer, bounded and measured.

    Never blocks a producer (a device thread or the BLE loop must not wait for a disk). Data
    chunks beyond `limits.limit_bytes` are refused, and from the first refusal on every later
    chunk too, so the file holds one unbroken stretch; events still fit in a small reserve above
    the limit, stream headers and the end marker always. The listener (the writer) is told of
    each change of state; `dispatch` calls it, outside every lock.

    The single consumer takes items with `get_batch` and calls `release` once it has committed
    them: until then they still count as waiting (they are in memory, not in the file).
    """

    def __init__(self, limits: BacklogLimits | None = None) -> None:
        self.limits = limits or BacklogLimits()
        self.listener: BacklogListener | None = None
        self._queue: deque[tuple[RecordItem | None, int, int]] = deque()  # item, bytes, put at
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the consumer waits here when empty
        self._consumer_waiting = False
        self._bytes = 0  # queued and in flight
        self._queued_bytes = 0
        self._in_flight = 0  # items taken by the consumer, not yet released
        self._in_flight_bytes = 0
        self._in_flight_since: int | None = None  # when the oldest in-flight item was put
        self._refused = 0
        self._state: Literal["ok", "slow", "full"] = "ok"
        self._peak_bytes = 0
        self._peak_ns = 0
        self._low_since: int | None = None  # since when a slow backlog has been low again
        self._notices: list[tuple[Literal["slow", "cleared", "full"], Backlog]] = []

    # -- producers -------------------------------------------------------------------------------
    def put(self, item: RecordItem | None, nbytes: int = 0, data: bool = False) -> bool:
        """Queue an item; False if it was refused (a data chunk at the limit, once full).

        `data` marks sample chunks, the bulk that the limit governs; None (the end marker) and
        stream headers (`nbytes` 0) are always taken.
        """
        now = time.monotonic_ns()
        with self._lock:
            total = self._bytes + nbytes
            if nbytes and (
                total > self.limits.limit_bytes + (0 if data else EVENT_RESERVE_BYTES)
                or (data and self._state == "full")
            ):
                self._refused += 1
                if self._state != "full":
                    self._state = "full"
                    self._notices.append(("full", self._snapshot(now)))
                return False
            self._queue.append((item, nbytes, now))
            self._bytes = total
            self._queued_bytes += nbytes
            if total > self._peak_bytes:
                self._peak_bytes = total
            if self._state == "ok":
                oldest = self._in_flight_since
                age = now - (self._queue[0][2] if oldest is None else oldest)
                if age > self._peak_ns:
                    self._peak_ns = age
                if total >= self.limits.warn_bytes or age >= self.limits.warn_s * 1e9:
                    self._state = "slow"
                    self._notices.append(("slow", self._snapshot(now)))
            if self._consumer_waiting:
                self._arrived.notify()
        return True

    # -- the consumer ----------------------------------------------------------------------------
    def get_batch(self, timeout_s: float, max_items: int) -> list[RecordItem | None]:
        """Take up to `max_items` waiting items, waiting up to `timeout_s` for the first.

        They stay counted in the backlog until `release`. An empty list: nothing came in time.
        """
        with self._lock:
            if not self._queue and timeout_s > 0:
                self._consumer_waiting = True
                self._arrived.wait(timeout_s)
                self._consumer_waiting = False
            queue = self._queue
            if not queue:
                return []
            if self._in_flight_since is None:
                self._in_flight_since = queue[0][2]
            if len(queue) <= max_items:  # all of it (the usual case): one swap, no loop
                self._queue = deque()
                taken_bytes = self._queued_bytes
            else:
                queue = deque(queue.popleft() for _ in range(max_items))
                taken_bytes = sum(e[1] for e in queue)
            self._queued_bytes -= taken_bytes
            self._in_flight += len(queue)
            self._in_flight_bytes += taken_bytes
        return [entry[0] for entry in queue]

    def release(self) -> None:
        """Everything taken with `get_batch` is committed (or given up): no longer waiting."""
        now = time.monotonic_ns()
        with self._lock:
            self._bytes -= self._in_flight_bytes
            self._in_flight = self._in_flight_bytes = 0
            self._in_flight_since = None
            limits = self.limits
            if self._state == "slow":
                age_ns = self._age_ns(now)
                low = self._bytes < limits.warn_bytes / 2 and age_ns < limits.warn_s * 5e8
                if not low:
                    self._low_since = None
                elif self._low_since is None:
                    self._low_since = now
                elif now - self._low_since >= limits.warn_s * 1e9:
                    self._state, self._low_since = "ok", None
                    self._notices.append(("cleared", self._snapshot(now)))
        self.dispatch()

    def get(self, timeout: float | None = None) -> RecordItem | None:
        """Take one item (and release it at once): for tests and simple consumers.

        Raises `TimeoutError` when nothing came within `timeout` seconds.
        """
        with self._lock:
            self._consumer_waiting = True
            arrived = self._arrived.wait_for(lambda: bool(self._queue), timeout)
            self._consumer_waiting = False
            if not arrived:
                raise TimeoutError("nothing in the record queue")
            item, nbytes, _ = self._queue.popleft()
            self._bytes -= nbytes
            self._queued_bytes -= nbytes
            return item

    def empty(self) -> bool:
        """Whether nothing is queued (items taken but not released do not count)."""
        return not self._queue

    def qsize(self) -> int:
        """Items queued (not counting those taken but not yet released)."""
        return len(self._queue)

    # -- measures --------------------------------------------------------------------------------
    def backlog(self) -> Backlog:
        """What is waiting now, and the peaks so far."""
        with self._lock:
            return self._snapshot(time.monotonic_ns())

    def dispatch(self) -> None:
        """Tell the listener of every change of state since the last call (call with no lock
        held: the listener may emit events, which come back here)."""
        if not self._notices:  # the common case, without taking the lock
            return
        with self._lock:
            notices, self._notices = self._notices, []
        listener = self.listener
        for state, backlog in notices:
            if listener is not None:
                listener(state, backlog)

    def _age_ns(self, now: int) -> int:
        oldest = self._in_flight_since
        if oldest is None and self._queue:
            oldest = self._queue[0][2]
        age = 0 if oldest is None else now - oldest
        if age > self._peak_ns:
            self._peak_ns = age
        return age

    def _snapshot(self, now: int) -> Backlog:
        age = self._age_ns(now)
        return Backlog(
            items=len(self._queue) + self._in_flight,
            bytes=self._bytes,
            seconds=age / 1e9,
            refused=self._refused,
            state=self._state,
            peak_bytes=self._peak_bytes,
            peak_seconds=self._peak_ns / 1e9,
        )


def format_bytes(n: float) -> str:
    """`n` bytes for an operator: kB below a megabyte, MB above (decimal units)."""
    return f"{n / 1e3:.0f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"


def chunk_bytes(chunk: Chunk) -> int:
    """The memory a queued chunk holds, as the backlog counts it."""
    extra = chunk.t_ns.nbytes if chunk.t_ns is not None else 0
    return chunk.values.nbytes + extra + CHUNK_OVERHEAD_BYTES


PENDING_BLOCKS = 256
"""Back-filled blocks a ring holds before it writes their times and indices (`write_backfilled`):
with no reader (a recording without monitor or LSL) they are written every this many blocks."""


class RingBuffer:
    """A fixed-size, lossy buffer of the latest samples of one stream, for live readers.

    Writers (device threads) append; readers (the GUI timer, LSL) copy out the newest samples. Old
    samples are overwritten without notice: only the record queue is lossless.
    """

    def __init__(self, spec: StreamSpec, capacity: int) -> None:
        self.spec = spec
        self.capacity = max(1, capacity)
        self._values = np.zeros((self.capacity, spec.channel_count), dtype=spec.dtype)
        self._t_ns = np.zeros(self.capacity, dtype=np.int64)
        self._index = np.zeros(self.capacity, dtype=np.int64)  # each sample's stream index
        self._total = 0  # samples ever written
        self._lock = threading.Lock()
        # Back-filled blocks whose times and indices are not yet in `_t_ns` / `_index`: (n,
        # t_last_ns, offsets, first_index) each, one after the other from slot `_pending_start`
        # to `_pending_end` (never across the ring's end). Written out by the next reader or
        # `write`, or once there are `PENDING_BLOCKS`, a few numpy calls for all of them.
        self._pending: list[tuple[int, int, npt.NDArray[np.int64], int]] = []
        self._pending_start = self._pending_end = 0

    @property
    def total(self) -> int:
        """Number of samples ever written (monotonic; readers use it to see what is new)."""
        return self._total

    def write(
        self,
        values: npt.NDArray[np.generic],
        t_ns: npt.NDArray[np.int64],
        first_index: int | None = None,
    ) -> None:
        """Append samples, overwriting the oldest when full. `first_index` is the stream index
        of the first (default: the count of samples written so far)."""
        n = values.shape[0]
        if n == 0:
            return
        index = _positions(n) + (self._total if first_index is None else first_index)
        if n > self.capacity:  # only the newest fit
            values, t_ns, index, skipped = (
                values[-self.capacity :],
                t_ns[-self.capacity :],
                index[-self.capacity :],
                n - self.capacity,
            )
        else:
            skipped = 0
        with self._lock:
            self._write_pending()  # older than these samples, which may overwrite their slots
            start = (self._total + skipped) % self.capacity
            first = min(values.shape[0], self.capacity - start)
            self._values[start : start + first] = values[:first]
            self._t_ns[start : start + first] = t_ns[:first]
            self._index[start : start + first] = index[:first]
            rest = values.shape[0] - first
            if rest:
                self._values[:rest] = values[first:]
                self._t_ns[:rest] = t_ns[first:]
                self._index[:rest] = index[first:]
            self._total += n

    def write_backfilled(
        self,
        values: npt.NDArray[np.generic],
        t_last_ns: int,
        offsets: npt.NDArray[np.int64],
        first_index: int,
    ) -> None:
        """Append samples timed `t_last_ns` + `offsets` (a regular block's back-filled times,
        `regular_sample_times`): the same as `write` for every reader. A push's commonest case,
        on the device's thread: only the samples are copied now, the times and indices are
        written for many blocks at once when read (`_write_pending`). Block by block they were
        two numpy calls a push, held under the GIL that the session writer waits for between
        its SQLite steps: benchmarks/ingest.py with the pusher's ring write left out entirely
        was level with the plain writer, with it 0.7-0.8x."""
        n = values.shape[0]
        with self._lock:
            start = self._total % self.capacity
            end = start + n
            if n and end <= self.capacity:  # no wrap-around
                if start != self._pending_end or len(self._pending) >= PENDING_BLOCKS:
                    self._write_pending()
                    self._pending_start = start
                self._values[start:end] = values
                self._pending.append((n, t_last_ns, offsets, first_index))
                self._pending_end = end
                self._total += n
                return
        self.write(values, offsets + t_last_ns, first_index)

    def _write_pending(self) -> None:
        """Write the pending blocks' times and indices into their slots (lock held): one numpy
        call each for a run of blocks of one size (the same cached offsets), broadcast over it."""
        pending = self._pending
        if not pending:
            return
        slot, k = self._pending_start, 0
        while k < len(pending):
            n, t_last_ns, offsets, first_index = pending[k]
            j = k + 1
            while j < len(pending) and pending[j][2] is offsets:
                j += 1
            end = slot + (j - k) * n
            t_ns, index = self._t_ns[slot:end], self._index[slot:end]
            if j == k + 1:
                np.add(offsets, t_last_ns, out=t_ns)
                np.add(_positions(n), first_index, out=index)
            else:
                run = pending[k:j]
                t_last = np.array([p[1] for p in run], dtype=np.int64)[:, None]
                first = np.array([p[3] for p in run], dtype=np.int64)[:, None]
                np.add(offsets, t_last, out=t_ns.reshape(j - k, n))
                np.add(_positions(n), first, out=index.reshape(j - k, n))
            slot, k = end, j
        self._pending = []
        self._pending_start = self._pending_end = slot

    def latest(self, n: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """Copy of the newest `n` samples (all buffered when None), oldest first: (t_ns, values)."""
        _, t_ns, values = self.latest_indexed(n)
        return t_ns, values

    def latest_indexed(
        self, n: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """The newest `n` samples with their stream indices: (index, t_ns, values)."""
        with self._lock:
            self._write_pending()
            have = min(self._total, self.capacity)
            n = have if n is None else min(n, have)
            end = self._total % self.capacity
            idx = (np.arange(end - n, end) % self.capacity) if n else np.arange(0)
            return self._index[idx].copy(), self._t_ns[idx].copy(), self._values[idx].copy()


def regular_sample_times(chunk: Chunk, rate_hz: float) -> npt.NDArray[np.int64]:
    """Provisional per-sample times for a regular-stream block: back-filled from its arrival time.

    The last sample is taken to have arrived at `t_host_ns`; earlier ones are spaced at the nominal
    period. The recorded clock model refines this offline; live views only need it to be close.
    """
    return _backfill_offsets(chunk.n, rate_hz) + chunk.t_host_ns


@functools.lru_cache(maxsize=64)
def _backfill_offsets(n: int, rate_hz: float) -> npt.NDArray[np.int64]:
    """Each of `n` samples' time before the last (ns, <= 0): the same few block sizes come
    again and again, and building them was a third of a push."""
    period_ns = 1e9 / rate_hz
    # Floored: an arrival time plus these is what truncating the float sum gave.
    offsets = np.floor((np.arange(n, dtype=np.float64) - (n - 1)) * period_ns).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


@functools.lru_cache(maxsize=64)
def _positions(n: int) -> npt.NDArray[np.int64]:
    """0 .. n-1, read-only (a ring's per-sample index is `first_index` + these)."""
    positions = np.arange(n, dtype=np.int64)
    positions.flags.writeable = False
    return positions


class Hub:
    """Fan-out point between devices and consumers.

    - `record_queue` is lossless and bounded (`RecordQueue`): the session writer drains it. It
      never blocks a device; a disk that falls behind is told to the writer (a warning), and at
      the limit the recording stops as on a full disk instead of memory growing without bound.
      `backlog_status()` measures it (items, bytes, seconds behind).
    - One `RingBuffer` per stream and a bounded deque of recent events serve live readers.
    """

    def __init__(
        self,
        clock: SessionClock,
        ring_seconds: float = 30.0,
        event_history: int = 2000,
        backlog_limits: BacklogLimits | None = None,
    ):
        self.clock = clock
        self.ring_seconds = ring_seconds
        self.record_queue = RecordQueue(backlog_limits)
        self._specs: dict[str, StreamSpec] = {}
        self._rings: dict[str, RingBuffer] = {}
        self._events: deque[Event] = deque(maxlen=event_history)
        self._lock = threading.Lock()
        self._next_event_id = 1
        self._listeners: list[Callable[[Event], None]] = []

    # -- streams ---------------------------------------------------------------------------------
    def add_stream(self, spec: StreamSpec) -> None:
        """Declare a stream; its header is recorded before any of its chunks."""
        with self._lock:
            if spec.name in self._specs:
                if self._specs[spec.name] != spec:
                    raise ValueError(f"stream {spec.name!r} declared twice with different specs")
                return
            rate = spec.nominal_rate_hz if spec.nominal_rate_hz > 0 else 50.0
            # The ring first: readers list `streams` without the lock, then ask for its ring.
            self._rings[spec.name] = RingBuffer(spec, int(rate * self.ring_seconds) + 1)
            self._specs[spec.name] = spec
            self.record_queue.put(StreamAdded(spec))  # headers are always taken

    @property
    def streams(self) -> dict[str, StreamSpec]:
        """Declared streams by name."""
        return dict(self._specs)

    def ring(self, stream: str) -> RingBuffer:
        """The live ring buffer of a stream."""
        return self._rings[stream]

    def push(self, chunk: Chunk) -> None:
        """Hand a chunk to the recorder and the stream's ring buffer."""
        spec = self._specs.get(chunk.stream)
        if spec is None:
            raise KeyError(f"chunk for undeclared stream {chunk.stream!r}")
        # Refused only once the backlog is full: the writer has stopped the recording then.
        self.record_queue.put(chunk, chunk_bytes(chunk), data=True)
        self.record_queue.dispatch()
        ring = self._rings[chunk.stream]
        if chunk.t_ns is not None:
            ring.write(chunk.values, chunk.t_ns, chunk.first_index)
        else:  # `regular_sample_times` less the known latency, written straight into the ring
            offsets = _backfill_offsets(chunk.values.shape[0], spec.nominal_rate_hz)
            t_last_ns = chunk.t_host_ns - spec.latency_ns
            ring.write_backfilled(chunk.values, t_last_ns, offsets, chunk.first_index)

    # -- events ----------------------------------------------------------------------------------
    def emit(self, event: Event) -> Event:
        """Stamp an event with an id (and the time now, if unset), record it and return it."""
        with self._lock:
            update: dict[str, int] = {"id": self._next_event_id}
            self._next_event_id += 1
            if event.t_ns < 0:
                update["t_ns"] = self.clock.now_ns()
            stamped = event.model_copy(update=update)
            self.record_queue.put(stamped, EVENT_BYTES)
            self._events.append(stamped)
            listeners = list(self._listeners)
        self.record_queue.dispatch()
        for listener in listeners:
            listener(stamped)
        return stamped

    def recent_events(self, after_id: int = 0) -> list[Event]:
        """Buffered events with id greater than `after_id`, oldest first."""
        with self._lock:
            return [e for e in self._events if e.id > after_id]

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` on the emitting thread for every event (keep it quick)."""
        with self._lock:
            self._listeners.append(listener)

    def backlog(self) -> int:
        """Number of items waiting for the writer (queued or not yet committed)."""
        return self.record_queue.backlog().items

    def backlog_status(self) -> Backlog:
        """The writer's backlog: items, bytes and seconds waiting, its state and peaks."""
        return self.record_queue.backlog()

    def close(self) -> None:
        """Tell the writer that nothing more will come."""
        self.record_queue.put(None)
