"""Benchmark results as rows `needlelab bench` collects: every script takes `--json PATH`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    """One figure next to its goal and its peer."""

    id: str  # P1..P6, K1
    figure: str
    value: float
    unit: str
    goal: str
    met: bool | None  # None: a figure with no goal
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None  # times better than the peer: needlelab / peer, or peer /
    # needlelab where lower is better (> 1: needlelab does better)
    better: str = "higher"  # which way the value improves: "higher" or "lower"


def write_json(path: Path | None, rows: list[Row], **context: object) -> None:
    """Write the rows (and what they were measured with) for `needlelab bench`."""
    if path is not None:
        path.write_text(json.dumps({"rows": [asdict(r) for r in rows], **context}, indent=2))
