"""StreamClock: one-sided lower-envelope fit recovers sample times under jitter, drift and loss."""

from __future__ import annotations

import numpy as np
import pytest

from needlelab.clock import StreamClock, lower_envelope_line


def simulate(
    rate: float,
    per_block: int,
    seconds: float,
    ppm: float,
    jitter_ms: float,
    loss: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-end indices, in-order host arrivals, and the true-time function's parameters."""
    rng = np.random.default_rng(seed)
    last = np.arange(1, int(seconds * rate / per_block)) * per_block - 1
    period = 1e9 / rate * (1 + ppm * 1e-6)
    true_t = 5e8 + last * period
    arrival = np.maximum.accumulate(true_t + 2e6 + rng.uniform(0, jitter_ms * 1e6, len(last)))
    keep = rng.random(len(last)) >= loss
    return last[keep], arrival[keep], np.array([5e8, period])


@pytest.mark.parametrize(("rate", "per_block"), [(2000.0, 20), (200.0, 2), (1000.0, 10)])
def test_fit_recovers_sample_times_to_sub_millisecond(rate: float, per_block: int) -> None:
    x, t, (t0, period) = simulate(rate, per_block, 30, ppm=100, jitter_ms=30, loss=0.02, seed=1)
    clock = StreamClock(rate, min_latency_ns=2_000_000)
    for xi, ti in zip(x, t, strict=True):
        clock.add(int(xi), int(ti))
    segments = clock.fit()
    assert len(segments) == 1
    every = np.arange(x[-1] + 1)
    err_ms = np.abs(clock.times(every) - (t0 + every * period)) / 1e6
    assert np.percentile(err_ms, 95) < 1.0
    raw_err_ms = np.abs(t - 2e6 - (t0 + x * period)) / 1e6  # arrival times as sample times
    assert np.percentile(err_ms, 95) < 0.25 * np.percentile(raw_err_ms, 95)
    assert clock.summary()["drift_ppm"] == pytest.approx(-100, abs=10)
    assert 0 < clock.summary()["uncertainty_ns"] < 1e6


def test_gap_and_counter_reset_start_new_segments() -> None:
    clock = StreamClock(100.0, gap_ns=200_000_000)
    for i in range(50):
        clock.add(i, i * 10_000_000)
    for i in range(50, 100):  # 1 s silence: a new segment
        clock.add(i, 1_500_000_000 + i * 10_000_000)
    for i in range(20):  # counter restarted
        clock.add(i, 3_000_000_000 + i * 10_000_000)
    segments = clock.fit()
    assert [s.x0 for s in segments] == [0, 50, 0]
    assert segments[1].offset_ns == pytest.approx(1_500_000_000 + 50 * 10_000_000)


def test_lower_envelope_line_lies_under_every_point() -> None:
    rng = np.random.default_rng(3)
    x = np.arange(200)
    y = 3.0 * x + 10 + rng.exponential(5, 200)
    c, m = lower_envelope_line(x, y)
    assert np.all(y - (c + m * x) >= -1e-9)
    assert m == pytest.approx(3.0, abs=0.05)
    assert c == pytest.approx(10, abs=2)


@pytest.mark.parametrize("shape", ["jitter", "collinear runs", "convex", "concave"])
def test_lower_envelope_line_is_the_best_line_under_the_points(shape: str) -> None:
    """Against brute force: of the lines through two points that pass under every point, the
    highest at the mean x. (Its hull search first drops points in numpy passes.)"""
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(3, 40))
        x = np.cumsum(rng.integers(1, 20, n))
        y = {
            "jitter": x * 1000.0 + rng.uniform(0, 5e4, n),
            "collinear runs": x * 1000.0 + rng.choice([0.0, 0.0, 0.0, 1e4], n),
            "convex": (x**2) * 1.0,
            "concave": -(x**2) * 1.0 + rng.uniform(0, 10, n),
        }[shape]
        c, m = lower_envelope_line(x, y)
        xm = x.mean()
        best = -np.inf
        for i in range(n):
            for j in range(i + 1, n):
                slope = (y[j] - y[i]) / (x[j] - x[i])
                line = y[i] + slope * (x - x[i])
                if np.all(y - line >= -1e-6 * np.abs(y).max()):
                    best = max(best, y[i] + slope * (xm - x[i]))
        assert c + m * xm == pytest.approx(best, rel=1e-12, abs=1e-6)
        assert np.all(y - (c + m * x) >= -1e-6 * np.abs(y).max())


def test_a_bounded_clock_keeps_the_latest_points_and_fits_them_like_a_full_one() -> None:
    x, t, _ = simulate(2000.0, 10, 60, ppm=100, jitter_ms=30, loss=0.0, seed=3)
    full = StreamClock(2000.0, min_latency_ns=2_000_000)
    bounded = StreamClock(2000.0, min_latency_ns=2_000_000, keep=1000)
    for xi, ti in zip(x, t, strict=True):
        full.add(int(xi), int(ti))
        bounded.add(int(xi), int(ti))
    assert len(x) > 10_000 and 1000 <= bounded.points < 2000
    # The live fit sees the same latest 500 points either way.
    assert bounded.recent(500) == full.recent(500)
    assert bounded.fit()[0].x0 > 0  # the model of what is kept, from the latest points only
