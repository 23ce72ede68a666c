"""The hub: fans chunks and events out to the recorder (lossless) and to ring buffers (lossy)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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
        self._total = 0  # samples ever written
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Number of samples ever written (monotonic; readers use it to see what is new)."""
        return self._total

    def write(self, values: npt.NDArray[np.generic], t_ns: npt.NDArray[np.int64]) -> None:
        """Append samples, overwriting the oldest when full."""
        n = values.shape[0]
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            values, t_ns, skipped = (
                values[-self.capacity :],
                t_ns[-self.capacity :],
                n - self.capacity,
            )
        else:
            skipped = 0
        with self._lock:
            start = (self._total + skipped) % self.capacity
            first = min(values.shape[0], self.capacity - start)
            self._values[start : start + first] = values[:first]
            self._t_ns[start : start + first] = t_ns[:first]
            rest = values.shape[0] - first
            if rest:
                self._values[:rest] = values[first:]
                self._t_ns[:rest] = t_ns[first:]
            self._total += n

    def latest(self, n: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """Copy of the newest `n` samples (all buffered when None), oldest first: (t_ns, values)."""
        with self._lock:
            have = min(self._total, self.capacity)
            n = have if n is None else min(n, have)
            end = self._total % self.capacity
            idx = (np.arange(end - n, end) % self.capacity) if n else np.arange(0)
            return self._t_ns[idx].copy(), self._values[idx].copy()


def regular_sample_times(chunk: Chunk, rate_hz: float) -> npt.NDArray[np.int64]:
    """Provisional per-sample times for a regular-stream block: back-filled from its arrival time.

    The last sample is taken to have arrived at `t_host_ns`; earlier ones are spaced at the nominal
    period. The recorded clock model refines this offline; live views only need it to be close.
    """
    period_ns = 1e9 / rate_hz
    offsets = (np.arange(chunk.n, dtype=np.float64) - (chunk.n - 1)) * period_ns
    return (chunk.t_host_ns + offsets).astype(np.int64)


class Hub:
    """Fan-out point between devices and consumers.

    - `record_queue` is lossless and unbounded: the session writer drains it. Bounding it would
      mean dropping data or blocking a device thread; instead the writer is made fast enough
      (benchmarks/ingest.py) and its backlog is exposed as `backlog()`.
    - One `RingBuffer` per stream and a bounded deque of recent events serve live readers.
    """

    def __init__(self, clock: SessionClock, ring_seconds: float = 30.0, event_history: int = 2000):
        self.clock = clock
        self.ring_seconds = ring_seconds
        self.record_queue: queue.SimpleQueue[RecordItem | None] = queue.SimpleQueue()
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
            self._specs[spec.name] = spec
            rate = spec.nominal_rate_hz if spec.nominal_rate_hz > 0 else 50.0
            self._rings[spec.name] = RingBuffer(spec, int(rate * self.ring_seconds) + 1)
            self.record_queue.put(StreamAdded(spec))

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
        self.record_queue.put(chunk)
        t_ns = (
            chunk.t_ns
            if chunk.t_ns is not None
            else regular_sample_times(chunk, spec.nominal_rate_hz) - spec.latency_ns
        )
        self._rings[chunk.stream].write(chunk.values, t_ns)

    # -- events ----------------------------------------------------------------------------------
    def emit(self, event: Event) -> Event:
        """Stamp an event with an id (and the time now, if unset), record it and return it."""
        with self._lock:
            update: dict[str, int] = {"id": self._next_event_id}
            self._next_event_id += 1
            if event.t_ns < 0:
                update["t_ns"] = self.clock.now_ns()
            stamped = event.model_copy(update=update)
            self.record_queue.put(stamped)
            self._events.append(stamped)
            listeners = list(self._listeners)
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
        """Approximate number of items waiting for the writer."""
        return self.record_queue.qsize()

    def close(self) -> None:
        """Tell the writer that nothing more will come."""
        self.record_queue.put(None)
