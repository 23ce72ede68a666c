"""The session clock: one monotonic time base that every sample and event is stamped on."""

from __future__ import annotations

import dataclasses
import itertools
import math
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
    fitted floor; `uncertainty_ns` how far the fitted times may be from the true ones: how far
    independent fits of the segment's two halves disagree at its middle and ends
    (`_half_split`), or half the median floor of its stretches above the line, whichever is
    more. A constant offset shared by the whole stream (a latency floor calibrated wrong; a
    connection-event lattice that never lets a frame through at no wait) is not in it: no fit
    of arrivals can see one.
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


FIT_METHOD = "slope-of-all-offset-on-floor"
"""What the file calls `StreamClock`'s fit in a stream's clock model (`method`): a line of
arrival time against sample index, its slope fitted to every arrival, its offset put on their
floor (files written before this name said "lower-envelope", the fit they then had)."""

MAX_DRIFT_PPM = 500.0
"""The largest rate error a fit may give a device. Crystals are specified within 10-100 ppm and
age or warm by a few tens more; 500 ppm leaves room for a poor one, and none for the thousands of
ppm a misnumbered stretch of samples can tilt a free fit to."""

STRETCH_NS = 500_000_000
"""A segment's floor is followed in stretches of this much arrival time."""

STEP_MIN_NS = 4_000_000
"""The least step in a segment's floor that re-splits it; also at least `STEP_BLOCKS` blocks'
time, and the expected jitter (see `STEP_NOISE`), whichever is most."""

STEP_BLOCKS = 1.5
"""A misnumbered stretch is off by whole blocks (a turn of the Myo's characteristics is four).
The floor of blocks that wait for connection events is a sawtooth whose teeth end in steps of
up to one block (the lattice of the block period and the connection interval): a step of up to
a block may be that, and only one of more is taken for a misnumbering."""

RUNAWAY_NS = 50_000_000
"""How far beyond the drift-bounded line the arrivals' floor must run before the numbering is
taken for wrong throughout: more than jitter, a host's hiccup or a crystal can explain."""

STEP_NOISE = 6.0
"""The expected jitter of stretch floors is the median change between neighbours; a step must be
this many times that."""

STEP_SIDE = 3
"""A step is judged on the lowest floor of this many stretches on each side of it."""


def _slope_bounds(nominal_period_ns: float, max_drift_ppm: float) -> tuple[float, float]:
    m = max_drift_ppm * 1e-6
    return nominal_period_ns / (1 + m), nominal_period_ns / (1 - m) if m < 1 else math.inf


def _bounded_line(
    x: np.ndarray, y: np.ndarray, nominal_period_ns: float, max_drift_ppm: float
) -> tuple[float, float, bool]:
    """The lower-envelope line (intercept at x=0, slope), its slope held to `max_drift_ppm` of
    the nominal period: a slope out of bounds is set to the bound, and the line lowered onto the
    points. Also whether the bound was hit."""
    if len(x) < 3 or x[-1] == x[0]:
        return float(np.min(y - nominal_period_ns * x)), nominal_period_ns, False
    intercept, slope = lower_envelope_line(x, y)
    lo, hi = _slope_bounds(nominal_period_ns, max_drift_ppm)
    if lo <= slope <= hi:
        return intercept, slope, False
    slope = min(max(slope, lo), hi)
    return float(np.min(y - slope * x)), slope, True


def _half_split(
    x: np.ndarray, y: np.ndarray, residual: np.ndarray, period: float, max_drift_ppm: float
) -> float:
    """How far the fit may be off, seen two ways. Independent fits of the two halves: each is
    pinned within its half and off by its slope's error times the distance from there, so
    their disagreement counts whole at the middle and half at the ends. And the floor of each
    quarter above the whole line: the line runs under every arrival, so where the true floor
    is tilted away from it (a slope error) a quarter's lowest arrival stands above it by that
    much (`residual`: the arrivals above the whole line). The larger of the two.
    """
    if len(x) < 8:
        return 0.0
    half = len(x) // 2
    lines = [
        _bounded_line(x[part], y[part], period, max_drift_ppm)
        for part in (slice(0, half), slice(half, None))
    ]
    (c1, m1, _), (c2, m2, _) = lines
    mid, first, last = float(x[half]), float(x[0]), float(x[-1])
    ends = max(abs((c1 - c2) + (m1 - m2) * at) for at in (first, last)) / 2
    quarters = max(float(part.min()) for part in np.array_split(residual, 4))
    return max(abs((c1 - c2) + (m1 - m2) * mid), ends, quarters)


def fit_segment(
    x: np.ndarray,
    t_host_ns: np.ndarray,
    nominal_period_ns: float,
    max_drift_ppm: float = MAX_DRIFT_PPM,
) -> ClockSegment:
    """Fit one gap-free stretch of (index or device time, host arrival) pairs with one line."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(t_host_ns, dtype=np.float64)
    x0 = int(x[0])
    xr = (x - x0).astype(np.float64)
    intercept, slope, _ = _bounded_line(xr, y, nominal_period_ns, max_drift_ppm)
    return _segment(x, xr, y, intercept, slope, nominal_period_ns, max_drift_ppm, 0.0)


def _segment(
    x: np.ndarray,
    xr: np.ndarray,
    y: np.ndarray,
    intercept: float,
    slope: float,
    nominal_period_ns: float,
    max_drift_ppm: float,
    floor_ns: float,
) -> ClockSegment:
    residual = y - (intercept + slope * xr)
    uncertainty = max(_half_split(xr, y, residual, nominal_period_ns, max_drift_ppm), floor_ns)
    return ClockSegment(
        x0=int(x[0]),
        x_end=int(x[-1]),
        offset_ns=intercept + slope * float(xr[0]),
        period_ns=slope,
        drift_ppm=(nominal_period_ns / slope - 1.0) * 1e6 if slope > 0 else 0.0,
        jitter_ns=float(np.median(residual)),
        uncertainty_ns=uncertainty,
        points=len(x),
    )


def _stretch_starts(y: np.ndarray, stretch_ns: int = STRETCH_NS) -> np.ndarray:
    """Indices where each `stretch_ns` stretch of arrival time begins (y in arrival order)."""
    k = ((np.maximum.accumulate(y) - y[0]) // stretch_ns).astype(np.int64)
    starts: np.ndarray = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
    return starts


def _floor_steps(z: np.ndarray, starts: np.ndarray, least: float) -> tuple[list[int], float]:
    """Where the floor of `z` (arrival minus the line) steps, as point indices, and the least
    step that counts. The level each side of a stretch boundary is the median floor of the
    `STEP_SIDE` stretches there (one stretch all late, a stall, moves no median); boundaries
    whose levels differ by more than the threshold come in runs around a step, and the middle of
    each run is refined to the point where the floor changes."""
    floors = np.minimum.reduceat(z, starts)
    n = len(floors)
    k = STEP_SIDE
    if n < 2 * k:
        return [], math.inf
    noise = float(np.median(np.abs(np.diff(floors))))
    threshold = max(least, STEP_NOISE * noise)
    windows = np.lib.stride_tricks.sliding_window_view(floors, k)
    level = np.median(windows, axis=1)  # level[i]: floors[i : i + k]
    w = np.arange(k, n - k + 1)  # boundaries with k stretches each side
    step = np.abs(level[w] - level[w - k])
    flagged = w[step > threshold]
    points = []
    for run in np.split(flagged, np.flatnonzero(np.diff(flagged) > 1) + 1):
        if not len(run):
            continue
        b = int(run[len(run) // 2])  # the boundary between stretches b - 1 and b
        lo = int(starts[max(0, b - 2)])
        hi = int(starts[b + 1]) if b + 1 < n else len(z)
        points.append(lo + _best_split(z[lo:hi]))
    return points, threshold


def _best_split(z: np.ndarray) -> int:
    """The split (1..len-1) of `z` into two runs, each lifted onto its own floor, that leaves
    the least lateness in all."""
    n = len(z)
    if n < 2:
        return 0
    head = np.minimum.accumulate(z)[:-1]  # floor of z[:p] for p = 1..n-1
    tail = np.minimum.accumulate(z[::-1])[::-1][1:]  # floor of z[p:]
    p = np.arange(1, n)
    cost = -head * p - tail * (n - p)  # + sum(z), the same for every split
    return int(np.argmin(cost)) + 1


def _joint_slope(xr: np.ndarray, y: np.ndarray, cuts: np.ndarray, lo: float, hi: float) -> float:
    """The slope, shared by pieces that each have their own offset, under which the summed
    lateness above each piece's floor is least (convex in the slope: golden-section search)."""
    sx = float(xr.sum())

    def cost(m: float) -> float:
        floors = np.minimum.reduceat(y - m * xr, cuts)
        counts = np.diff(np.r_[cuts, len(xr)])
        return -m * sx - float(np.dot(floors, counts))

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = cost(c), cost(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = cost(d)
        if b - a <= 1e-12 * abs(b):
            break
    return (a + b) / 2


def fit_resplit(
    x: np.ndarray,
    t_host_ns: np.ndarray,
    nominal_period_ns: float,
    max_drift_ppm: float = MAX_DRIFT_PPM,
) -> list[ClockSegment]:
    """Fit one gap-free stretch so that a wrongly numbered part cannot corrupt the rest.

    The lower envelope trusts its lowest points: samples numbered too high (a late burst taken
    for a loss) arrive "early" and drag the whole line, and those numbered too low (a loss taken
    for lateness) sit late and get stamped early. Both leave a step in the floor of the arrivals
    against the line, which jitter does not. So the floor is followed in `STRETCH_NS` stretches;
    where it steps by more than the expected jitter (`STEP_MIN_NS`, `STEP_BLOCKS` blocks, or
    `STEP_NOISE` times the median change of neighbouring stretch floors, whichever is most) the
    segment is split, and the pieces get their own offsets but one slope (one crystal), fitted
    jointly and held to `max_drift_ppm`. Pieces whose floors agree within the threshold are one
    piece again. When even the bounded slope leaves the arrivals running away from the line, the
    numbering is wrong throughout (a run of guesses, or losses nothing counted): the pieces are
    then the stretches, merged where their floors agree within `STEP_MIN_NS`. A stream numbered
    right has one floor and gets one line. Whatever the pieces, their slope is then fitted to
    every arrival (`_slope_of_all`) and each piece's offset put on its floor: the line under
    every arrival of the piece, as calibrated latency floors are defined."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(t_host_ns, dtype=np.float64)
    x0 = int(x[0])
    xr = (x - x0).astype(np.float64)
    intercept, slope, limited = _bounded_line(xr, y, nominal_period_ns, max_drift_ppm)
    if len(x) < 32:
        return [_segment(x, xr, y, intercept, slope, nominal_period_ns, max_drift_ppm, 0.0)]
    starts = _stretch_starts(y)
    lo, hi = _slope_bounds(nominal_period_ns, max_drift_ppm)
    floors = np.minimum.reduceat(y - (intercept + slope * xr), starts)
    block_ns = float(np.median(np.diff(x))) * nominal_period_ns
    least = max(STEP_MIN_NS, STEP_BLOCKS * block_ns)
    if limited and len(floors) > 1:
        threshold = max(STEP_MIN_NS, STEP_NOISE * float(np.median(np.abs(np.diff(floors)))))
        drifting = np.minimum.reduceat(y - nominal_period_ns * xr, starts)
        far = max(threshold, RUNAWAY_NS)
        if float(floors.max()) > far and _monotone(drifting, least):
            # Even at the drift bound the arrivals run away from the line, ever further one
            # way: the numbering is wrong (a run of guesses, or losses nothing counted), and no
            # crystal's slope fits. (A host that falls behind catches up again: its floor comes
            # back, and it is lateness, left to the line.) Follow the floor stretch by stretch,
            # stretches whose floors agree as one piece, and fit one slope to the pieces.
            slope = nominal_period_ns
            cuts = _merge(starts.astype(np.int64), y - slope * xr, STEP_MIN_NS)
            for _ in range(3):
                if len(cuts) == 1:
                    break
                slope = _joint_slope(xr, y, cuts, lo, hi)
                merged = _merge(cuts, y - slope * xr, STEP_MIN_NS)
                if len(merged) == len(cuts):
                    break
                cuts = merged
            if len(cuts) > 1:
                return _pieces(x, xr, y, cuts, nominal_period_ns, max_drift_ppm)
            intercept, slope, _ = _bounded_line(xr, y, nominal_period_ns, max_drift_ppm)
    cuts = np.zeros(1, dtype=np.int64)
    threshold = math.inf
    for _ in range(3):
        points, threshold = _steps_within(y - slope * xr, y, least)
        cuts = _merge(np.unique(np.r_[0, points]).astype(np.int64), y - slope * xr, threshold)
        cuts = _merge(_steady(cuts, y - slope * xr, y, threshold), y - slope * xr, threshold)
        if len(cuts) == 1:
            break
        new = _joint_slope(xr, y, cuts, lo, hi)
        if abs(new - slope) <= 1e-9 * slope:
            break
        slope = new
    if len(cuts) == 1:
        # The slope from every arrival, the offset from their floor (the line under them all).
        slope = _slope_of_all(xr, y, cuts, nominal_period_ns, max_drift_ppm)
        intercept = float(np.min(y - slope * xr))
        floor = _floor_above(y - (intercept + slope * xr), starts)
        return [_segment(x, xr, y, intercept, slope, nominal_period_ns, max_drift_ppm, floor)]
    return _pieces(x, xr, y, cuts, nominal_period_ns, max_drift_ppm)


LATE_MADS = 6.0
"""An arrival more than this many (normal-scaled) median absolute deviations above the median
of the arrivals against the line is left out of its slope: a stall's rush (tens of ms late on a
link whose jitter is 2 ms), not the jitter the line averages over."""


def _slope_of_all(
    xr: np.ndarray, y: np.ndarray, cuts: np.ndarray, nominal_period_ns: float, max_drift_ppm: float
) -> float:
    """The least-squares slope of arrivals `y` against index `xr`, shared by the pieces that
    start at `cuts` (each piece its own offset: one crystal), stalls left out (`LATE_MADS`,
    refitted up to three times) and held to `max_drift_ppm`.

    Why all arrivals and not their floor: the line under every arrival rests on the two or
    three fastest of a segment. When those are rare (5 ms frames delivered in order behind
    0-30 ms of jitter: one in 2,000 comes within 1 ms of the floor) or the floor is itself not
    a line (frames waiting for connection events: a sawtooth one frame high that slides at the
    drift rate, a tooth every 50 s at 100 ppm), those few tilt it, while a latency that is
    constant on average drops out of a least-squares slope. On benchmarks/sync.py's streams
    (5 x 60 s) that was a residual p95 of 0.26 -> 0.14 ms on independent delays and 2.5 ->
    0.68 ms in 15 ms connection-event bursts. Where the floor is sharp and dense (independent
    delays at a block period a third of the jitter's range: one block in 100 within 1 ms of
    the floor) the floor's slope is the better one, and the least-squares slope is noisier
    there (residual 0.12 -> 0.36 ms, 3,000 blocks in 30 s, the mean of 5 streams)."""
    lo, hi = _slope_bounds(nominal_period_ns, max_drift_ppm)
    bounds = np.r_[cuts, len(xr)]
    piece = np.repeat(np.arange(len(cuts)), np.diff(bounds))
    keep = np.ones(len(xr), dtype=bool)
    slope = nominal_period_ns
    for _ in range(3):
        p = piece[keep]
        counts = np.maximum(np.bincount(p, minlength=len(cuts)), 1)
        dx = xr[keep] - (np.bincount(p, xr[keep], len(cuts)) / counts)[p]
        dy = y[keep] - (np.bincount(p, y[keep], len(cuts)) / counts)[p]
        sxx = float(dx @ dx)
        if sxx <= 0:
            break
        slope = min(max(float(dx @ dy) / sxx, lo), hi)
        z = y - slope * xr
        z -= (np.bincount(p, z[keep], len(cuts)) / counts)[piece]  # each piece's mean out
        centre = float(np.median(z[keep]))
        spread = 1.4826 * float(np.median(np.abs(z[keep] - centre)))
        if spread <= 0:  # arrivals on a lattice: nothing to tell a stall by
            break
        late = z > centre + LATE_MADS * spread
        if np.array_equal(~late, keep) or late.all():
            break
        keep = ~late
    return slope


def _pieces(
    x: np.ndarray,
    xr: np.ndarray,
    y: np.ndarray,
    cuts: np.ndarray,
    nominal_period_ns: float,
    max_drift_ppm: float,
) -> list[ClockSegment]:
    """One segment per piece between `cuts`, all with one slope (`_slope_of_all`: the cuts'
    joint slope found them, the arrivals' least squares times them), each on its own floor."""
    segments = []
    slope = _slope_of_all(xr, y, cuts, nominal_period_ns, max_drift_ppm)
    z = y - slope * xr
    for a, b in itertools.pairwise(np.r_[cuts, len(x)]):
        za = z[a:b]
        offset = float(za.min())
        floor = _floor_above(za - offset, _stretch_starts(y[a:b]))
        segments.append(
            _segment(
                x[a:b], xr[a:b], y[a:b], offset, slope, nominal_period_ns, max_drift_ppm, floor
            )
        )
    return segments


def _steps_within(
    z: np.ndarray, y: np.ndarray, least: float, depth: int = 4
) -> tuple[list[int], float]:
    """`_floor_steps` of z, and again within each piece they cut (steps close together hide
    each other at first), down to `depth`; the points and the first threshold."""
    points, threshold = _floor_steps(z, _stretch_starts(y), least)
    if not points or depth <= 1:
        return points, threshold
    out: list[int] = []
    for a, b in itertools.pairwise([0, *points, len(z)]):
        inner, _ = _steps_within(z[a:b], y[a:b], least, depth - 1) if b - a >= 32 else ([], 0.0)
        out.extend(a + p for p in inner)
        out.append(b)
    return sorted(set(out[:-1])), threshold


TYPICAL_STRETCH_NS = 100_000_000
"""The typical floor is taken over stretches of this much arrival time: 13 connection events at
7.5 ms, 30 in a 3 s probe."""

TYPICAL_QUANTILE = 0.1
"""Which quantile of the stretch floors is the typical floor: low enough that a queue standing
for most of a run (frames waiting behind a starved receiver: every stretch's least tens of ms)
does not lift it, and a quantile, not the least, so that it does not depend on the run's length
(a rare lucky frame moves it by a tenth of a stretch)."""


def typical_floor(latency: np.ndarray, t_ns: np.ndarray) -> float:
    """The typical floor of arrival latencies: the `TYPICAL_QUANTILE` quantile, over
    `TYPICAL_STRETCH_NS` stretches of arrival time `t_ns` (in arrival order), of each stretch's
    least latency.

    The line under every arrival rests on the few fastest of a whole session: on a link whose
    floor is sharp (a radio's connection events, a UART) that is the floor, however long the
    session. On a link whose floor is itself software under load (a simulated radio sharing the
    CPU) it is an extreme that falls the more arrivals there are: over one loaded demo the least
    of each 2 s stretch ranged 1.0-4.2 ms, the least of all was 1.05 ms and of a 3 s probe of the
    same link 2.32 ms. A stream declared so (`latency_floor = "typical"`) has its times put at
    this floor, and its `latency_us`, calibrated with the same statistic, then holds whatever
    the session's length.
    """
    floors = np.minimum.reduceat(latency, _stretch_starts(t_ns, TYPICAL_STRETCH_NS))
    return float(np.quantile(floors, TYPICAL_QUANTILE))


def on_typical_floor(
    segment: ClockSegment,
    x: np.ndarray,
    t_host_ns: np.ndarray,
    nominal_period_ns: float,
    max_drift_ppm: float = MAX_DRIFT_PPM,
) -> ClockSegment:
    """`segment` moved from the line under its arrivals (x, t_host_ns: its points, in arrival
    order) onto their `typical_floor`, tilt included: the line under every arrival leans on the
    rare fastest ones as much as it rests on them, so the stretch floors above it are taken in
    two halves and the line runs through each half's (median x, typical floor), its drift held
    to `max_drift_ppm`. Its uncertainty also covers half the lift (the true floor may lie anywhere
    between the two lines)."""
    if len(x) < 32:
        return segment
    z = t_host_ns - segment.times(x)
    starts = _stretch_starts(t_host_ns, TYPICAL_STRETCH_NS)
    floors = np.minimum.reduceat(z, starts)
    mid_x = np.add.reduceat(x.astype(np.float64), starts) / np.diff(np.r_[starts, len(x)])
    x_ref, lift, tilt = float(np.median(mid_x)), float(np.quantile(floors, TYPICAL_QUANTILE)), 0.0
    if len(floors) >= 2 / TYPICAL_QUANTILE:
        h = len(floors) // 2
        (x1, f1), (x2, f2) = (
            (float(np.median(mid_x[part])), float(np.quantile(floors[part], TYPICAL_QUANTILE)))
            for part in (slice(0, h), slice(h, None))
        )
        lo, hi = _slope_bounds(nominal_period_ns, max_drift_ppm)
        if x2 > x1:
            tilt = min(max(segment.period_ns + (f2 - f1) / (x2 - x1), lo), hi) - segment.period_ns
            x_ref, lift = (x1 + x2) / 2, (f1 + f2) / 2
    period = segment.period_ns + tilt
    return dataclasses.replace(
        segment,
        offset_ns=segment.offset_ns + lift + tilt * (segment.x0 - x_ref),
        period_ns=period,
        drift_ppm=(nominal_period_ns / period - 1.0) * 1e6,
        jitter_ns=segment.jitter_ns - lift,
        uncertainty_ns=max(segment.uncertainty_ns, abs(lift) / 2),
    )


def _floor_above(residual: np.ndarray, starts: np.ndarray) -> float:
    """Half the median stretch floor above the line: how far it may sit off the true floor."""
    return float(np.median(np.minimum.reduceat(residual, starts))) / 2


def _monotone(floors: np.ndarray, threshold: float) -> bool:
    """Whether stretch floors run one way: all they come back, against the way they went, is
    within `threshold` or a tenth of how far they went (a stretch whose floor stands out from
    both neighbours is passed over: a running median of three)."""
    if len(floors) >= 3:
        window = np.lib.stride_tricks.sliding_window_view(floors, 3)
        floors = np.r_[floors[0], np.median(window, axis=1), floors[-1]]
    drop = float(np.max(np.maximum.accumulate(floors) - floors))
    rise = float(np.max(floors - np.minimum.accumulate(floors)))
    return drop <= max(threshold, rise / 10) or rise <= max(threshold, drop / 10)


def _steady(cuts: np.ndarray, z: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """Only the pieces whose floor stays level (every stretch within `threshold` of the piece's
    lowest) keep their cut: a misnumbered stretch is off by a constant, a host that has fallen
    behind is late by what varies. An unsteady piece joins the one before it (the first, the
    one after)."""
    bounds = [*cuts.tolist(), len(z)]
    keep = []
    for a, b in itertools.pairwise(bounds):
        piece = z[a:b]
        floors = np.minimum.reduceat(piece, _stretch_starts(y[a:b]))
        keep.append(float(floors.max() - piece.min()) <= threshold)
    out = [c for c, ok in zip(cuts.tolist(), keep, strict=True) if ok or c == 0]
    if not keep[0] and len(out) > 1:
        out.pop(1)  # the first piece joins the next
    return np.array(out, dtype=np.int64)


def _merge(cuts: np.ndarray, z: np.ndarray, threshold: float) -> np.ndarray:
    """Drop cuts between pieces whose floors agree within `threshold`."""
    bounds = [*cuts.tolist(), len(z)]
    pieces = [[int(a), int(b), float(z[a:b].min())] for a, b in itertools.pairwise(bounds)]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        last = merged[-1]
        if abs(piece[2] - last[2]) <= threshold:
            last[1], last[2] = piece[1], min(last[2], piece[2])
        else:
            merged.append(piece)
    return np.array([p[0] for p in merged], dtype=np.int64)


PUBLISH_SLEW = 0.9
"""After a model change that would step back, published stamps advance at this fraction of the
period from the last stamp until they meet the new model's line: strictly increasing, never
faster than real time, and on the new line a few samples later (0.3 ms back: 6 samples at
2 kHz)."""


def published_times(
    x: np.ndarray,
    x0: np.ndarray | int,
    offset_ns: np.ndarray | float,
    period_ns: np.ndarray | float,
    floor_ns: np.ndarray | int,
    floor_x: np.ndarray | int,
) -> np.ndarray:
    """The stamps of indices `x` under a published model: its line, or where that would not
    pass the stamp before (`floor_ns`, of index `floor_x`), that stamp advanced at
    `PUBLISH_SLEW` of the period (the LSL publisher and every reader use this one function)."""
    xs = x.astype(np.float64)
    # The same arithmetic as ClockSegment.times, so a line's stamps are the very same integers.
    line = (offset_ns + period_ns * (xs - x0)).astype(np.int64)
    slewed = (floor_ns + (PUBLISH_SLEW * period_ns) * (xs - floor_x)).astype(np.int64)
    out: np.ndarray = np.maximum(line, slewed)
    return out


@dataclass(frozen=True)
class Published:
    """Stretches of a stream whose samples were published live (LSL) with the clock model of
    the moment, as `clock.published` events record them: `x_from`..`x_to` at
    `published_times`. Arrays sorted by `x_from`."""

    x_from: np.ndarray
    x_to: np.ndarray
    x0: np.ndarray
    offset_ns: np.ndarray
    period_ns: np.ndarray
    floor_ns: np.ndarray
    floor_x: np.ndarray

    @classmethod
    def of(cls, pieces: list[dict[str, float]]) -> Published | None:
        """From `clock.published` payloads (None if there are none)."""
        if not pieces:
            return None
        pieces = sorted(pieces, key=lambda p: p["x_from"])
        ints = ("x_from", "x_to", "x0", "floor_ns", "floor_x")
        cols = {
            k: np.array([p[k] for p in pieces], dtype=np.int64 if k in ints else np.float64)
            for k in (*ints, "offset_ns", "period_ns")
        }
        return cls(**cols)

    def apply(self, x: np.ndarray, t_ns: np.ndarray) -> None:
        """Give the published samples among indices `x` their published times, in `t_ns`."""
        k = np.searchsorted(self.x_from, x, side="right") - 1
        covered = k >= 0
        covered[covered] &= x[covered] <= self.x_to[k[covered]]
        k = k[covered]
        t_ns[covered] = published_times(
            x[covered], self.x0[k], self.offset_ns[k], self.period_ns[k], self.floor_ns[k],
            self.floor_x[k],
        )  # fmt: skip


@dataclass
class StreamClock:
    """Per-stream clock model: host arrivals → sample times, segmented at gaps.

    Feed it one point per received block: the index (or device time) of the block's last sample
    and the block's host arrival time. `fit()` splits the points where arrivals pause for longer
    than `gap_ns` or the index goes backwards (a device reset), and fits each stretch with
    `fit_resplit` (slope from every arrival, offset on their floor): its drift held to
    `max_drift_ppm`, and re-split where the floor of the arrivals steps by more than the
    expected jitter (a stretch numbered wrongly), so one wrong guess cannot move the times of
    the rest. `times()` maps any sample index to session time. The model is stored in the
    recording as JSON (`to_json`) so sample times can be recomputed from the raw arrivals.
    """

    nominal_rate_hz: float
    gap_ns: int = 500_000_000
    min_latency_ns: int = 0  # the profile's known floor of host latency, removed from the offset
    # Which floor of the arrivals `min_latency_ns` is above: "least" (the line under every
    # arrival) or "typical" (`typical_floor`, for links whose floor moves with the load).
    floor: str = "least"
    # At most this many of the latest points are kept (None: all). A live clock needs only the
    # latest; a 2 h BLE recording has 1.4 M points, which the file holds anyway.
    keep: int | None = None
    max_drift_ppm: float = MAX_DRIFT_PPM
    # Packed int64 arrays, not lists: 8 bytes a value here, about 36 as Python ints.
    _x: array[int] = field(default_factory=lambda: array("q"))
    _t: array[int] = field(default_factory=lambda: array("q"))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    segments: list[ClockSegment] = field(default_factory=list)
    resplits: int = 0  # segments added by `fit_resplit` in the last fit
    # Samples published live (LSL) keep the times they were published with.
    published: Published | None = None

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
        xs, ts = x[start:], t[start:] - self.min_latency_ns
        segment = fit_segment(xs, ts, 1e9 / self.nominal_rate_hz, self.max_drift_ppm)
        if self.floor != "typical":
            return segment
        return on_typical_floor(segment, xs, ts, 1e9 / self.nominal_rate_hz, self.max_drift_ppm)

    def fit(self) -> list[ClockSegment]:
        """Fit every segment from the points so far."""
        self.resplits = 0
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
            ts = ts - self.min_latency_ns
            pieces = fit_resplit(xs, ts, period, self.max_drift_ppm)
            if self.floor == "typical":
                # Pieces are runs of the points in order, each from its x0 to its x_end.
                ends = np.searchsorted(xs, [p.x_end for p in pieces], side="right")
                starts = np.r_[0, ends[:-1]]
                pieces = [
                    on_typical_floor(p, xs[a:b], ts[a:b], period, self.max_drift_ppm)
                    for p, a, b in zip(pieces, starts, ends, strict=True)
                ]
            self.resplits += len(pieces) - 1
            self.segments.extend(pieces)
        return self.segments

    def times(self, x: np.ndarray) -> np.ndarray:
        """Session times of sample indices `x`, each from the segment whose last block holds it
        (an index after the last segment: from the last)."""
        if not self.segments:
            self.fit()
        x = np.asarray(x, dtype=np.int64)
        out = np.empty(len(x), dtype=np.int64)
        # A block's points are its last sample's index: its earlier samples belong with it, not
        # with the segment before (they are past that one's x_end).
        ends = np.array([s.x_end for s in self.segments])
        which = np.clip(np.searchsorted(ends, x, side="left"), 0, len(ends) - 1)
        for k, seg in enumerate(self.segments):
            mask = which == k
            out[mask] = seg.times(x[mask])
        if self.published is not None:
            self.published.apply(x, out)
        return out

    def summary(self) -> dict[str, float]:
        """Offset, drift and jitter over all segments (point-weighted), the uncertainty that
        covers 95 % of the points (the point-weighted 95th percentile of the segments'), and how
        many segments there are, how many a re-split added and the drift bound."""
        if not self.segments:
            return {}
        w = np.array([s.points for s in self.segments], dtype=np.float64)
        pick = {
            "drift_ppm": [s.drift_ppm for s in self.segments],
            "jitter_ns": [s.jitter_ns for s in self.segments],
        }
        out = {k: float(np.average(v, weights=w)) for k, v in pick.items()}
        u = np.array([s.uncertainty_ns for s in self.segments])
        order = np.argsort(u)
        covered = np.cumsum(w[order]) / w.sum()
        out["uncertainty_ns"] = float(u[order][np.searchsorted(covered, 0.95)])
        out["segments"] = float(len(self.segments))
        out["resplits"] = float(self.resplits)
        out["max_drift_ppm"] = float(self.max_drift_ppm)
        out["offset_ns"] = float(self.segments[0].offset_ns)
        return out
