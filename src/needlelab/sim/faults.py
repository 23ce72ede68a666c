"""Fault injection for simulators: when faults are due, bad bytes whose count is known, and a
log of what truly went out.

A simulator asks its `FaultSchedule` each turn which faults are due (the config's timed faults
plus any a test injected just now) and applies them. The byte generators here build garbage and
truncated messages so that each piece is exactly one malformed message for a correct decoder,
which lets a test compare the driver's malformed count with the number injected. Each simulator
notes every message it puts on the wire in its `WireLog`: the truth for the driver's
data-quality counts (malformed, duplicates, resyncs).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from needlelab.config import FaultSpec
from needlelab.profiles import FrameFraming, LineFraming


class FaultSchedule:
    """The faults a simulator must apply, by time since it started; safe to `inject` from tests.

    A fault with `every_s` comes back every `every_s` seconds after `at_s`; if the simulator
    falls behind, a missed repetition is applied once, not once per missed period.
    """

    def __init__(self, faults: Sequence[FaultSpec] = ()) -> None:
        self._timed: list[tuple[float, FaultSpec]] = sorted(
            ((f.at_s, f) for f in faults), key=lambda item: item[0]
        )
        self._now: list[FaultSpec] = []
        self._lock = threading.Lock()

    def inject(self, fault: FaultSpec) -> None:
        """Apply a fault at the next turn (its `at_s` and `every_s` are ignored)."""
        with self._lock:
            self._now.append(fault)

    def due(self, t_s: float) -> list[FaultSpec]:
        """The faults to apply now, `t_s` seconds after start, in order."""
        with self._lock:
            due, self._now = self._now, []
        keep: list[tuple[float, FaultSpec]] = []
        for at_s, fault in self._timed:
            if t_s < at_s:
                keep.append((at_s, fault))
                continue
            due.append(fault)
            if fault.every_s is not None:
                periods = int((t_s - at_s) / fault.every_s) + 1
                keep.append((at_s + periods * fault.every_s, fault))
        self._timed = sorted(keep, key=lambda item: item[0])
        return due


GARBAGE_PIECE_BYTES = 100


def garbage_piece_bytes(framing: LineFraming | FrameFraming) -> int:
    """The garbage bytes in one piece: 100, unless a longer piece is needed to be over-long."""
    if isinstance(framing, FrameFraming):
        return max(GARBAGE_PIECE_BYTES, framing.max_packet_bytes - 1)
    if framing.encoding in ("ascii", "utf-8"):
        return GARBAGE_PIECE_BYTES
    return max(GARBAGE_PIECE_BYTES, framing.max_line_bytes + 1)


def garbage_pieces(
    framing: LineFraming | FrameFraming, n_bytes: int, rng: random.Random
) -> list[bytes]:
    """At least `n_bytes` of random garbage, in pieces that each count as one malformed message.

    Each piece carries `garbage_piece_bytes` random bytes (so there are ceil(n_bytes / that)
    pieces) and is malformed by construction, whatever its random content:
    - frame framing: a start byte, the bytes, a stop byte; longer than `max_packet_bytes`;
    - line framing, ASCII or UTF-8: the bytes and a line ending, the first byte 0xFF, which
      neither encoding can decode;
    - line framing, Latin-1 (every byte decodes): longer than `max_line_bytes`.
    Bytes that would end a piece early (start, stop, the line ending, a carriage return) are
    replaced by 'A'.
    """
    if isinstance(framing, FrameFraming):
        banned = {framing.start, framing.stop}
    else:
        banned = set(framing.line_ending.encode()) | {0x0D}
    table = bytes(0x41 if b in banned else b for b in range(256))
    size = garbage_piece_bytes(framing)
    pieces = []
    for _ in range(max(1, -(-n_bytes // size))):
        body = rng.randbytes(size).translate(table)
        if isinstance(framing, FrameFraming):
            pieces.append(bytes([framing.start]) + body + bytes([framing.stop]))
        else:
            pieces.append(b"\xff" + body[1:] + framing.line_ending.encode())
    return pieces


def truncated(message: bytes, framing: LineFraming | FrameFraming) -> bytes:
    """The first half of an encoded message, cut so that a decoder sees one malformed message.

    A line keeps its ending (else it would swallow the next good line, and the count would be
    wrong); a frame loses its stop byte, so the next frame's start byte cuts it short. The half
    line must not itself be a valid message, which holds for the shipped profiles.
    """
    if isinstance(framing, FrameFraming):
        return message[: max(2, len(message) // 2)]
    ending = framing.line_ending.encode()
    body = message.removesuffix(ending)
    return body[: max(1, len(body) // 2)] + ending


WireKind = Literal["valid", "malformed", "duplicate"]
"""What a simulator sent: a well-formed message, one that is malformed by construction (garbage,
a cut frame), or a well-formed copy sent right after its original (the `duplicate` fault)."""


@dataclass(frozen=True)
class WireCounts:
    """A simulator's wire counts at `t_mono_ns` (time.monotonic_ns, system-wide)."""

    t_mono_ns: int
    valid: int = 0
    malformed: int = 0
    duplicates: int = 0
    resyncs: int = 0


class WireLog:
    """Every message a simulator put on the wire, by kind, in wire order: the truth a driver's
    data-quality counts are checked against. Thread-safe.

    - `malformed`: messages malformed by construction;
    - `duplicates`: copies sent right after their original (a copy whose original was lost on
      the way is not one: the simulator sends it as `valid`);
    - `resyncs`: runs of malformed messages; a run is every malformed message sent between two
      well-formed ones (copies included), and counts once.

    `history` holds the counts after each malformed message or copy with its time, so a test
    can ask what had gone out by a moment (`at`), e.g. the kill of a recorder.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = WireCounts(0)
        self._in_run = False
        self.history: list[WireCounts] = []

    def sent(self, kind: WireKind, n: int = 1) -> None:
        """Note `n` messages of `kind` just sent (a malformed run continues across calls)."""
        if n <= 0:
            return
        with self._lock:
            c = self._now
            t = time.monotonic_ns()
            if kind == "valid":
                self._now = WireCounts(t, c.valid + n, c.malformed, c.duplicates, c.resyncs)
                self._in_run = False
                return
            if kind == "malformed":
                resyncs = c.resyncs + (not self._in_run)
                self._now = WireCounts(t, c.valid, c.malformed + n, c.duplicates, resyncs)
                self._in_run = True
            else:
                self._now = WireCounts(t, c.valid, c.malformed, c.duplicates + n, c.resyncs)
                self._in_run = False
            self.history.append(self._now)

    def counts(self) -> WireCounts:
        """The counts so far."""
        with self._lock:
            return self._now

    def at(self, t_mono_ns: int) -> WireCounts:
        """The malformed, duplicate and resync counts as they stood at `t_mono_ns`."""
        with self._lock:
            before = [c for c in self.history if c.t_mono_ns <= t_mono_ns]
        return before[-1] if before else WireCounts(t_mono_ns)
