"""`needlelab bench`'s table: every figure whole, columns aligned, the advantage over the peer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.bench import format_comparison, format_table, load_baseline, source

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


SAVED = {
    "when": "2026-12-01T22:30:00+00:00", "version": "0.9.0", "quick": True,
    "machine": {"cpus": 2, "python": "3.12.1", "platform": "Linux-6.1-x86_64",
                "processor": "x86_64"},
    "rows": [
        {"id": "P1", "figure": "ingest", "value": 484176.0, "unit": "samples/s",
         "goal": ">= 0.9 x peer", "met": False, "peer": "minimal same-layout writer | WAL",
         "peer_value": 947338.0, "ratio": 0.511},
        {"id": "P1c", "figure": "extra work", "value": 61.2, "unit": "us",
         "goal": "measured, no goal", "met": None, "peer": "", "peer_value": None, "ratio": None},
    ],
    "crashed": ["sync.py"],
}  # fmt: skip


def test_markdown_is_one_line_of_date_and_machine_then_one_table(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(SAVED))
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.bench", str(saved)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "needlelab 0.9.0, `needlelab bench --quick`, 2026-12-01T22:30:00+00:00; machine: 2 CPUs "
        "(x86_64), Python 3.12.1, Linux-6.1-x86_64"
    )
    assert lines[1] == ""
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 4  # header, rule, two rows: one table
    # Cells split at every | not escaped: a markdown reader's view of the row.
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]
    assert all(len(row) == 8 for row in cells)  # the | inside the peer's text is escaped
    assert cells[2] == [
        "P1", "ingest", "484,176 samples/s", ">= 0.9 x peer", "**no**",
        "minimal same-layout writer \\| WAL", "947,338 samples/s", "0.51x",
    ]  # fmt: skip
    assert cells[3] == ["P1c", "extra work", "61.2 us", "measured, no goal", "—", "—", "—", "—"]
    assert lines[-1] == "crashed (no figures): sync.py"


def test_a_run_names_the_commit_it_measured_and_whether_files_differed(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "x.py").write_text("a = 1\n")
    git("add", "x.py")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    (tmp_path / "new.json").write_text("{}")  # an untracked file (a run's own JSON) is no change
    assert source(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "x.py").write_text("a = 2\n")
    assert source(tmp_path) == {"commit": head, "modified": True}
    assert source(tmp_path / "missing") is None
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({**SAVED, "source": {"commit": head, "modified": True}}))
    line = subprocess.run(
        [sys.executable, "-m", "needlelab.bench", str(saved)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()[0]  # fmt: skip
    assert line.startswith(
        f"needlelab 0.9.0, `needlelab bench --quick` of commit {head[:12]} with uncommitted "
        "changes, 2026-12-01T22:30:00+00:00; machine:"
    )


def test_markdown_of_a_wrong_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    saved = tmp_path / "old.json"
    saved.write_text('{"rows": []}')
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.bench", str(saved)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "old.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_figure_with_no_goal_is_neither_met_nor_missed() -> None:
    row = {"id": "P1c", "figure": "extra work", "value": 61.2, "unit": "us",
           "goal": "measured, no goal", "met": None, "peer": "", "peer_value": None,
           "ratio": None}  # fmt: skip
    line = format_table([row]).splitlines()[1]
    assert " yes " not in line and " NO " not in line
    assert line.split()[-3:] == ["—", "—", "—"]  # met, peer value, vs peer


def test_readme_table_is_the_kept_run_as_printed() -> None:
    """The README's figures are one `needlelab bench --json` run, printed by
    `python -m needlelab.bench`, never a hand-copied or edited set: the table there must be,
    line for line, what that command prints of the run kept in `benchmarks/runs/`."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"python -m needlelab\.bench (benchmarks/runs/[\w.-]+\.json)", readme)
    assert named, "the README names no kept run in benchmarks/runs/"
    assert len(set(named)) == 1, f"the README names more than one kept run: {set(named)}"
    printed = subprocess.run(
        [sys.executable, "-m", "needlelab.bench", str(root / named[0])],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert printed.splitlines()[0] in readme, "the README's run line is not the kept run's"
    assert printed in readme, "the README's table differs from the kept run as printed"
    assert readme.count("| # | figure | value | goal |") == 1, "more than one figure table"
