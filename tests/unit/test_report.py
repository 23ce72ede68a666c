"""The HTML report: it renders, and its sections and numbers are those of the session file."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

from needlelab.clinic.report import write_report, write_trend_report
from needlelab.clinic.scoring import score_session


def section_rows(page: str, section: str) -> list[list[str]]:
    """The cells of the table marked data-section=`section`, tags stripped."""
    table = re.search(rf'<table data-section="{section}">(.*?)</table>', page, re.S)
    assert table, f"no {section} table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.S)]
            for r in rows]  # fmt: skip


def test_the_report_has_every_section_with_the_files_numbers(
    hand_built_session: Path, tmp_path: Path
) -> None:
    path = write_report(hand_built_session, tmp_path)
    assert path.name == f"{hand_built_session.stem}.report.html"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    page = path.read_text()
    for title in ("Session", "Phases", "Stimulation dose", "Two-point discrimination",
                  "Localization", "Left/right judgement", "Pain and movement",
                  "EMG around e-stim", "Data quality"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page
    scores = score_session(hand_built_session)
    assert section_rows(page, "summary")[1][0] == "HAND01"
    tpd = section_rows(page, "tpd")
    assert tpd[1][0] == "pre L3 R vertical" and tpd[1][3] == f"{scores.tpd[0].threshold_mm:.1f} mm"
    assert tpd[1][4] == "50 %"  # false alarms
    change = section_rows(page, "tpd-change")
    assert change[1] == ["L3 R vertical", f"{scores.tpd_change['L3 R vertical']:.1f} mm"]
    assert section_rows(page, "localization")[1][:4] == ["3", "67 %", "0.33 segments", "67 %"]
    assert section_rows(page, "lrj")[1] == ["pre", "4", "50 %", "900 ms", "0.33"]
    assert section_rows(page, "ratings")[1] == ["NRS pain (0–10)", "6", "3"]
    assert section_rows(page, "ratings")[2] == ["ROM flexion", "40°", "55°"]
    dose = section_rows(page, "dose")
    # 2 s at 10 mA and 3 s at 12 mA: 5 s at 2 Hz, time-weighted mean 11.2 mA, highest 12.
    assert dose[1:] == [["stim ch1", "2.0 Hz", "5.0 s", "11.2 mA", "12.0 mA"],
                        ["stim ch1 total", "", "5.0 s", "", ""]]  # fmt: skip
    assert section_rows(page, "emg")[1][4:] == ["2.0 uV", "4.0 uV"]
    # No gap: no time without data, nothing lost (counted, inferred or unknown), full coverage.
    assert section_rows(page, "quality")[1][:9] == [
        "emg.emg", "800", "0", "0.00 s", "100.0 %", "0", "0", "0", "0.00 %"
    ]  # fmt: skip
    assert "1-up/2-down" in page and "mean distance at the last 6 reversals" in page
    assert page.count('src="data:image/png;base64,') == 3  # timeline, staircases, confusion


def test_trend_and_the_command_line(hand_built_session: Path, tmp_path: Path) -> None:
    path = write_trend_report("HAND01", hand_built_session.parent, tmp_path)
    page = path.read_text()
    rows = section_rows(page, "trend")
    assert len(rows) == 2 and "pre L3 R vertical: 36.7" in rows[1][2]
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "report", str(hand_built_session),
         "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / f"{hand_built_session.stem}.report.html").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "report", str(tmp_path / "nope.sqlite")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
