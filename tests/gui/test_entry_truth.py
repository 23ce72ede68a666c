"""The monitor shows as entered exactly what the session file holds (issue 14, points 1-3).

Keys go to the focused widget as the window system delivers them; what was recorded is read
back from the file with `open_session` and judged by the tests' own rules (tests/gui/truth.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyqtgraph.Qt import QtCore

from needlelab.config import parse_config
from needlelab.events import CorrectionEvent, MarkerEvent, NeedleSiteEvent, ResponseEvent
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session
from needlelab.session import Session
from tests.gui.keys import focused, press, type_text
from tests.gui.truth import committed, file_entries, screen_entries

Qt = QtCore.Qt


def bare_session(tmp_path: Path) -> Session:
    """A session with no devices: the clinician's entries alone (quick to start and stop)."""
    return Session(parse_config({"session": {"patient_id": "KEYS01", "out_dir": str(tmp_path)}}))


def open_window(qtbot: Any, session: Session, autostart: bool = True) -> MonitorWindow:
    window = MonitorWindow(session, autostart=autostart)
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=5_000)
    if autostart:
        qtbot.waitUntil(lambda: session.recording, timeout=10_000)
    return window


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> Iterator[MonitorWindow]:
    win = open_window(qtbot, bare_session(tmp_path))
    yield win
    win.close()


def events_of(path: Path, kind: str) -> list[Any]:
    with open_session(path) as s:
        return s.events(kind)


def same_on_screen_as_in_file(window: MonitorWindow) -> None:
    committed(window.session)
    window.refresh()
    assert screen_entries(window) == file_entries(window.session.path)


def test_after_stop_keys_enter_nothing_and_the_screen_says_so(
    qtbot: Any, window: MonitorWindow
) -> None:
    # The case: Start → two answers (one exact) → Stop → Space 3 R Enter.
    press(qtbot, window, "Alt+3", "Space", "3", "R", "Return", "Space", "4", "R", "Return")
    same_on_screen_as_in_file(window)
    window.stop_recording()
    press(qtbot, window, "Space", "3", "R", "Return")
    assert "the recording has stopped: nothing entered" in window.statusBar().currentMessage()
    panel = window.localization_panel
    assert panel.entry_label.isVisible() and "Entry is OFF" in panel.entry_label.text()
    assert not panel.commit_button.isEnabled() and not panel.prompt_button.isEnabled()
    held = file_entries(window.session.path)
    assert len(held.answers) == 2 and held.level_exact_pct == 50.0
    assert screen_entries(window) == held
    assert "2 answers · level exact 50 %" in panel.accuracy_label.text()
    assert len(events_of(window.session.path, "prompt")) == 2


def test_before_start_nothing_is_entered_and_the_screen_says_so(qtbot: Any, tmp_path: Path) -> None:
    session = bare_session(tmp_path)
    window = open_window(qtbot, session, autostart=False)
    try:
        press(qtbot, window, "Alt+3", "Space", "3", "R", "Return", "N")
        assert "not recording yet (press Start): nothing entered" in (
            window.statusBar().currentMessage()
        )
        panel = window.localization_panel
        assert panel.entry_label.isVisible() and not panel.note_edit.isEnabled()
        assert focused(window) is window  # N did not open the (disabled) note field
        assert screen_entries(window) == file_entries(session.path)  # nothing, and no file
        window.start_recording()
        assert not panel.entry_label.isVisible() and panel.commit_button.isEnabled()
        press(qtbot, window, "Alt+3", "Space", "3", "R", "Return")
        same_on_screen_as_in_file(window)
        assert len(file_entries(session.path).answers) == 1  # only what came after Start
    finally:
        window.close()


def test_the_answer_text_field_gives_the_keys_back(qtbot: Any, window: MonitorWindow) -> None:
    panel = window.localization_panel
    press(qtbot, window, "Alt+3", "Space", "3", "R", "Tab")
    assert focused(window) is panel.text_edit
    type_text(qtbot, window, "burning, down the LR leg")  # L and R type: they are text here
    press(qtbot, window, "Return")  # commits the answer with its text, and gives keys back
    assert focused(window) is not panel.text_edit and panel.text_edit.text() == ""
    press(qtbot, window, "4", "L", "Return")  # the grammar's again: a second answer
    press(qtbot, window, "Tab")
    type_text(qtbot, window, "abc")
    press(qtbot, window, "Escape")  # leaves, keeping the text in the draft
    assert focused(window) is window and panel.text_edit.text() == "abc"
    press(qtbot, window, "5", "Tab", "Ctrl+Z")  # withdraws the last answer; the text stays
    assert panel.text_edit.text() == "abc"
    press(qtbot, window, "Return")  # (focus in the field) commits L5 with "abc"
    committed(window.session)
    responses = events_of(window.session.path, "response")
    assert [(r.level, r.side, r.text) for r in responses] == [
        ("L3", "R", "burning, down the LR leg"), ("L4", "L", ""), ("L5", None, "abc"),
    ]  # fmt: skip
    (undone,) = events_of(window.session.path, "correction")
    assert isinstance(undone, CorrectionEvent)
    assert (undone.replaces, undone.replacement) == (responses[1].id, None)
    same_on_screen_as_in_file(window)


def test_a_note_is_a_marker_and_never_an_answer(qtbot: Any, window: MonitorWindow) -> None:
    panel = window.localization_panel
    press(qtbot, window, "Alt+3", "Space", "N")
    assert focused(window) is panel.note_edit
    type_text(qtbot, window, "Needle repositioned 3 mm, R side")
    assert "not saved" in panel.note_state.text()
    press(qtbot, window, "Return")
    assert focused(window) is window and panel.note_edit.text() == ""
    press(qtbot, window, "3", "R", "Return")
    committed(window.session)
    (note,) = events_of(window.session.path, "marker")
    assert isinstance(note, MarkerEvent) and note.text == "Needle repositioned 3 mm, R side"
    (answer,) = events_of(window.session.path, "response")
    assert isinstance(answer, ResponseEvent)
    assert (answer.level, answer.side, answer.text) == ("L3", "R", "")
    same_on_screen_as_in_file(window)
    assert panel.shown_notes() == [f"#{note.id} Needle repositioned 3 mm, R side"]


def test_levels_are_keyed_by_their_own_number_and_site_keys_record_the_panel(
    qtbot: Any, window: MonitorWindow
) -> None:
    panel = window.localization_panel
    shown = (panel.level_combo.currentText(), panel.side_combo.currentText(),
             panel.muscle_combo.currentText())  # fmt: skip
    assert shown == ("T10", "R", "multifidus")  # what the next site key starts from
    press(qtbot, window, "Alt+3")  # the issue: this recorded L3 R with muscle ""
    press(qtbot, window, "Alt+L", "Alt+E", "Space", "3", "L", "Return")
    press(qtbot, window, "Space", "T", "1", "2", "R", "Return")
    qtbot.mouseClick(panel.level_buttons[9], Qt.MouseButton.LeftButton)  # S2 [S 2], tapped
    qtbot.mouseClick(panel.side_buttons[2], Qt.MouseButton.LeftButton)  # B both
    qtbot.mouseClick(panel.commit_button, Qt.MouseButton.LeftButton)
    committed(window.session)
    sites = events_of(window.session.path, "needle.site")
    assert all(isinstance(s, NeedleSiteEvent) for s in sites)
    assert [(s.level, s.side, s.muscle, s.estim_on) for s in sites] == [
        ("L3", "R", "multifidus", False), ("L3", "L", "multifidus", False),
        ("L3", "L", "multifidus", True),
    ]  # fmt: skip
    responses = events_of(window.session.path, "response")
    assert [(r.level, r.side, r.level_error, r.side_correct) for r in responses] == [
        ("L3", "L", 0, True), ("T12", "R", -3, False), ("S2", "both", 4, False),
    ]  # fmt: skip
    assert [b.text() for b in panel.level_buttons] == [
        "T10  [T 1 0]", "T11  [T 1 1]", "T12  [T 1 2]", "L1  [1]", "L2  [2]", "L3  [3]",
        "L4  [4]", "L5  [5]", "S1  [S 1]", "S2  [S 2]",
    ]  # fmt: skip
    same_on_screen_as_in_file(window)
    assert panel.site_label.text() == "L3 L multifidus · e-stim ON"


def test_after_a_failed_write_the_screen_shows_what_the_file_kept(tmp_path: Path) -> None:
    """The disk fills while answers are keyed in (in a child: RLIMIT_FSIZE at the file's size):
    the last answers taken may never reach the file; the window then shows what it holds."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.gui.failed_write_child", str(tmp_path)],
        capture_output=True, text=True, timeout=100, check=False,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["error"] and result["typed"] >= 1
    assert "the recording failed: nothing entered" in result["message"]
    assert "Entry is OFF: the recording failed" in result["entry_off"]
    held = file_entries(Path(result["path"]))
    shown = result["shown"]
    assert len(held.answers) >= 2  # the two before the disk filled, at least
    assert shown == {"answers": list(held.answers), "level_exact_pct": held.level_exact_pct,
                     "site": list(held.site) if held.site else None,
                     "notes": list(held.notes)}  # fmt: skip


def test_a_number_field_takes_digits_only_when_clicked_and_gives_them_back(
    qtbot: Any, tmp_path: Path
) -> None:
    config = parse_config({"session": {"patient_id": "ROM01", "out_dir": str(tmp_path),
                                       "protocol": "low-back-l3"}})  # fmt: skip
    window = open_window(qtbot, Session(config))
    protocol = window.protocol_panel
    try:
        qtbot.waitUntil(protocol.next_button.isEnabled, timeout=5_000)
        for _ in range(4):  # to phase 4, baseline movement: its fields are made now
            qtbot.mouseClick(protocol.next_button, Qt.MouseButton.LeftButton)
        spin = protocol.rom_spins["flexion"]
        press(qtbot, window, "4", "5")  # not clicked: the grammar's (level L4, then L5)
        assert spin.value() == 0 and window.localization_panel.keys.draft.level == "L5"
        qtbot.mouseClick(spin, Qt.MouseButton.LeftButton)
        assert focused(window) is spin
        spin.selectAll()
        type_text(qtbot, window, "45")
        press(qtbot, window, "Return")  # the field takes it, then the keys go back
        qtbot.waitUntil(lambda: focused(window) is not spin, timeout=2_000)
        assert spin.value() == 45.0
        press(qtbot, window, "Escape", "Alt+3", "Space", "3", "R", "Return")
        qtbot.mouseClick(protocol.rom_button, Qt.MouseButton.LeftButton)
        committed(window.session)
        answers = events_of(window.session.path, "response")
        assert [(a.level, a.side) for a in answers] == [("L3", "R")]
        rom = events_of(window.session.path, "rating.rom")
        assert [(r.movement, r.degrees) for r in rom] == [("flexion", 45.0), ("extension", 0.0)]
    finally:
        window.close()
