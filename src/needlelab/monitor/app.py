"""Running the monitor: a Qt application around one session's window."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyqtgraph as pg

from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session


@dataclass(frozen=True)
class MonitorResult:
    """How a monitor run ended: Qt's exit status, and the report it wrote (None if none)."""

    status: int
    report: Path | None


def run_monitor(
    session: Session,
    autostart: bool = False,
    duration_s: float | None = None,
    script: Callable[[Session, threading.Event], None] | None = None,
) -> MonitorResult:
    """Show the monitor for `session` until the window is closed (by the user, or by itself
    once a run with a set end, a script or `duration_s`, is over and its report written).

    The session is stopped (its file closed) however the window ends.
    """
    app = pg.mkQApp("needlelab")
    window = MonitorWindow(session, autostart=autostart, duration_s=duration_s, script=script)
    window.show()
    try:
        status = int(app.exec())
    finally:
        if session.recording:
            session.stop("monitor closed")
    return MonitorResult(status, window.report_path)
