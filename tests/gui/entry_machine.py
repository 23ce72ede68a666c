"""A hypothesis state machine over the monitor's whole entry grammar: site keys, prompts,
answers, descriptors, free text, notes, corrections, withdrawals, taps on the buttons, site
widgets, pause, stop and start. After every step it waits for the writer's commit and checks
that the entries on screen are the entries in the session file (tests/gui/truth.py).

The keys reach the window through a `Driver`: Qt's own event path (`QtDriver`, offscreen) or a
real X server (the xdotool driver of tests/gui/xvfb_cases.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pyqtgraph.Qt import QtCore, QtTest, QtWidgets

from needlelab.config import parse_config
from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session
from tests.gui.keys import MODIFIERS, focused
from tests.gui.truth import committed, file_entries, screen_entries

Qt = QtCore.Qt

GRAMMAR_KEYS = (
    ["Space", "Return", "Ctrl+Return", "Ctrl+Z", "Escape", "T", "S", "L", "R", "B", "U", "X"]
    + [str(d) for d in range(10)]
    + [f"F{i}" for i in range(1, 9)]
    + [f"Alt+{k}" for k in "0123456789TSLRME"]
)
WORDS = st.text(alphabet="abLR12 ", max_size=10)


class Driver(Protocol):
    """How keys and taps reach the window."""

    def show(self, window: MonitorWindow) -> None:
        """Show the window and give it the keyboard."""

    def press(self, window: MonitorWindow, name: str) -> None: ...

    def type(self, window: MonitorWindow, text: str) -> None: ...

    def click(self, window: MonitorWindow, widget: QtWidgets.QWidget) -> None: ...

    def pick(self, window: MonitorWindow, combo: QtWidgets.QComboBox, index: int) -> None: ...

    def settle(self, window: MonitorWindow) -> None:
        """Return once the window has handled everything sent so far."""


class QtDriver:
    """Qt's event path: key events to the focused widget, clicks on the widget."""

    def show(self, window: MonitorWindow) -> None:
        window.show()
        window.activateWindow()
        QtTest.QTest.qWaitForWindowActive(window)

    def press(self, window: MonitorWindow, name: str) -> None:
        *mods, key = name.split("+")
        modifier = Qt.KeyboardModifier.NoModifier
        for mod in mods:
            modifier |= MODIFIERS[mod]
        QtTest.QTest.keyClick(focused(window), getattr(Qt.Key, f"Key_{key}"), modifier)

    def type(self, window: MonitorWindow, text: str) -> None:
        QtTest.QTest.keyClicks(focused(window), text)

    def click(self, window: MonitorWindow, widget: QtWidgets.QWidget) -> None:
        QtTest.QTest.mouseClick(widget, Qt.MouseButton.LeftButton)

    def pick(self, window: MonitorWindow, combo: QtWidgets.QComboBox, index: int) -> None:
        if combo.isEnabled() and combo.isVisible():  # as a choice in its list: `activated`
            combo.setCurrentIndex(index)
            combo.activated.emit(index)

    def settle(self, window: MonitorWindow) -> None:
        QtWidgets.QApplication.processEvents()


class EntryMachine(RuleBasedStateMachine):
    """One monitor on a session with no devices, driven by `driver`."""

    driver: Driver = QtDriver()

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="needlelab-entry-")
        config = parse_config({"session": {"patient_id": "PROP01", "out_dir": self._tmp.name}})
        self.session = Session(config)
        self.window = MonitorWindow(self.session)
        self.window.resize(1400, 1000)
        self.driver.show(self.window)
        self.driver.settle(self.window)
        self.panel = self.window.localization_panel

    def teardown(self) -> None:
        self.window.close()
        self.session.stop()
        self.window.deleteLater()
        QtWidgets.QApplication.processEvents()
        self._tmp.cleanup()

    # -- the grammar -------------------------------------------------------------------------------
    @rule(names=st.lists(st.sampled_from(GRAMMAR_KEYS), min_size=1, max_size=4))
    def keys(self, names: list[str]) -> None:
        for name in names:
            self.driver.press(self.window, name)

    @rule(words=WORDS, end=st.sampled_from(["Return", "Escape", "Ctrl+Return", "Ctrl+Z"]))
    def free_text(self, words: str, end: str) -> None:
        self.driver.press(self.window, "Tab")
        self.driver.type(self.window, words)
        self.driver.press(self.window, end)

    @rule(words=WORDS, end=st.sampled_from(["Return", "Escape"]))
    def note(self, words: str, end: str) -> None:
        self.driver.press(self.window, "N")
        self.driver.type(self.window, words)
        self.driver.press(self.window, end)

    @rule(which=st.sampled_from(["prompt", "commit", "correct", "undo", "note"]))
    def tap_action(self, which: str) -> None:
        panel = self.panel
        widget = {"prompt": panel.prompt_button, "commit": panel.commit_button,
                  "correct": panel.correct_button, "undo": panel.undo_button,
                  "note": panel.note_button}[which]  # fmt: skip
        self.driver.click(self.window, widget)

    @rule(data=st.data())
    def tap_answer(self, data: st.DataObject) -> None:
        panel = self.panel
        buttons = panel.level_buttons + panel.side_buttons + panel.word_buttons
        self.driver.click(self.window, data.draw(st.sampled_from(buttons)))

    @rule(data=st.data())
    def site_widget(self, data: st.DataObject) -> None:
        panel = self.panel
        combo = data.draw(st.sampled_from([panel.level_combo, panel.side_combo,
                                           panel.muscle_combo, None]))  # fmt: skip
        if combo is None:
            self.driver.click(self.window, panel.estim_check)
        else:
            index = data.draw(st.integers(0, combo.count() - 1))
            self.driver.pick(self.window, combo, index)

    @rule(which=st.sampled_from(["start", "pause", "stop"]))
    def recording(self, which: str) -> None:
        bar = self.window.recording_bar
        widget = {"start": bar.start_button, "pause": bar.pause_button,
                  "stop": bar.stop_button}[which]  # fmt: skip
        self.driver.click(self.window, widget)
        if which == "start":  # the click starts it on the next turn of the event loop
            self.driver.settle(self.window)

    # -- the invariant -----------------------------------------------------------------------------
    @invariant()
    def the_screen_shows_what_the_file_holds(self) -> None:
        self.driver.settle(self.window)
        committed(self.session)
        self.window.refresh()
        on_screen = screen_entries(self.window)
        in_file = file_entries(Path(self.session.path))
        assert on_screen == in_file, (on_screen, in_file, self.panel.site_label.text())
        closed = self.session.localization.closed
        assert self.panel.entry_label.isVisibleTo(self.window) == (closed is not None)
        assert self.panel.commit_button.isEnabled() == (closed is None)
