"""A simulated patient for the demo: answers with realistic accuracy and reaction times.

- Pain: NRS 6 ± 1 before, 2 points better after.
- TPD: an observer per site whose threshold is wider on the painful side (48 mm at L3 right vs
  40 mm left before; 6 mm better on the painful side after, the idea the seed tests).
- LRJ: about 88 % correct, reaction times log-normal around 1.1 s before and 0.9 s after.
- Localization: the needled level exactly 60 % of the time, one segment off 30 %, two 10 %; the
  right side 85 %; one or two sensation words; answering 0.8-2 s after the question.
"""

from __future__ import annotations

import math
import random

from needlelab.clinic.lrj import Side
from needlelab.clinic.tpd import Answer, SimulatedObserver, TpdTrial
from needlelab.events import AnswerSide, NeedleSiteEvent

DESCRIPTORS = ("dull", "ache", "pressure", "electric", "tingling", "spreading")


class SimulatedPatient:
    """Answers the demo's questions (deterministic for a seed)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self._observers: dict[tuple[str, str], SimulatedObserver] = {}

    def nrs(self, when: str) -> int:
        """Pain 0-10."""
        base = 6 + self.rng.choice((-1, 0, 0, 1))
        return max(0, base - (2 if when == "post" else 0))

    def rom(self, movement: str, when: str) -> float:
        """Degrees of one movement."""
        full = {"flexion": 60.0, "extension": 25.0}.get(movement, 30.0)
        share = 0.7 if when != "post" else 0.85
        return round(full * share + self.rng.gauss(0, 2), 0)

    def tpd(self, site: str, when: str, trial: TpdTrial) -> Answer:
        """ "one" or "two" for a TPD trial at a site."""
        key = (site, when)
        if key not in self._observers:
            painful = site.endswith("R")
            threshold = (48.0 if painful else 40.0) - (6.0 if painful and when == "post" else 0.0)
            seed = self.rng.randrange(1 << 30)
            self._observers[key] = SimulatedObserver(threshold, spread_mm=3.0, seed=seed)
        return self._observers[key].respond(trial)

    def lrj(self, side: Side, when: str) -> tuple[Side, float]:
        """(answer, reaction time in s) for a left/right picture."""
        median = 1.1 if when != "post" else 0.9
        rt = min(4.0, median * math.exp(self.rng.gauss(0, 0.25)))
        right = self.rng.random() < 0.88
        other: Side = "L" if side == "R" else "R"
        return (side if right else other), rt

    def localize(
        self, site: NeedleSiteEvent, levels: list[str]
    ) -> tuple[str, AnswerSide, list[str], float]:
        """(level, side, descriptors, latency s) of an answer to "where do you feel it?"."""
        r = self.rng.random()
        off = 0 if r < 0.6 else (self.rng.choice((-1, 1)) if r < 0.9 else self.rng.choice((-2, 2)))
        k = min(len(levels) - 1, max(0, levels.index(site.level) + off))
        side: AnswerSide = "both" if site.side == "midline" else site.side
        if self.rng.random() > 0.85:
            side = self.rng.choice(("L", "R", "both", "unsure"))
        words = self.rng.sample(DESCRIPTORS, self.rng.choice((1, 2)))
        return levels[k], side, words, self.rng.uniform(0.8, 2.0)
