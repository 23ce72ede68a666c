"""The HTML report: it renders, and its sections and numbers are those of the session file."""

from __future__ import annotations

import html
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
    # Within needling, 2 s at 10 mA and 1.995 s at 12 mA: 3.995 s at 2 Hz, time-weighted mean
    # (20 + 23.94) / 3.995 = 11.0 mA, highest 12; the 1.005 s at 12 mA after it is flagged.
    assert dose[1:] == [["stim ch1", "2.0 Hz", "4.0 s", "11.0 mA", "12.0 mA"],
                        ["stim ch1 total", "", "4.0 s", "", ""]]  # fmt: skip
    assert (
        "Stimulation outside needling: the stimulator output was on outside "
        "“needling with e-stim”: stim ch1 1.0 s (up to 12.0 mA)" in page
    )
    assert section_rows(page, "emg")[1][4:] == ["2.0 µV", "4.0 µV"]
    # No gap: no time without data, nothing lost (counted, inferred or unknown), full coverage.
    assert section_rows(page, "quality")[1][:9] == [
        "emg.emg", "800", "0", "0.00 s", "100.0 %", "0", "0", "0", "0.00 %"
    ]  # fmt: skip
    assert "1-up/2-down" in page and "mean distance at the last 6 reversals" in page
    # timeline, dose, staircases, localization map, LRJ, pain and movement, EMG
    assert page.count('src="data:image/png;base64,') == 7


def test_trend_and_the_command_line(hand_built_session: Path, tmp_path: Path) -> None:
    path = write_trend_report("HAND01", hand_built_session.parent, tmp_path)
    page = path.read_text()
    rows = section_rows(page, "trend")
    assert len(rows) == 2 and rows[1][0] == "1" and "pre L3 R vertical: 36.7" in rows[1][3]
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


def test_stimulation_only_within_needling_is_counted_and_not_flagged(tmp_path: Path) -> None:
    from needlelab.clinic.protocol import load_protocol
    from needlelab.config import parse_config
    from needlelab.events import PhaseEvent, ProtocolEvent, StimSettings, StimSettingsEvent
    from needlelab.session import Session

    s = 1_000_000_000
    session = Session(parse_config({"session": {"patient_id": "IN01", "out_dir": str(tmp_path)}}))
    session.start()
    hub = session.hub
    template = load_protocol("low-back-l3").model_dump()
    hub.emit(ProtocolEvent(t_ns=s // 10, name="low-back-l3", template=template))
    hub.emit(PhaseEvent(t_ns=1 * s, name="needling with e-stim", boundary="start"))
    # 8 mA from 2 to 3.5 s, off, then 9 mA 100 Hz from 4 s until the phase ends at 5 s (the
    # output stays on after it, but at 0 mA: not stimulation).
    for t, ma, hz, on in ((0.5, 0.0, 2, False), (2.0, 8.0, 2, True), (3.5, 8.0, 2, False),
                          (4.0, 9.0, 100, True), (5.0, 0.0, 100, True)):  # fmt: skip
        settings = StimSettings(frequency_hz=hz, pulse_width_us=250, intensity_ma=ma, output_on=on)
        hub.emit(StimSettingsEvent(t_ns=int(t * s), settings=settings, source="stim"))
    hub.emit(PhaseEvent(t_ns=5 * s, name="needling with e-stim", boundary="end"))
    hub.emit(PhaseEvent(t_ns=6 * s, name="post pain", boundary="start"))
    hub.emit(PhaseEvent(t_ns=7 * s, name="post pain", boundary="end"))
    session.stop()
    page = write_report(session.path, tmp_path).read_text()
    assert 'class="flag"' not in page and "Stimulation outside needling" not in page
    assert section_rows(page, "dose")[1:] == [
        ["stim ch1", "2.0 Hz", "1.5 s", "8.0 mA", "8.0 mA"],
        ["stim ch1", "100.0 Hz", "1.0 s", "9.0 mA", "9.0 mA"],
        ["stim ch1 total", "", "2.5 s", "", ""],
    ]
    assert [r[0] for r in section_rows(page, "phases")[1:]] == ["needling with e-stim",
                                                               "post pain"]  # fmt: skip


def test_a_recording_without_phases_counts_its_whole_length(tmp_path: Path) -> None:
    from needlelab.config import parse_config
    from needlelab.events import StimSettings, StimSettingsEvent
    from needlelab.session import Session

    s = 1_000_000_000
    session = Session(parse_config({"session": {"patient_id": "REC01", "out_dir": str(tmp_path)}}))
    session.start()
    for t, on in ((1.0, True), (3.0, False)):  # 6 mA at 2 Hz from 1 to 3 s
        settings = StimSettings(frequency_hz=2, pulse_width_us=250, intensity_ma=6, output_on=on)
        session.hub.emit(StimSettingsEvent(t_ns=int(t * s), settings=settings, source="unit"))
    session.stop()
    page = write_report(session.path, tmp_path).read_text()
    assert "No protocol phase was recorded: the dose covers the whole recording" in page
    assert 'class="flag"' not in page
    assert section_rows(page, "dose")[-1] == ["unit ch1 total", "", "2.0 s", "", ""]


def test_a_template_shortened_on_purpose_says_so_in_the_report(tmp_path: Path) -> None:
    from needlelab.clinic.protocol import load_protocol
    from needlelab.config import parse_config
    from needlelab.events import ProtocolEvent
    from needlelab.session import Session

    session = Session(parse_config({"session": {"patient_id": "SH01", "out_dir": str(tmp_path)}}))
    session.start()
    template = load_protocol("low-back-l3-demo").model_dump()
    said = template["protocol"]["shortened"]
    assert "24" in said  # the shipped demo template's own words
    session.hub.emit(ProtocolEvent(t_ns=1, name="low-back-l3-demo", template=template))
    session.stop()
    page = write_report(session.path, tmp_path).read_text()
    assert f"Shortened protocol: {html.escape(said)}" in page
    full = load_protocol("low-back-l3").model_dump()
    assert not full["protocol"]["shortened"]  # the full template says nothing of the kind
