"""Frame numbering: counters, turn-taking characteristics, and losses inferred from arrivals."""

from __future__ import annotations

import numpy as np
import pytest

from needlelab.devices.frame_index import FrameIndexer

MYO_PERIOD_NS = 10e6  # 2 samples at 200 Hz


def arrivals(
    n: int, seed: int, jitter_ms: float = 30.0, interval_ms: float = 7.5, drift_ppm: float = 100
) -> np.ndarray:
    """Arrival times of frames 0..n-1: connection-event bursts, one-sided jitter, in order."""
    rng = np.random.default_rng(seed)
    ready = 1e9 + np.arange(n) * MYO_PERIOD_NS / (1 + drift_ppm * 1e-6)
    ci = interval_ms * 1e6
    event = np.ceil(ready / ci)
    delay = rng.uniform(0, jitter_ms * 1e6, int(event.max()) + 1)[event.astype(np.int64)]
    return np.maximum.accumulate(event * ci + delay).astype(np.int64)


def number_in_batches(indexer: FrameIndexer, raw: np.ndarray | None, t: np.ndarray) -> tuple:
    """Feed the indexer as a driver does, in batches of a few notifications."""
    frames, inferred = [], []
    for start in range(0, len(t), 7):
        part = slice(start, start + 7)
        out = indexer.number(None if raw is None else raw[part], t[part])
        frames.append(out.frame)
        inferred.append(out.inferred_lost)
    return np.concatenate(frames), np.concatenate(inferred)


@pytest.mark.parametrize("seed", range(5))
def test_myo_turns_number_every_frame_exactly_under_random_loss(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 6000  # 60 s of Myo notifications
    kept = np.flatnonzero(rng.random(n) >= 0.05)
    kept = kept[kept > 0] if kept[0] != 0 else kept
    t = arrivals(n, seed)[kept]
    frames, inferred = number_in_batches(FrameIndexer(MYO_PERIOD_NS, 4, turns=True), kept % 4, t)
    assert np.array_equal(frames - frames[0], kept - kept[0])
    assert not inferred.any()  # jitter up to 30 ms is never taken for a loss


@pytest.mark.parametrize("lost", [4, 8, 37, 120, 1000])
def test_a_run_of_losses_longer_than_the_turns_is_inferred_from_arrivals(lost: int) -> None:
    n = 3000
    start = 1500
    kept = np.r_[np.arange(start), np.arange(start + lost, n)]
    t = arrivals(n, 7, jitter_ms=5.0)[kept]
    frames, inferred = number_in_batches(FrameIndexer(MYO_PERIOD_NS, 4, turns=True), kept % 4, t)
    if lost * MYO_PERIOD_NS < 50e6:  # too short to tell from jitter: the turns miss it
        assert frames[start] == start and not inferred.any()
        return
    assert np.array_equal(frames, kept)  # the turn pins the count to a multiple of 4
    assert inferred.tolist().count(0) == len(kept) - 1
    assert inferred[start] == lost - (lost % 4) or inferred[start] == lost


def test_without_a_counter_a_long_loss_is_inferred_to_within_the_jitter() -> None:
    n, start, lost = 3000, 1000, 300  # 3 s lost
    kept = np.r_[np.arange(start), np.arange(start + lost, n)]
    t = arrivals(n, 3, jitter_ms=20.0)[kept]
    frames, inferred = number_in_batches(FrameIndexer(MYO_PERIOD_NS, 1), None, t)
    assert abs(int(frames[start]) - (start + lost)) <= 3  # 20 ms jitter + 7.5 ms events
    assert np.count_nonzero(inferred) == 1
    assert np.array_equal(np.diff(frames[start:]), np.ones(len(kept) - start - 1))


def test_without_a_counter_jitter_alone_is_never_a_loss() -> None:
    t = arrivals(12_000, 11, jitter_ms=30.0, interval_ms=15.0)
    frames, inferred = number_in_batches(FrameIndexer(MYO_PERIOD_NS, 1), None, t)
    assert np.array_equal(frames, np.arange(len(t))) and not inferred.any()


def test_a_sequence_counter_is_unwrapped_and_its_jumps_are_not_inferred() -> None:
    seq = np.r_[np.arange(65500, 65536), np.arange(0, 40), np.arange(45, 80)]  # 5 lost at 40..44
    t = (1e9 + np.arange(len(seq)) * 5e6).astype(np.int64)
    t[76:] += 25_000_000  # they came late by as much as they were missing
    indexer = FrameIndexer(5e6, 1 << 16)
    frames, inferred = number_in_batches(indexer, seq, t)
    assert frames.tolist() == list(range(76)) + list(range(81, 116))
    assert not inferred.any()
