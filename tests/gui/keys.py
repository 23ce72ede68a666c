"""Key presses for GUI tests, the way a keyboard's reach the monitor: to the widget that has the
focus (Qt's window-system path), never straight into a chosen widget."""

from __future__ import annotations

from typing import Any

from pyqtgraph.Qt import QtCore, QtWidgets

Qt = QtCore.Qt
MODIFIERS = {
    "Ctrl": Qt.KeyboardModifier.ControlModifier,
    "Alt": Qt.KeyboardModifier.AltModifier,
    "Shift": Qt.KeyboardModifier.ShiftModifier,
}


def focused(window: QtWidgets.QWidget) -> QtWidgets.QWidget:
    """Where a key typed now goes: the focus widget of the active window, else the window."""
    focus = QtWidgets.QApplication.focusWidget()
    return focus if focus is not None and focus.window() is window else window


def press(qtbot: Any, window: QtWidgets.QWidget, *names: str) -> None:
    """Press keys by name ("Alt+3", "Space", "T", "Return", "Ctrl+Z", "F13", "PageDown")."""
    for name in names:
        *mods, key = name.split("+")
        modifier = Qt.KeyboardModifier.NoModifier
        for mod in mods:
            modifier |= MODIFIERS[mod]
        code = getattr(Qt.Key, f"Key_{key}")
        qtbot.keyClick(focused(window), code, modifier)


def type_text(qtbot: Any, window: QtWidgets.QWidget, text: str) -> None:
    """Type text where the focus is, a character at a time."""
    qtbot.keyClicks(focused(window), text)
