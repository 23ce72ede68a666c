"""The link probe's floor from a simulator's sent log and a central's arrivals (typed values)."""

from __future__ import annotations

import pytest

from needlelab.sim.artefacts import sync_verdict
from needlelab.sim.link_probe import LinkFloor, floor_from


def test_floor_is_the_least_arrival_after_each_frames_last_sample() -> None:
    # 2 samples a frame at 1 ms: frame k's last sample is at t0 + (2k + 1) ms.
    t0 = 1_000_000_000
    sent = [
        (0, 0, True, "valid", 0xA0),
        (1, 0, True, "valid", 0xA1),
        (2, 0, True, "valid", 0xA2),
        (-1, 0, True, "malformed", 0xEE),  # garbage: no frame, no sample time
    ]
    arrivals = [
        (t0 + 1_000_000 + 4_000_000, 0xA0),  # 4 ms after its last sample
        (t0 + 3_000_000 + 2_500_000, 0xA1),  # 2.5 ms: the floor
        (t0 + 5_000_000 + 3_000_000, 0xA2),  # 3 ms
        (t0, 0xEE),  # unmatched bytes are ignored
        (t0, 0xBB),
    ]
    floor = floor_from(arrivals, sent, t0, 1e6, 2)
    assert floor is not None
    assert floor.floor_us == 2500.0 and floor.least_us == 2500.0
    assert floor.median_us == 3000.0 and floor.frames == 3


def test_floor_is_a_low_quantile_of_stretch_floors_not_the_rarest_fastest() -> None:
    # One frame a sample at 1 ms; ten 100 ms stretches of arrivals (0.2 s apart) whose least
    # latencies are 1 ms (one lucky frame), then 5 to 9 ms: the typical floor is their 10th
    # percentile, 1 + 0.9 * (5 - 1) = 4.6 ms (linear between the lowest two), the least 1 ms.
    least_ms = [1.0, 5.0, 5.5, 6.0, 6.0, 6.5, 7.0, 7.0, 8.0, 9.0]
    sent, arrivals = [], []
    for stretch, least in enumerate(least_ms):
        for j, lat in enumerate([least + 3.0, least, least + 1.0]):
            k = stretch * 200 + j * 20  # frame k (its sample at k ms)
            sent.append((k, 0, True, "valid", k))
            arrivals.append((round((k + lat) * 1e6), k))
    floor = floor_from(arrivals, sent, 0, 1e6, 1)
    assert floor is not None
    assert floor.floor_us == pytest.approx(4600.0) and floor.least_us == 1000.0
    assert floor.frames == 30


def test_frames_with_the_same_bytes_are_left_out_and_nothing_matched_is_none() -> None:
    sent = [(0, 0, True, "valid", 7), (1, 0, True, "valid", 7), (2, 0, True, "valid", 9)]
    floor = floor_from([(10_000, 7), (12_000, 9)], sent, 0, 1000.0, 1)
    assert floor is not None and floor.frames == 1 and floor.floor_us == 10.0  # 12000 - 2000 ns
    assert floor_from([(1, 5)], sent, 0, 1000.0, 1) is None


def test_sync_verdict_against_the_1_ms_goal() -> None:
    assert sync_verdict({"n": 10.0, "p95": 1.0}) == "PASS"
    assert sync_verdict({"n": 10.0, "p95": 1.001}) == "FAIL"
    assert sync_verdict({"n": 0}) == "FAIL"


def test_a_probe_whose_frames_queued_is_known_by_its_typical_floor() -> None:
    # 7.5 ms connection interval, 0-2 ms jitter: a frame waits at most 9.5 ms for its turn.
    starved = LinkFloor(floor_us=94_000.0, least_us=1_300.0, median_us=120_000.0, frames=600)
    assert starved.queued(7.5, 2.0)
    assert not LinkFloor(3_000.0, 1_300.0, 9_000.0, 600).queued(7.5, 2.0)
    assert not LinkFloor(10_800.0, 1_300.0, 12_000.0, 600).queued(7.5, 2.0)  # 9.5 ms: a turn
