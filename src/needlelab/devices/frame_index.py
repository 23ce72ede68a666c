"""Numbering received notifications: which sample each one starts at, and what was lost before it.

A regular stream's sample times come from fitting arrival times against sample *index*, so an
index that is wrong after a loss shifts every later sample. What a frame's number rests on,
best first:

- a sequence counter in the frame (`counter_bits`): unwrapped, exact;
- the turn of the characteristic it came on, where the profile has several that take turns (the
  Myo's four): a counter modulo their number, exact for fewer losses in a row than that;
- nothing (MyoWare): the next number.

A counter that short, or none, cannot count a longer run of losses, so the arrival pattern is
watched as well. Against the index, arrival minus index × frame period stays within the link's
latency spread above its floor (the lowest value of the last seconds); a frame that arrives later
than the spread allows, by at least half what the counter can count, was preceded by lost
frames: as many as that lateness is long, rounded to what the counter allows. Those losses are
inferred, and reported as such.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

FLOOR_WINDOW_NS = 2_000_000_000  # the latency floor is the lowest residual of this long
MIN_LATENESS_NS = 50_000_000  # never infer a loss from less lateness than this
SPREAD_GAIN = 0.02  # smoothing of the typical latency above the floor (per frame)
WARMUP_FRAMES = 20  # no inference before the floor and spread have been seen


@dataclass(frozen=True)
class Numbered:
    """A batch of frames numbered: frame numbers, and per frame the frames lost just before it
    that only the arrival pattern revealed (0 where none, or where the counter said so)."""

    frame: I64
    inferred_lost: I64


class FrameIndexer:
    """Numbers one stream's notifications across batches (see the module docstring).

    `modulus` is what the counter counts to: 2**bits for a sequence counter, the number of data
    characteristics for turn-taking ones, 1 for none. A step of 0 means a whole turn (modulus)
    for turn-taking characteristics, and a repeat for a real counter.
    """

    def __init__(self, frame_period_ns: float, modulus: int, turns: bool = False) -> None:
        self.period = frame_period_ns
        self.modulus = max(1, modulus)
        self.turns = turns
        self.last_frame: int | None = None
        self._last_raw = 0
        self._floor: deque[tuple[int, float]] = deque()  # (arrival, residual), rising residuals
        self._spread = 0.0
        self._seen = 0

    def number(self, raw: I64 | None, arrivals_ns: I64) -> Numbered:
        """Frame numbers for a batch in arrival order; `raw` is the counter as received (wrapping)
        or the characteristic's turn, None without either."""
        n = len(arrivals_ns)
        frames = np.empty(n, dtype=np.int64)
        inferred = np.zeros(n, dtype=np.int64)
        m, period = self.modulus, self.period
        for k in range(n):
            t = int(arrivals_ns[k])
            if self.last_frame is None:
                frame = 0
            else:
                step = 1 if raw is None else (int(raw[k]) - self._last_raw) % m
                if step == 0 and self.turns:
                    step = m
                frame = self.last_frame + step
                extra = self._late_by(t, frame)
                if extra:
                    frame += extra
                    inferred[k] = extra
            if raw is not None:
                self._last_raw = int(raw[k])
            self._observe(t, t - frame * period)
            self.last_frame = frames[k] = frame
        return Numbered(frames, inferred)

    def _late_by(self, t: int, frame: int) -> int:
        """Frames lost beyond what the counter saw, judged from how late frame `frame` came."""
        if self._seen < WARMUP_FRAMES or not self._floor:
            return 0
        lateness = t - frame * self.period - self._floor[0][1] - self._spread
        whole_turn = self.modulus * self.period
        if lateness < max(whole_turn / 2, MIN_LATENESS_NS + self._spread):
            return 0
        return max(1, round(lateness / whole_turn)) * self.modulus

    def _observe(self, t: int, residual: float) -> None:
        floor = self._floor
        # A sliding-window minimum: drop residuals that can no longer be the lowest, then those
        # too old (always keeping the newest, so an outage does not forget the floor).
        while floor and floor[-1][1] >= residual:
            floor.pop()
        floor.append((t, residual))
        while len(floor) > 1 and floor[0][0] < t - FLOOR_WINDOW_NS:
            floor.popleft()
        above = residual - floor[0][1]
        self._spread += SPREAD_GAIN * (min(above, MIN_LATENESS_NS) - self._spread)
        self._seen += 1
