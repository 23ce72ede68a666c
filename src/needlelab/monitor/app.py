"""Running the monitor: a Qt application around one session's window."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pyqtgraph as pg

from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session


def run_monitor(
    session: Session,
    autostart: bool = False,
    duration_s: float | None = None,
    script: Callable[[Session, threading.Event], None] | None = None,
) -> int:
    """Show the monitor for `session` until the window is closed; Qt's exit status.

    The session is stopped (its file closed) however the window ends.
    """
    app = pg.mkQApp("needlelab")
    window = MonitorWindow(session, autostart=autostart, duration_s=duration_s, script=script)
    window.show()
    try:
        return int(app.exec())
    finally:
        if session.recording:
            session.stop("monitor closed")
