"""Two-point discrimination: an adaptive 1-up/n-down staircase with one-point catch trials.

Method (also stated in the report): per site, orientation and moment (pre/post) one staircase on
caliper distance. Two-point trials move it: after `down` answers of "two" in a row the distance
drops by the current step, after any other answer ("one" or "unsure") it rises by the step. With
down = 2 the track settles where the patient says "two" 70.7 % of the time (Levitt 1971). The
step is `steps_mm[k]` after k reversals (the last one thereafter), and the track stops after
`reversals` reversals or `max_trials` trials. The threshold is the mean distance at the last
`threshold_reversals` reversals. One-point catch trials are mixed in at `catch_rate`: exactly one
in every block of round(1 / catch_rate) trials, at a random place in the block; they do not move
the track, and "two" on them is a false alarm.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Answer = Literal["one", "two", "unsure"]
Orientation = Literal["vertical", "horizontal"]
VERTICAL: Orientation = "vertical"


class TpdSettings(BaseModel):
    """How the TPD staircases run (the protocol template's `[tpd]` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_mm: float = Field(60.0, gt=0, le=300)
    steps_mm: list[float] = Field(default_factory=lambda: [10.0, 5.0], min_length=1)
    min_mm: float = Field(5.0, ge=0)
    max_mm: float = Field(120.0, gt=0, le=300)
    down: int = Field(2, ge=1, le=4)  # n-down: answers of "two" in a row before a step down
    reversals: int = Field(8, ge=2, le=40)
    threshold_reversals: int = Field(6, ge=1, le=40)
    max_trials: int = Field(60, ge=5, le=400)
    catch_rate: float = Field(0.2, ge=0, le=0.5)
    orientations: list[Orientation] = Field(default_factory=lambda: [VERTICAL], min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> TpdSettings:
        if any(step <= 0 for step in self.steps_mm):
            raise ValueError("steps_mm must all be positive")
        if not self.min_mm < self.start_mm <= self.max_mm:
            raise ValueError("start_mm must lie in (min_mm, max_mm]")
        if self.threshold_reversals > self.reversals:
            raise ValueError("threshold_reversals cannot exceed reversals")
        return self


@dataclass(frozen=True)
class TpdTrial:
    """What to present next: one or two points, at `distance_mm`, placed with `step_mm`."""

    points: Literal[1, 2]
    distance_mm: float
    step_mm: float
    number: int


@dataclass
class Staircase:
    """One adaptive track (see the module docstring). Not thread-safe; one caller at a time."""

    settings: TpdSettings
    name: str
    seed: int = 0
    distance_mm: float = field(init=False)
    trials: int = field(default=0, init=False)
    reversal_mm: list[float] = field(default_factory=list, init=False)
    catch_trials: int = field(default=0, init=False)
    false_alarms: int = field(default=0, init=False)
    _run: int = field(default=0, init=False)  # answers of "two" in a row
    _direction: int = field(default=0, init=False)  # -1 down, +1 up, 0 not moved yet
    _catch_at: set[int] = field(default_factory=set, init=False)
    _pending: TpdTrial | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.distance_mm = self.settings.start_mm
        rng = random.Random(self.seed)
        if self.settings.catch_rate > 0:
            block = max(2, round(1 / self.settings.catch_rate))
            for start in range(1, self.settings.max_trials + 1, block):
                self._catch_at.add(start + rng.randrange(block))

    @property
    def done(self) -> bool:
        """Whether the track has stopped (enough reversals, or the trial limit)."""
        s = self.settings
        return len(self.reversal_mm) >= s.reversals or self.trials >= s.max_trials

    @property
    def step_mm(self) -> float:
        """The step the next move takes."""
        steps = self.settings.steps_mm
        return steps[min(len(self.reversal_mm), len(steps) - 1)]

    def next_trial(self) -> TpdTrial:
        """The next trial to present (the same one again until it is answered)."""
        if self._pending is None:
            number = self.trials + 1
            points: Literal[1, 2] = 1 if number in self._catch_at else 2
            self._pending = TpdTrial(points, self.distance_mm, self.step_mm, number)
        return self._pending

    def answer(self, answer: Answer) -> tuple[TpdTrial, bool, bool]:
        """Record the answer to the pending trial: (the trial, correct, it was a reversal)."""
        trial = self.next_trial()
        self._pending = None
        self.trials += 1
        if trial.points == 1:
            self.catch_trials += 1
            self.false_alarms += answer == "two"
            return trial, answer == "one", False
        correct = answer == "two"
        move = 0
        if correct:
            self._run += 1
            if self._run >= self.settings.down:
                move, self._run = -1, 0
        else:
            move, self._run = 1, 0
        reversal = False
        if move:
            if self._direction and move != self._direction:
                self.reversal_mm.append(trial.distance_mm)
                reversal = True
            self._direction = move
            s = self.settings
            self.distance_mm = min(
                s.max_mm, max(s.min_mm, trial.distance_mm + move * trial.step_mm)
            )
        return trial, correct, reversal

    def threshold_mm(self) -> float | None:
        """Mean distance at the last `threshold_reversals` reversals (None before enough)."""
        k = self.settings.threshold_reversals
        if len(self.reversal_mm) < k:
            return None
        last = self.reversal_mm[-k:]
        return sum(last) / len(last)

    def false_alarm_rate(self) -> float | None:
        """Share of catch trials answered "two" (None without catch trials)."""
        return self.false_alarms / self.catch_trials if self.catch_trials else None


@dataclass
class SimulatedObserver:
    """A patient for tests and the demo: says "two" with a logistic probability in distance whose
    70.7 % point (where 1-up/2-down settles) is `threshold_mm`; on one point, "two" at
    `false_alarm` rate."""

    threshold_mm: float
    spread_mm: float = 2.0
    false_alarm: float = 0.1
    seed: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def p_two(self, distance_mm: float) -> float:
        """Probability of answering "two" to two points at `distance_mm`."""
        logit_707 = math.log(0.7071 / (1 - 0.7071))
        return 1 / (1 + math.exp(-((distance_mm - self.threshold_mm) / self.spread_mm + logit_707)))

    def respond(self, trial: TpdTrial) -> Answer:
        """The answer to a trial."""
        p = self.false_alarm if trial.points == 1 else self.p_two(trial.distance_mm)
        return "two" if self._rng.random() < p else "one"
