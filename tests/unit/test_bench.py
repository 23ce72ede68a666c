"""`needlelab bench`'s table: every figure whole, columns aligned, the advantage over the peer."""

from __future__ import annotations

from needlelab.bench import format_table

ROWS = [
    {"id": "P3", "figure": "sync error p95, one-sided jitter 0-30 ms, 100 ppm, 2 % loss",
     "value": 0.597, "unit": "ms", "goal": "<= 1 ms and <= 0.25 x pyxdf", "met": True,
     "peer": "pyxdf dejitter", "peer_value": 50.5, "ratio": 84.6},
    {"id": "P6", "figure": "memory growth", "value": 23.7, "unit": "MB", "goal": "<= 50 MB",
     "met": False, "peer": "", "peer_value": None, "ratio": None},
]  # fmt: skip


def test_table_keeps_every_text_whole_and_aligned() -> None:
    lines = format_table(ROWS).splitlines()
    assert lines[0].split() == ["#", "figure", "value", "goal", "met", "peer", "peer", "value",
                                "vs", "peer"]  # fmt: skip
    assert ROWS[0]["figure"] in lines[1] and "<= 1 ms and <= 0.25 x pyxdf" in lines[1]
    assert lines[1].endswith("84.60x") and "50.5 ms" in lines[1]
    assert " NO " in lines[2] and lines[2].endswith("—")
    # The columns line up: each goal starts where the header's "goal" does.
    start = lines[0].index("goal")
    assert lines[1][start:].startswith("<= 1 ms") and lines[2][start:].startswith("<= 50 MB")
