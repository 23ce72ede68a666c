"""`needlelab bench`'s table: every figure whole, columns aligned, the advantage over the peer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.bench import format_comparison, format_table, load_baseline

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


def test_comparison_says_better_or_worse_by_each_figure_s_direction(tmp_path: Path) -> None:
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps({
        "when": "2026-11-01T10:00:00+00:00", "quick": True, "machine": {"cpus": 2},
        "rows": [{"id": "P1", "value": 1.0e6}, {"id": "P3", "value": 0.5},
                 {"id": "P6", "value": 20.0}, {"id": "K1", "value": 0.05}],
    }))  # fmt: skip
    baseline = load_baseline(saved)
    now = [
        {"id": "P1", "value": 1.5e6, "unit": "samples/s", "better": "higher"},
        {"id": "P3", "value": 1.0, "unit": "ms", "better": "lower"},  # doubled: worse
        {"id": "P6", "value": 2.0, "unit": "MB", "better": "lower"},  # a tenth: better
        {"id": "K1", "value": 0.052, "unit": "s", "better": "lower"},  # within 10 %: same
        {"id": "P9", "value": 3.0, "unit": "x", "better": "higher"},
    ]
    verdicts = {line.split()[0]: line.split()[-1] for line in format_comparison(now, baseline)
                .splitlines()}  # fmt: skip
    assert verdicts == {"P1": "better", "P3": "WORSE", "P6": "better", "K1": "same", "P9": "new"}


@pytest.mark.parametrize(
    "text", ["", "not json", '{"rows": []}', '{"rows": [{"id": "P1"}]}', '[1, 2]',
             '{"rows": [{"id": "P1", "value": "fast"}]}'],
)  # fmt: skip
def test_a_wrong_baseline_is_one_line_before_any_run(tmp_path: Path, text: str) -> None:
    saved = tmp_path / "old.json"
    saved.write_text(text)
    with pytest.raises(ValueError, match=r"old\.json"):
        load_baseline(saved)
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "bench", "--quick", "--baseline", str(saved)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "running" not in result.stderr
    assert "needlelab bench --json" in result.stderr
