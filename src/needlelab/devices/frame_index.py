"""Numbering received notifications: which sample each one starts at, and what was lost before it.

A regular stream's sample times come from fitting arrival times against sample *index*, so an
index that is wrong after a loss shifts every later sample. What a frame's number rests on,
best first:

- a sequence counter in the frame (`counter_bits`): unwrapped, exact;
- the turn of the characteristic it came on, where the profile has several that take turns (the
  Myo's four): a counter modulo their number, exact for fewer losses in a row than that;
- nothing (MyoWare): the next number.

A counter that short, or none, cannot count a longer run of losses, so the arrival pattern is
watched as well. A frame's *lateness* is its arrival minus its index × frame period, above the
floor of that (the lowest of the last seconds: the link's latency floor). A loss the counter
could not see leaves every later frame *persistently* late, by whole multiples of what the
counter counts to (its quantum: one turn of the characteristics, or one frame without any). A
late burst starts just the same, but the frames after it catch up: a paused radio, a missed
connection event or a busy host deliver the notifications late and then in a rush, and nothing
is missing.

So a frame late by half a quantum or more is *suspected*, not numbered as a loss: it and the
frames after it are held back until the arrivals decide.

- A held frame back within half a quantum of the floor proves nothing was lost before it (had
  anything been, it would have come early, which a link cannot do): every held frame is
  released as counted.
- A loss is the deficit from the earliest held frame from which every later one stands clear
  of lateness, once it has persisted for `DECIDE_NS` of arrivals and stopped draining away (a
  burst still catching up falls): the least lateness from there on, rounded to whole quanta,
  was lost just before that frame. Standing clear means at least three quarters of a quantum
  late, and three times the highest floor of any `DECIDE_NS` stretch of the link's last half
  minute (a jittery link can keep a whole stretch late by itself; before 10 s of it were seen,
  at least `UNSEEN_WANDER_NS`). Such a loss is inferred, with a confidence (0..1): how rarely a
  stretch of this link was that late, 1 - p ** (evidence / `DECIDE_NS`), p the share of recent
  stretches whose floor reached the lateness one quantum fewer lost would need (plus one each
  way: none seen is not never).
- Anything else is lateness, numbered as counted: what the link's wander explains, and what
  stands clear for too short a time to show persistence before `hold_ns` (the link went quiet,
  or the stream ended: `flush`). Frames are held only while a suspicion is open, so a stream
  that does not stall sees no delay, and never longer than `hold_ns`.

After a reconnect (`restart`) the first frame follows an outage in which the device sent
nothing: its number comes from how late it is at once (the outage length, rounded to quanta),
and the floor is learnt again.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

FLOOR_WINDOW_NS = 2_000_000_000  # the latency floor is the lowest residual of this long
MIN_LATENESS_NS = 4_000_000  # never suspect a loss from less lateness than this
DECIDE_NS = 500_000_000  # a suspected loss is judged on at least this much of what follows it
HOLD_NS = 1_000_000_000  # and frames are never held longer than this (< the stall watchdog)
WARMUP_FRAMES = 20  # no suspicion before the floor has been seen
WANDER_STRETCHES = 60  # the link's wander: floors of its last 60 DECIDE_NS stretches (30 s)
WANDER_SEEN = 20  # the link's wander is known once this many stretches were seen (10 s)
UNSEEN_WANDER_NS = 50_000_000  # until then only a deficit this long is taken for a loss
WANDER_MARGIN = 3.0  # a loss must be this many times the highest floor of a recent stretch
OUTAGE_LATENESS_NS = 50_000_000  # after a reconnect, lateness below this is not an outage


@dataclass(frozen=True)
class Numbered:
    """Frames numbered, in arrival order: frame numbers, and per frame the frames lost just
    before it that only the arrival pattern revealed (0 where none, or where the counter said
    so), with the confidence of that inference (0..1; NaN where nothing was inferred, or where
    it was counted from the length of an outage)."""

    frame: I64
    inferred_lost: I64
    confidence: F64

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class _Frame:
    t: int  # arrival
    frame: int
    inferred: int = 0
    confidence: float = math.nan


class FrameIndexer:
    """Numbers one stream's notifications across batches (see the module docstring).

    `modulus` is what the counter counts to: 2**bits for a sequence counter, the number of data
    characteristics for turn-taking ones, 1 for none. A step of 0 means a whole turn (modulus)
    for turn-taking characteristics, and a repeat for a real counter.

    `push` takes a batch and returns the frames whose numbers are decided: the oldest frames
    pushed and not yet returned, in order (frames under suspicion are held back). `release_due`
    decides a suspicion held `hold_ns` with nothing new arriving, `flush` decides everything now
    (before a disconnect), and `number` numbers a whole batch at once (push, then flush).
    """

    def __init__(
        self, frame_period_ns: float, modulus: int, turns: bool = False, hold_ns: int = HOLD_NS
    ) -> None:
        self.period = frame_period_ns
        self.modulus = max(1, modulus)
        self.turns = turns
        self.hold_ns = hold_ns
        self.decide_ns = min(DECIDE_NS, hold_ns)
        self.quantum_ns = self.modulus * frame_period_ns  # the least loss the counter can miss
        self.threshold_ns = max(self.quantum_ns / 2, MIN_LATENESS_NS)
        self.last_frame: int | None = None  # the last frame numbered (held ones included)
        self._last_raw = 0
        self._floor: deque[tuple[int, float]] = deque()  # (arrival, residual), rising residuals
        self._seen = 0
        # Floors (least lateness) of the latest DECIDE_NS stretches of released frames.
        self._wander: deque[float] = deque(maxlen=WANDER_STRETCHES)
        self._stretch_t0: int | None = None
        self._stretch_min = math.inf
        self._held: list[_Frame] = []
        self._out: list[_Frame] = []
        self._restarted = False

    @property
    def pending(self) -> int:
        """How many frames are held back, waiting for the arrivals to decide."""
        return len(self._held)

    def number(self, raw: I64 | None, arrivals_ns: I64) -> Numbered:
        """Frame numbers for a whole batch in arrival order, deciding what it leaves open."""
        self._push(raw, arrivals_ns)
        return self.flush()

    def push(self, raw: I64 | None, arrivals_ns: I64) -> Numbered:
        """Take a batch in arrival order; `raw` is the counter as received (wrapping) or the
        characteristic's turn, None without either. Returns the frames now decided."""
        self._push(raw, arrivals_ns)
        return self._take()

    def _push(self, raw: I64 | None, arrivals_ns: I64) -> None:
        m = self.modulus
        for k in range(len(arrivals_ns)):
            t = int(arrivals_ns[k])
            item = _Frame(t, 0)
            if self.last_frame is not None:
                step = 1 if raw is None else (int(raw[k]) - self._last_raw) % m
                if step == 0 and self.turns:
                    step = m
                item.frame = self.last_frame + step
                if self._restarted:
                    item.inferred = self._outage_frames(t, item.frame)
                    item.frame += item.inferred
                    self._relearn()
            self._restarted = False
            if raw is not None:
                self._last_raw = int(raw[k])
            self.last_frame = item.frame
            self._consider(item)

    def release_due(self, now_ns: int) -> Numbered:
        """Decide a suspicion held for `hold_ns` up to `now_ns` with nothing new arriving."""
        while self._held and now_ns - self._held[0].t >= self.hold_ns:
            self._judge(now_ns)
        return self._take()

    def flush(self) -> Numbered:
        """Decide every held frame now, on what the arrivals have shown (before a disconnect,
        or at the end of a batch numbered whole)."""
        while self._held:
            self._judge(None)
        return self._take()

    def restart(self) -> Numbered:
        """The link was made again: what was held is decided (and returned), and the next frame
        follows an outage."""
        out = self.flush()
        self._restarted = self.last_frame is not None
        return out

    # -- inside ----------------------------------------------------------------------------------
    def _lateness(self, item: _Frame) -> float:
        return item.t - item.frame * self.period - self._floor[0][1]

    def _consider(self, item: _Frame) -> None:
        """Release a frame, or hold it: it opens a suspicion, or one is open."""
        held = self._held
        if not held:
            if self._seen < WARMUP_FRAMES or self._lateness(item) < self.threshold_ns:
                self._release(item)
            else:
                held.append(item)
            return
        held.append(item)
        if self._lateness(item) < self.threshold_ns:
            # Back on the floor: nothing was lost before it, the suspicion was lateness.
            self._release_held()
            return
        if item.t - held[0].t >= self.decide_ns:
            self._judge(item.t)

    def _judge(self, now_ns: int | None) -> None:
        """Judge the open suspicion on the held frames at `now_ns` (None: now or never, a
        flush); see the module docstring.

        A loss is before the earliest held frame from which every later one stands clear of
        lateness (`needed`), if that deficit has persisted `decide_ns` and stopped draining: it
        is taken, the frames before it released as counted, and the rest renumbered and
        considered again (a later loss among them opens a suspicion of its own). The frames
        before that one are released either way; the rest wait for more evidence, unless they
        have waited `hold_ns` (or this is a flush): then they are lateness too. What does not
        stand clear is lateness."""
        held = self._held
        late = np.array([self._lateness(h) for h in held])
        suffix_min = np.minimum.accumulate(late[::-1])[::-1]
        needed = max(self.threshold_ns, 0.75 * self.quantum_ns)
        if len(self._wander) < WANDER_SEEN:  # the link's wander is not known yet
            needed = max(needed, UNSEEN_WANDER_NS)
        else:
            needed = max(needed, WANDER_MARGIN * max(self._wander))
        clear = np.flatnonzero(suffix_min >= needed)
        if not len(clear):
            self._release_held()
            return
        p = int(clear[0])
        rest = held[p:]
        evidence = rest[-1].t - rest[0].t
        if evidence < self.decide_ns or self._draining(late[p:]):
            if now_ns is None or now_ns - rest[0].t >= self.hold_ns:
                self._release_held()
            else:  # what comes before the deficit is lateness whatever follows
                self._held = rest
                for h in held[:p]:
                    self._release(h)
            return
        least = float(suffix_min[p])
        lost = max(1, round(least / self.quantum_ns)) * self.modulus
        lost_ns = lost * self.period
        self._held = []
        for h in held[:p]:
            self._release(h)
        rest[0].inferred += lost
        rest[0].confidence = self._confidence(least - lost_ns + self.quantum_ns, evidence)
        for h in rest:
            h.frame += lost
        assert self.last_frame is not None
        self.last_frame += lost
        for h in rest:
            self._consider(h)

    def _draining(self, late: F64) -> bool:
        """Whether lateness is still falling (a burst catching up): the later half's least is
        below the earlier half's by more than the suspicion threshold."""
        half = len(late) // 2
        return half > 0 and float(late[:half].min() - late[half:].min()) > self.threshold_ns

    def _confidence(self, needed_ns: float, evidence_ns: int) -> float:
        """1 - p ** (evidence / DECIDE_NS): p the share of the link's recent stretches whose
        floor was at least `needed_ns` late, with one more each way (none seen is not never)."""
        p = (sum(w >= needed_ns for w in self._wander) + 1) / (len(self._wander) + 2)
        return round(1.0 - float(p ** max(1.0, evidence_ns / self.decide_ns)), 4)

    def _outage_frames(self, t: int, frame: int) -> int:
        """Frames the device produced during an outage and never sent, from how late the first
        frame after it comes (rounded to what the counter allows)."""
        if not self._floor:
            return 0
        lateness = t - frame * self.period - self._floor[0][1]
        if lateness < max(self.quantum_ns / 2, OUTAGE_LATENESS_NS):
            return 0
        return max(1, round(lateness / self.quantum_ns)) * self.modulus

    def _relearn(self) -> None:
        """Forget the floor and the wander: a new link has its own."""
        self._floor.clear()
        self._wander.clear()
        self._stretch_t0, self._stretch_min = None, math.inf
        self._seen = 0

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for h in held:
            self._release(h)

    def _release(self, item: _Frame) -> None:
        residual = item.t - item.frame * self.period
        floor = self._floor
        if floor:
            self._note_wander(item.t, residual - floor[0][1])
        # A sliding-window minimum: drop residuals that can no longer be the lowest, then those
        # too old (always keeping the newest, so an outage does not forget the floor).
        while floor and floor[-1][1] >= residual:
            floor.pop()
        floor.append((item.t, residual))
        while len(floor) > 1 and floor[0][0] < item.t - FLOOR_WINDOW_NS:
            floor.popleft()
        self._seen += 1
        self._out.append(item)

    def _note_wander(self, t: int, lateness: float) -> None:
        if self._stretch_t0 is None:
            self._stretch_t0 = t
        elif t - self._stretch_t0 >= self.decide_ns:
            self._wander.append(self._stretch_min)
            self._stretch_t0, self._stretch_min = t, math.inf
        self._stretch_min = min(self._stretch_min, lateness)

    def _take(self) -> Numbered:
        out, self._out = self._out, []
        return Numbered(
            np.array([h.frame for h in out], dtype=np.int64),
            np.array([h.inferred for h in out], dtype=np.int64),
            np.array([h.confidence for h in out], dtype=np.float64),
        )
