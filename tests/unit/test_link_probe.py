"""The link probe's floor from a simulator's sent log and a central's arrivals (typed values)."""

from __future__ import annotations

from needlelab.sim.artefacts import sync_verdict
from needlelab.sim.link_probe import floor_from


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
    assert floor.floor_us == 2500.0 and floor.median_us == 3000.0 and floor.frames == 3


def test_frames_with_the_same_bytes_are_left_out_and_nothing_matched_is_none() -> None:
    sent = [(0, 0, True, "valid", 7), (1, 0, True, "valid", 7), (2, 0, True, "valid", 9)]
    floor = floor_from([(10_000, 7), (12_000, 9)], sent, 0, 1000.0, 1)
    assert floor is not None and floor.frames == 1 and floor.floor_us == 10.0  # 12000 - 2000 ns
    assert floor_from([(1, 5)], sent, 0, 1000.0, 1) is None


def test_sync_verdict_against_the_1_ms_goal() -> None:
    assert sync_verdict({"n": 10.0, "p95": 1.0}) == "PASS"
    assert sync_verdict({"n": 10.0, "p95": 1.001}) == "FAIL"
    assert sync_verdict({"n": 0}) == "FAIL"
