"""The session clock: one monotonic time base that every sample and event is stamped on."""

from __future__ import annotations

import itertools
import threading
import time
from array import array
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SessionClock:
    """`time.monotonic_ns()` anchored once to wall-clock time at session start.

    Session time `t_ns` is nanoseconds since the anchor. CLOCK_MONOTONIC is system-wide on Linux and
    macOS, so another process on the same machine (a simulator, a test) can convert its own
    monotonic readings onto this clock with :meth:`from_monotonic_ns`.
    """

    anchor_monotonic_ns: int = field(default_factory=time.monotonic_ns)
    anchor_wall_ns: int = field(default_factory=time.time_ns)

    def now_ns(self) -> int:
        """Session time now, in ns since the anchor."""
        return time.monotonic_ns() - self.anchor_monotonic_ns

    def from_monotonic_ns(self, monotonic_ns: int) -> int:
        """Session time of a `time.monotonic_ns()` reading."""
        return monotonic_ns - self.anchor_monotonic_ns

    def to_wall_ns(self, t_ns: int) -> int:
        """Wall-clock time (ns since the Unix epoch) of a session time."""
        return self.anchor_wall_ns + t_ns


@dataclass(frozen=True)
class ClockSegment:
    """One fitted stretch of a stream: `t_ns = offset_ns + period_ns * (x - x0)`.

    `x` is the sample index (or the device clock in µs for streams that have one). `drift_ppm` is
    the device's rate error against the host clock; `jitter_ns` the median arrival latency above the
    fitted floor; `uncertainty_ns` how far the fitted times may be from the true ones (half the
    disagreement between independent fits of the segment's two halves, plus the floor's own
    granularity).
    """

    x0: int
    x_end: int
    offset_ns: float
    period_ns: float
    drift_ppm: float
    jitter_ns: float
    uncertainty_ns: float
    points: int

    def times(self, x: np.ndarray) -> np.ndarray:
        """Fitted session times (ns, int64) of indices `x` of this segment."""
        return (self.offset_ns + self.period_ns * (x.astype(np.float64) - self.x0)).astype(np.int64)


def lower_envelope_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The line under every point (x, y) that minimises the summed distance to them.

    Host arrival latency is one-sided (never early), so the true clock line runs along the floor
    of the arrival cloud, not through its middle as a least-squares fit would. The optimum touches
    the lower convex hull at the mean x: it is the hull edge spanning mean(x). Returns
    (intercept at x=0, slope). `x` must be increasing.
    """
    n = len(x)
    if n == 1:
        return float(y[0]), 0.0
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    xm = xf.mean()
    keep = _hull_candidates(xf, yf)
    xf, yf = xf[keep], yf[keep]
    hull: list[int] = []
    for i in range(len(xf)):  # Andrew's monotone chain, lower half
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (xf[b] - xf[a]) * (yf[i] - yf[a]) - (yf[b] - yf[a]) * (xf[i] - xf[a])
            if cross > 0:
                break
            hull.pop()
        hull.append(i)
    for a, b in itertools.pairwise(hull):
        if xf[a] <= xm <= xf[b]:
            slope = (yf[b] - yf[a]) / (xf[b] - xf[a])
            return yf[a] - slope * xf[a], slope
    a, b = hull[0], hull[-1]  # unreachable for increasing x; keep a sane answer
    slope = (yf[b] - yf[a]) / (xf[b] - xf[a])
    return yf[a] - slope * xf[a], slope


def _hull_candidates(xf: np.ndarray, yf: np.ndarray) -> np.ndarray:
    """Indices of the points that may be lower-hull vertices (x increasing).

    A point on or above the segment joining two others, one each side of it, is never a vertex,
    whatever the rest: each pass drops every point so placed between its current neighbours, in
    numpy. Half of a jittered arrival cloud goes per pass, so a few passes leave the monotone
    chain (a Python loop) a few thousand points instead of 1.4 M after a 2 h session.
    """
    idx = np.arange(len(xf))
    while len(idx) > 2:
        a, b, c = idx[:-2], idx[1:-1], idx[2:]
        cross = (xf[b] - xf[a]) * (yf[c] - yf[a]) - (yf[b] - yf[a]) * (xf[c] - xf[a])
        keep = np.ones(len(idx), dtype=bool)
        keep[1:-1] = cross > 0  # the chain's own test: b strictly below a-c stays
        removed = len(idx) - int(keep.sum())
        idx = idx[keep]
        if removed * 100 <= len(idx):  # the rest is cheaper in the chain than in more passes
            break
    return idx


def fit_segment(x: np.ndarray, t_host_ns: np.ndarray, nominal_period_ns: float) -> ClockSegment:
    """Fit one gap-free stretch of (index or device time, host arrival) pairs."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(t_host_ns, dtype=np.float64)
    x0 = int(x[0])
    xr = x - x0
    if len(x) < 3 or xr[-1] == 0:
        intercept, slope = float(y.min()), nominal_period_ns
    else:
        intercept, slope = lower_envelope_line(xr, y)
    residual = y - (intercept + slope * xr)
    uncertainty = 0.0
    if len(x) >= 8:
        half = len(x) // 2
        mid = float(xr[half])
        fits = [lower_envelope_line(xr[s], y[s]) for s in (slice(0, half), slice(half, None))]
        at_mid = [c + m * mid for c, m in fits]
        uncertainty = abs(at_mid[0] - at_mid[1]) / 2
    return ClockSegment(
        x0=x0,
        x_end=int(x[-1]),
        offset_ns=intercept,
        period_ns=slope,
        drift_ppm=(nominal_period_ns / slope - 1.0) * 1e6 if slope > 0 else 0.0,
        jitter_ns=float(np.median(residual)),
        uncertainty_ns=uncertainty,
        points=len(x),
    )


@dataclass
class StreamClock:
    """Per-stream clock model: host arrivals → sample times, segmented at gaps.

    Feed it one point per received block: the index (or device time) of the block's last sample
    and the block's host arrival time. `fit()` splits the points where arrivals pause for longer
    than `gap_ns` or the index goes backwards (a device reset), fits each stretch along its lower
    envelope, and `times()` maps any sample index to session time. The model is stored in the
    recording as JSON (`to_json`) so sample times can be recomputed from the raw arrivals.
    """

    nominal_rate_hz: float
    gap_ns: int = 500_000_000
    min_latency_ns: int = 0  # the profile's known floor of host latency, removed from the offset
    # At most this many of the latest points are kept (None: all). A live clock needs only the
    # latest; a 2 h BLE recording has 1.4 M points, which the file holds anyway.
    keep: int | None = None
    # Packed int64 arrays, not lists: 8 bytes a value here, about 36 as Python ints.
    _x: array[int] = field(default_factory=lambda: array("q"))
    _t: array[int] = field(default_factory=lambda: array("q"))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    segments: list[ClockSegment] = field(default_factory=list)

    def add(self, x_last: int, t_host_ns: int) -> None:
        """Add one block: its last sample's index (or device time) and its host arrival time."""
        with self._lock:
            self._x.append(x_last)
            self._t.append(t_host_ns)
            if self.keep is not None and len(self._x) >= 2 * self.keep:
                # Drop the older half at once: a deletion at an array's front copies the rest.
                del self._x[: -self.keep]
                del self._t[: -self.keep]

    @property
    def points(self) -> int:
        """How many arrivals it holds."""
        return len(self._x)

    def recent(self, n_points: int = 2000) -> ClockSegment | None:
        """A quick fit of the latest stretch (at most `n_points`, none before the last gap), for
        live displays. Safe to call from another thread than the one adding points."""
        with self._lock:
            x = np.frombuffer(self._x[-n_points:], dtype=np.int64)
            t = np.frombuffer(self._t[-n_points:], dtype=np.int64)
        if len(x) < 8:
            return None
        breaks = np.flatnonzero((np.diff(t) > self.gap_ns) | (np.diff(x) <= 0)) + 1
        start = int(breaks[-1]) if len(breaks) else 0
        if len(x) - start < 8:
            return None
        return fit_segment(x[start:], t[start:] - self.min_latency_ns, 1e9 / self.nominal_rate_hz)

    def fit(self) -> list[ClockSegment]:
        """Fit every segment from the points so far."""
        if not self._x:
            self.segments = []
            return self.segments
        x = np.frombuffer(self._x, dtype=np.int64).copy()
        t = np.frombuffer(self._t, dtype=np.int64).copy()
        # Points stay in arrival order: a link delivers in order, and a backwards index means the
        # device restarted its counter, which starts a new segment.
        breaks = np.flatnonzero((np.diff(t) > self.gap_ns) | (np.diff(x) <= 0)) + 1
        period = 1e9 / self.nominal_rate_hz
        self.segments = []
        for xs, ts in zip(np.split(x, breaks), np.split(t, breaks), strict=True):
            seg = fit_segment(xs, ts - self.min_latency_ns, period)
            self.segments.append(seg)
        return self.segments

    def times(self, x: np.ndarray) -> np.ndarray:
        """Session times of sample indices `x` (each from the segment it falls in or nearest)."""
        if not self.segments:
            self.fit()
        x = np.asarray(x, dtype=np.int64)
        out = np.empty(len(x), dtype=np.int64)
        starts = np.array([s.x0 for s in self.segments])
        which = np.clip(np.searchsorted(starts, x, side="right") - 1, 0, len(starts) - 1)
        for k, seg in enumerate(self.segments):
            mask = which == k
            out[mask] = seg.times(x[mask])
        return out

    def summary(self) -> dict[str, float]:
        """Offset, drift, jitter and uncertainty figures over all segments (point-weighted)."""
        if not self.segments:
            return {}
        w = np.array([s.points for s in self.segments], dtype=np.float64)
        pick = {
            "drift_ppm": [s.drift_ppm for s in self.segments],
            "jitter_ns": [s.jitter_ns for s in self.segments],
            "uncertainty_ns": [s.uncertainty_ns for s in self.segments],
        }
        out = {k: float(np.average(v, weights=w)) for k, v in pick.items()}
        out["segments"] = float(len(self.segments))
        out["offset_ns"] = float(self.segments[0].offset_ns)
        return out
