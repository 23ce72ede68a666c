"""SessionClock and Hub: one time base, lossless record queue, lossy ring buffers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.events import MarkerEvent
from needlelab.hub import Hub, RingBuffer, StreamAdded, regular_sample_times
from needlelab.streams import Chunk, StreamKind, StreamSpec

EMG = StreamSpec("emg.raw", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, 1000.0)
STIM = StreamSpec("stim.ch1", "Stim", ("ma",), ("mA",), StreamKind.IRREGULAR)


def test_clock_is_monotonic_and_anchored() -> None:
    clock = SessionClock()
    t0 = clock.now_ns()
    time.sleep(0.01)
    t1 = clock.now_ns()
    assert 0 <= t0 < t1
    assert t1 - t0 >= 9_000_000
    mono = time.monotonic_ns()
    assert clock.from_monotonic_ns(mono) == mono - clock.anchor_monotonic_ns
    assert abs(clock.to_wall_ns(clock.now_ns()) - time.time_ns()) < 50_000_000


def test_stream_spec_rejects_inconsistent_layouts() -> None:
    with pytest.raises(ValueError, match="units"):
        StreamSpec("x", "EMG", ("a", "b"), ("uV",), StreamKind.REGULAR, 100.0)
    with pytest.raises(ValueError, match="nominal_rate_hz"):
        StreamSpec("x", "EMG", ("a",), ("uV",), StreamKind.REGULAR, 0.0)
    with pytest.raises(TypeError):
        StreamSpec("x", "EMG", ("a",), ("uV",), StreamKind.IRREGULAR, dtype="nonsense")


def test_ring_buffer_wraps_and_keeps_newest() -> None:
    ring = RingBuffer(STIM, capacity=5)
    for i in range(12):
        ring.write(np.array([[float(i)]], dtype=np.float32), np.array([i], dtype=np.int64))
    t, v = ring.latest()
    assert ring.total == 12
    assert t.tolist() == [7, 8, 9, 10, 11]
    assert v[:, 0].tolist() == [7, 8, 9, 10, 11]
    t, _ = ring.latest(2)
    assert t.tolist() == [10, 11]
    # A block larger than the buffer keeps only its newest samples.
    ring.write(np.arange(8, dtype=np.float32)[:, None], np.arange(100, 108, dtype=np.int64))
    t, v = ring.latest()
    assert t.tolist() == [103, 104, 105, 106, 107]
    assert ring.total == 20


def test_hub_fans_out_lossless_and_lossy() -> None:
    hub = Hub(SessionClock(), ring_seconds=0.01)  # 11-sample ring for the 1 kHz stream
    hub.add_stream(EMG)
    hub.add_stream(EMG)  # idempotent for the same spec
    values = np.arange(200, dtype=np.float32).reshape(100, 2)
    for block in range(5):
        hub.push(
            Chunk(EMG.name, values, t_host_ns=(block + 1) * 100_000_000, first_index=block * 100)
        )
    items = []
    while not hub.record_queue.empty():
        items.append(hub.record_queue.get())
    assert isinstance(items[0], StreamAdded)
    assert len(items) == 6  # one header, five chunks: nothing dropped
    t, v = hub.ring(EMG.name).latest()
    assert len(t) == 11  # the ring only keeps the newest
    assert t[-1] == 500_000_000
    assert np.array_equal(v[-1], values[-1])


def test_hub_rejects_unknown_streams_and_conflicting_specs() -> None:
    hub = Hub(SessionClock())
    with pytest.raises(KeyError):
        hub.push(Chunk("nope", np.zeros((1, 1), np.float32), 0, 0, np.zeros(1, np.int64)))
    hub.add_stream(STIM)
    with pytest.raises(ValueError, match="twice"):
        hub.add_stream(StreamSpec("stim.ch1", "Stim", ("x",), ("V",), StreamKind.IRREGULAR))


def test_events_get_ids_and_times() -> None:
    hub = Hub(SessionClock())
    seen = []
    hub.subscribe(seen.append)
    first = hub.emit(MarkerEvent(text="one"))
    second = hub.emit(MarkerEvent(text="two", t_ns=5))
    assert (first.id, second.id) == (1, 2)
    assert first.t_ns >= 0 and second.t_ns == 5
    assert [e.id for e in hub.recent_events(after_id=1)] == [2]
    assert seen == [first, second]
    assert first.model_dump_json()  # JSON-serialisable


def test_regular_sample_times_backfill_from_arrival() -> None:
    chunk = Chunk("x", np.zeros((4, 1), np.float32), t_host_ns=1_000_000_000, first_index=0)
    t = regular_sample_times(chunk, 1000.0)
    assert t.tolist() == [997_000_000, 998_000_000, 999_000_000, 1_000_000_000]


def test_live_times_of_a_regular_stream_take_off_its_known_latency() -> None:
    """Regression: the ring's provisional times ignored `latency_ns`, which the file's fit uses."""
    spec = StreamSpec(
        "emg.lat", "EMG", ("a",), ("uV",), StreamKind.REGULAR, 1000.0, latency_ns=2_000_000
    )
    hub = Hub(SessionClock())
    hub.add_stream(spec)
    hub.push(Chunk("emg.lat", np.zeros((2, 1), np.float32), t_host_ns=10_000_000, first_index=0))
    t, _v = hub.ring("emg.lat").latest()
    assert t.tolist() == [7_000_000, 8_000_000]


def four_khz_ring(ring_seconds: float) -> tuple[Hub, RingBuffer]:
    """A hub with one 2-channel 4 kHz stream of 1.5 us known latency, and its ring."""
    spec = StreamSpec(
        "emg.4k", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, 4000.0, latency_ns=1_500
    )
    hub = Hub(SessionClock(), ring_seconds=ring_seconds)
    hub.add_stream(spec)
    return hub, hub.ring("emg.4k")


def check_newest(
    ring: RingBuffer, pushed_i: list[int], pushed_t: list[int], pushed_v: list[np.ndarray]
) -> np.ndarray:
    """The ring holds the newest of what was pushed (indices, times, float32 values, as the
    test computed them), and its total counts every sample; its values are returned."""
    held = min(len(pushed_i), ring.capacity)
    assert ring.total == len(pushed_i)
    got_i, got_t, got_v = ring.latest_indexed()
    assert got_i.tolist() == pushed_i[len(pushed_i) - held :]
    assert got_t.tolist() == pushed_t[len(pushed_t) - held :]
    expected_v = np.array(pushed_v[len(pushed_v) - held :], np.float32).reshape(held, 2)
    assert got_v.dtype == np.float32 and np.array_equal(got_v, expected_v)
    return got_v


def test_a_regular_streams_ring_holds_every_pushed_sample_with_its_index_and_time() -> None:
    """Pushes of every size (none, one, a few, more than the ring holds, wrapping round its end)
    leave in the ring the newest samples, their stream indices and their back-filled times: the
    arrival less the known latency, one nominal period (250 us at 4 kHz) between samples."""
    hub, ring = four_khz_ring(0.01)
    assert ring.capacity == 41
    rng = np.random.default_rng(3)
    pushed_v: list[np.ndarray] = []
    pushed_i: list[int] = []
    pushed_t: list[int] = []
    index = 0
    # totals 1, 6, 36, 41 (a push ending at the ring's end), 58, 83 (one past it), ...
    for k, n in enumerate([0, 1, 5, 30, 5, 0, 17, 25, 41, 60, 3, 39, 2, 100, 40, 1]):
        values = rng.standard_normal((n, 2))  # float64: the ring keeps the stream's float32
        t_host = 1_000_000_000 + k * 20_000_000
        index += 7 if k == 10 else 0  # a loss: the indices jump
        hub.push(Chunk("emg.4k", values, t_host_ns=t_host, first_index=index))
        for j in range(n):
            pushed_v.append(values[j].astype(np.float32))
            pushed_i.append(index + j)
            pushed_t.append(t_host - 1_500 - (n - 1 - j) * 250_000)
        index += n
        check_newest(ring, pushed_i, pushed_t, pushed_v)


def test_a_ring_read_after_many_pushes_holds_their_indices_and_times() -> None:
    """Hundreds of pushes between two reads (more blocks than the ring defers, of mixed sizes and
    of one size, wrapping round its end several times, some with their own per-sample times)
    leave the same newest samples, indices and times as reading after every push: the arrival
    less the known latency, one nominal period (250 us at 4 kHz) between samples, or the times
    the chunk gave."""
    hub, ring = four_khz_ring(1.0)
    assert ring.capacity == 4001
    rng = np.random.default_rng(5)
    pushed_v: list[np.ndarray] = []
    pushed_i: list[int] = []
    pushed_t: list[int] = []
    index = 0
    reads = {3, 40, 300, 301, 1000, 1700, 2100, 2999}  # read after these pushes only
    for k in range(3000):
        n = 5 if 1500 <= k < 1900 else int(rng.integers(0, 8))  # a long run of one size too
        values = rng.standard_normal((n, 2)).astype(np.float32)
        t_host = 1_000_000_000 + k * 2_000_000
        index += 3 if k % 97 == 0 else 0  # a loss now and then: the indices jump
        if k % 400 == 399:  # times of its own: written as given
            times = t_host - np.arange(n, 0, -1, dtype=np.int64) * 100_000
            hub.push(Chunk("emg.4k", values, t_host_ns=t_host, first_index=index, t_ns=times))
            pushed_t += times.tolist()
        else:
            hub.push(Chunk("emg.4k", values, t_host_ns=t_host, first_index=index))
            pushed_t += [t_host - 1_500 - (n - 1 - j) * 250_000 for j in range(n)]
        pushed_v += list(values)
        pushed_i += range(index, index + n)
        index += n
        if k not in reads:
            continue
        got_v = check_newest(ring, pushed_i, pushed_t, pushed_v)
        t, v = ring.latest(5)  # a second read of the same: unchanged
        assert t.tolist() == pushed_t[-5:] and np.array_equal(v, got_v[-5:])
