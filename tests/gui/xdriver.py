"""Driving the monitor through a real X server: key and pointer events made by xdotool (XTEST),
delivered by the X server to the window that has the X input focus, as a keyboard's and a
mouse's are. Used in the child process that tests/gui/test_real_x.py runs under its Xvfb."""

from __future__ import annotations

import subprocess

from pyqtgraph.Qt import QtGui, QtTest, QtWidgets

from needlelab.monitor.window import MonitorWindow

X_NAMES = {"Space": "space", "PageUp": "Prior", "PageDown": "Next", "Ctrl": "ctrl",
           "Alt": "alt", "Shift": "shift"}  # fmt: skip


def x_key(name: str) -> str:
    """A key name as the tests write it ("Alt+3", "Ctrl+Z", "T") in xdotool's keysyms."""
    *mods, key = name.split("+")
    key = X_NAMES.get(key, key.lower() if len(key) == 1 else key)
    return "+".join([*(X_NAMES[m] for m in mods), key])


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=20, capture_output=True)


def visible(widget: QtWidgets.QWidget) -> None:
    """Scroll a widget into view, as whoever taps it would."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QtWidgets.QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(widget)
        QtWidgets.QApplication.processEvents()


class XDriver:
    """Keys and clicks through the X server."""

    def show(self, window: MonitorWindow) -> None:
        window.show()
        QtTest.QTest.qWaitForWindowExposed(window)
        xdotool("windowfocus", "--sync", str(int(window.winId())))
        QtTest.QTest.qWaitForWindowActive(window)
        self.settle(window)

    def press(self, window: MonitorWindow, name: str) -> None:
        xdotool("key", x_key(name))

    def type(self, window: MonitorWindow, text: str) -> None:
        if text:
            xdotool("type", "--delay", "2", "--", text)

    def click(self, window: MonitorWindow, widget: QtWidgets.QWidget) -> None:
        visible(widget)
        self.settle(window)
        where = widget.mapToGlobal(widget.rect().center())
        # No --sync: it waits for the pointer to leave where it was, forever when it is already
        # there (a second click on the same button). The server takes XTEST's motion and button
        # events in order, so the click lands where the pointer was moved.
        xdotool("mousemove", str(where.x()), str(where.y()), "click", "1")

    def pick(self, window: MonitorWindow, combo: QtWidgets.QComboBox, index: int) -> None:
        if not (combo.isEnabled() and combo.isVisible()):
            return  # a click on a disabled list opens nothing: the keys would go elsewhere
        self.click(window, combo)  # opens its list; the keys below go to the list
        self.settle(window)
        xdotool("key", "Home", *(["Down"] * index), "Return")
        self.settle(window)

    def settle(self, window: MonitorWindow) -> None:
        # Every event the X server made for us before this round trip is in, and handled.
        QtGui.QGuiApplication.sync()
        QtWidgets.QApplication.processEvents()
