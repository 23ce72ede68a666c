"""The monitor shows what LSL exposes: a red banner while LSL listens beyond this machine, and a
status-bar note (not a red flag) when sharing on the LAN was the config's deliberate choice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from needlelab.config import parse_config
from needlelab.events import WarningEvent
from needlelab.lsl import pylsl_module
from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session

pylsl_module()  # loopback: the first LSL call of this test process


def test_the_monitor_shows_lsl_exposure_in_its_banner(qtbot: Any, tmp_path: Path) -> None:
    config = parse_config(
        {"session": {"patient_id": "MON01", "out_dir": str(tmp_path)}, "lsl": {"enabled": True}}
    )
    session = Session(config)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: session.recording, timeout=10_000)
        qtbot.waitUntil(window.banner.isVisible, timeout=5_000)
        assert re.search(r"TCP 0\.0\.0\.0:\d+ \(LSL data: needlelab events\)", window.banner.text())
        assert "share_on_lan = true" in window.banner.text()
        note = session.hub.emit(
            WarningEvent(code="lsl.shared", message="LSL shared as configured", source="lsl",
                         details={"deliberate": True})
        )  # fmt: skip
        qtbot.waitUntil(lambda: window.statusBar().currentMessage() == note.message, timeout=5_000)
        qtbot.wait(600)  # a few health ticks: the deliberate note never reaches the banner
        assert note.message not in window.banner.text() and window.banner.isVisible()
    finally:
        window.close()
