"""The monitor under a real X server, keys and clicks sent by xdotool (issue 14's cases, seen
by hand under Xvfb, then the entry property). Run by tests/gui/test_real_x.py in a child
process with DISPLAY at its Xvfb and QT_QPA_PLATFORM=xcb; the file is read back every time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from needlelab.config import parse_config
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session
from needlelab.session import Session
from tests.gui.entry_machine import EntryMachine
from tests.gui.truth import committed, file_entries, screen_entries
from tests.gui.xdriver import XDriver

pytestmark = pytest.mark.skipif(
    os.environ.get("NEEDLELAB_XVFB_CHILD") != "1",
    reason="run by tests/gui/test_real_x.py, under the Xvfb it starts",
)
SOAK = settings.default.max_examples == settings.get_profile("soak").max_examples
X = XDriver()


class XEntryMachine(EntryMachine):
    driver = X


@pytest.fixture
def window(qapp: Any, tmp_path: Path) -> Iterator[MonitorWindow]:
    assert qapp.platformName() == "xcb"
    session = Session(parse_config({"session": {"patient_id": "XKEYS", "out_dir": str(tmp_path)}}))
    win = MonitorWindow(session, autostart=True)
    win.resize(1500, 1000)
    X.show(win)
    deadline = 0
    while not session.recording and deadline < 500:
        X.settle(win)
        deadline += 1
    assert session.recording
    yield win
    win.close()
    session.stop()


def keys(window: MonitorWindow, *names: str) -> None:
    for name in names:
        X.press(window, name)
    X.settle(window)


def check(window: MonitorWindow) -> None:
    committed(window.session)
    X.settle(window)
    window.refresh()
    assert screen_entries(window) == file_entries(window.session.path)


def recorded(window: MonitorWindow, kind: str) -> list[Any]:
    committed(window.session)
    with open_session(window.session.path) as s:
        return s.events(kind)


def test_keys_after_stop_are_refused_and_the_screen_holds_what_the_file_does(
    window: MonitorWindow,
) -> None:
    keys(window, "Alt+3", "Space", "3", "R", "Return", "Space", "4", "R", "Return")
    check(window)
    X.click(window, window.recording_bar.stop_button)
    X.settle(window)
    assert not window.session.recording
    keys(window, "Space", "6", "R", "Return", "Space", "3", "R", "Return")
    held = file_entries(window.session.path)
    assert len(held.answers) == 2 and held.level_exact_pct == 50.0
    check(window)
    assert "nothing entered" in window.statusBar().currentMessage()


def test_text_fields_give_the_keys_back_and_notes_are_markers(window: MonitorWindow) -> None:
    panel = window.localization_panel
    keys(window, "Alt+3", "Space", "3", "R", "Tab")
    X.type(window, "deep ache, L leg")
    keys(window, "Return", "4", "L", "Return")  # the issue: 4 and L went into the field
    keys(window, "Tab")
    X.type(window, "xyz")
    keys(window, "Ctrl+Z")  # withdraws the L4 answer; the text is not undone
    X.settle(window)
    assert panel.text_edit.text() == "xyz"
    keys(window, "Escape", "N")
    X.type(window, "Needle out 2 mm")
    keys(window, "Return", "5", "R")
    responses = recorded(window, "response")
    assert [(r.level, r.side, r.text) for r in responses] == [
        ("L3", "R", "deep ache, L leg"), ("L4", "L", ""),
    ]  # fmt: skip
    (withdrawn,) = recorded(window, "correction")
    assert (withdrawn.replaces, withdrawn.replacement) == (responses[1].id, None)
    (note,) = recorded(window, "marker")
    assert note.text == "Needle out 2 mm"
    assert panel.keys.draft.level == "L5" and panel.keys.draft.text == "xyz"  # 5 R: a draft
    check(window)


def test_level_keys_are_numbers_and_the_site_is_what_the_panel_shows(
    window: MonitorWindow,
) -> None:
    keys(window, "Alt+3", "Alt+L", "Alt+E", "Space", "3", "L", "Return")
    keys(window, "Space", "T", "1", "2", "R", "Return")
    X.pick(window, window.localization_panel.muscle_combo, 1)  # erector spinae, by the list
    keys(window, "Alt+M")
    sites = recorded(window, "needle.site")
    assert [(s.level, s.side, s.muscle, s.estim_on) for s in sites] == [
        ("L3", "R", "multifidus", False), ("L3", "L", "multifidus", False),
        ("L3", "L", "multifidus", True), ("L3", "L", "erector spinae", True),
        ("L3", "midline", "erector spinae", True),
    ]  # fmt: skip
    responses = recorded(window, "response")
    assert [(r.level, r.side, r.level_error) for r in responses] == [
        ("L3", "L", 0), ("T12", "R", -3),
    ]  # fmt: skip
    check(window)


@pytest.mark.timeout(7200 if SOAK else 300)
def test_the_screen_shows_what_the_file_holds_with_keys_through_x(qapp: Any) -> None:
    run_state_machine_as_test(
        XEntryMachine,
        settings=settings(
            max_examples=500 if SOAK else int(os.environ.get("NEEDLELAB_X_SEQUENCES", "2")),
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
