"""Left/right judgement: the stimulus sequence of a block.

In the spirit of NOI Recognise: pictures of a left or right hand, foot or back, rotated, one at a
time; the patient says which side as fast as they can. A block has equal numbers of left and
right stimuli, in random order, cycling through the body parts and rotations of the template.
The pictures are drawn procedurally by the monitor (`monitor.lrj`); a stimulus is named
`<part>-<side>-rot<degrees>`, e.g. `hand-L-rot90`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from needlelab.clinic.protocol import LrjSettings

Side = Literal["L", "R"]


@dataclass(frozen=True)
class LrjStimulus:
    """One picture: which body part, which side, turned by how much."""

    body_part: str
    side: Side
    rotation: int

    @property
    def name(self) -> str:
        """The stimulus name stored with the trial."""
        return f"{self.body_part}-{self.side}-rot{self.rotation}"


def block_stimuli(settings: LrjSettings, seed: int, trials: int | None = None) -> list[LrjStimulus]:
    """A block's stimuli: half left, half right (one more right if odd), shuffled."""
    n = trials if trials is not None else settings.trials
    rng = random.Random(seed)
    left: Side = "L"
    right: Side = "R"
    sides = [left] * (n // 2) + [right] * (n - n // 2)
    rng.shuffle(sides)
    return [
        LrjStimulus(
            settings.body_parts[k % len(settings.body_parts)],
            side,
            rng.choice(settings.rotations),
        )
        for k, side in enumerate(sides)
    ]
