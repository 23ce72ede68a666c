"""The monitor shows a slow disk: the writer's `writer.backlog` warning goes in the red banner
while the file falls behind, and leaves it once the disk has caught up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from needlelab.config import parse_config
from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session


def test_the_monitor_banner_shows_a_slow_disk_until_it_catches_up(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's fault seam: commits take 2.5 s during the first 3 s of the recording.
    monkeypatch.setenv("NEEDLELAB_FAULT_SLOW_DISK", "2.5:0:3")
    config = parse_config({
        "session": {"patient_id": "MON02", "out_dir": str(tmp_path)},
        "devices": [{"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
                     "poll_interval_ms": 20, "simulator": {"transport": "pty"}}],
    })  # fmt: skip
    session = Session(config)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(
            lambda: "the disk is not keeping up" in window.banner.text(), timeout=10_000
        )
        assert window.banner.isVisible()
        qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=15_000)
        assert "caught up" in window.statusBar().currentMessage()
    finally:
        window.close()
