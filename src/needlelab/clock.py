"""The session clock: one monotonic time base that every sample and event is stamped on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
