"""Hands busy (issue 14, point 4): prompt and commit from a foot pedal's keys (`[monitor.keys]`)
wherever the focus is, and every entry from large touch targets an assistant can tap; the file
is read back after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyqtgraph.Qt import QtCore, QtTest, QtWidgets

from needlelab.config import parse_config
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session
from needlelab.session import Session
from tests.gui.keys import focused, press, type_text
from tests.gui.truth import committed

Qt = QtCore.Qt
FINGER_PX = 48  # a fingertip target: 9 mm at 96 dpi (Apple 44 pt, Material 48 dp)


def pedal_window(qtbot: Any, tmp_path: Path, keys: dict[str, list[str]] | None) -> MonitorWindow:
    config: dict[str, Any] = {"session": {"patient_id": "PEDAL01", "out_dir": str(tmp_path)}}
    if keys is not None:
        config["monitor"] = {"keys": keys}
    window = MonitorWindow(Session(parse_config(config)), autostart=True)
    qtbot.addWidget(window)
    window.resize(1500, 1000)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: window.session.recording and window.isActiveWindow(), timeout=10_000)
    return window


def recorded(window: MonitorWindow) -> dict[str, list[Any]]:
    committed(window.session)
    with open_session(window.session.path) as s:
        return {kind: s.events(kind) for kind in ("prompt", "response", "marker")}


def test_a_presenter_pedal_prompts_and_commits_wherever_the_focus_is(
    qtbot: Any, tmp_path: Path
) -> None:
    window = pedal_window(qtbot, tmp_path, {"prompt": ["PageDown"], "commit": ["PageUp"]})
    panel = window.localization_panel
    try:
        assert panel.prompt_button.text() == "Prompt  [Space · PageDown]"
        press(qtbot, window, "Alt+3", "PageDown")  # the clinician's foot: the question is asked
        qtbot.wait(150)
        press(qtbot, window, "3", "R", "PageUp")  # an assistant keyed the answer; foot commits
        press(qtbot, window, "PageDown", "4", "Tab")
        type_text(qtbot, window, "ache")
        press(qtbot, window, "PageUp")  # committed from inside the text field, with its text
        assert focused(window) is window
        press(qtbot, window, "N")
        type_text(qtbot, window, "pedal while typing")
        press(qtbot, window, "PageDown")  # a prompt; the note's text stays in its field
        assert focused(window) is panel.note_edit and panel.note_edit.text() == "pedal while typing"
        events = recorded(window)
        prompts, responses = events["prompt"], events["response"]
        assert len(prompts) == 3 and events["marker"] == []
        assert [(r.level, r.side, r.text) for r in responses] == [
            ("L3", "R", ""),
            ("L4", None, "ache"),
        ]
        assert [r.prompt_id for r in responses] == [prompts[0].id, prompts[1].id]
        assert responses[0].latency_ms is not None and responses[0].latency_ms >= 140
    finally:
        window.close()


def test_the_default_pedal_keys_are_f13_and_f14(qtbot: Any, tmp_path: Path) -> None:
    window = pedal_window(qtbot, tmp_path, None)
    try:
        press(qtbot, window, "Alt+5", "F13", "5", "L", "F14")
        events = recorded(window)
        assert len(events["prompt"]) == 1
        assert [(r.level, r.side) for r in events["response"]] == [("L5", "L")]
    finally:
        window.close()


def tap(widget: QtWidgets.QWidget) -> None:
    """A finger on the widget's centre: a touch press and release on its window, as a touch
    screen sends them (Qt finds the widget under the finger)."""
    device = QtTest.QTest.createTouchDevice()
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QtWidgets.QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:  # scrolled into view first, as the assistant would
        parent.ensureWidgetVisible(widget)
        QtTest.QTest.qWait(20)
    top = widget.window()
    where = widget.mapTo(top, widget.rect().center())
    for step in ("press", "release"):
        sequence = QtTest.QTest.touchEvent(top.windowHandle(), device)
        getattr(sequence, step)(0, where, top.windowHandle())
        sequence.commit()
        QtTest.QTest.qWait(20)


def test_an_assistant_can_enter_a_whole_answer_by_touch(qtbot: Any, tmp_path: Path) -> None:
    window = pedal_window(qtbot, tmp_path, None)
    panel = window.localization_panel
    try:
        targets = [panel.prompt_button, panel.commit_button, panel.correct_button,
                   panel.undo_button, panel.note_button, *panel.level_buttons,
                   *panel.side_buttons, *panel.word_buttons]  # fmt: skip
        for target in targets:
            assert target.height() >= FINGER_PX and target.width() >= FINGER_PX, target.text()
        assert panel.prompt_button.height() >= 60 and panel.commit_button.height() >= 60
        level = {b.text().split()[0]: b for b in panel.level_buttons}
        tap(panel.prompt_button)
        tap(level["T12"])
        tap(panel.side_buttons[1])  # R
        tap(panel.word_buttons[5])  # F6 electric
        tap(panel.commit_button)
        qtbot.wait(50)
        (response,) = recorded(window)["response"]
        assert (response.level, response.side, response.descriptors) == ("T12", "R", ("electric",))
    finally:
        window.close()
