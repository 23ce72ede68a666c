"""The live monitor: pyqtgraph traces, stimulator strip, device health, needling and localization.

Qt lives only here, and only on the Qt main thread: the window pulls from the hub's ring buffers
and recent events on a QTimer and never touches device I/O, so devices and the writer keep going
if the GUI stalls. It needs the `gui` extra (PySide6-Essentials, or PyQt6, and pyqtgraph).
"""

from __future__ import annotations

import os
import sys

GUI_EXTRA_HINT = "the monitor needs the GUI extra: pip install 'needlelab[gui]'"


def gui_missing() -> str | None:
    """Why the monitor cannot run here (a one-line hint), or None if it can."""
    try:
        import pyqtgraph  # noqa: F401
        from pyqtgraph.Qt import QtWidgets  # noqa: F401
    except Exception as exc:  # ImportError, or a Qt binding that fails to load its libraries
        return f"{GUI_EXTRA_HINT} ({type(exc).__name__}: {exc})"
    return None


def display_available() -> bool:
    """Whether a window can be shown to someone: a desktop session (Qt's offscreen platform
    does not count: it is for tests and screenshots)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
