"""Before Start and after the end (issue 14, points 6 and 7): devices previewed before anything
is recorded, and visibly so; the end of the protocol said, stopped and reported; after a stop
nothing of the devices shown as live; a run with a set end closes by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyqtgraph.Qt import QtCore

from needlelab.config import SessionConfig, load_config, parse_config
from needlelab.events import RecordingEvent
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session, verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session

Qt = QtCore.Qt
NEEDLELAB = str(Path(sys.executable).with_name("needlelab"))


def demo_config(tmp_path: Path) -> SessionConfig:
    config = load_config(configs_dir() / "demo.toml")
    return config.model_copy(
        update={"session": config.session.model_copy(update={"out_dir": tmp_path})}
    )


def test_devices_are_previewed_before_start_and_nothing_is_recorded(
    qtbot: Any, tmp_path: Path
) -> None:
    session = Session(demo_config(tmp_path), tmp_path)
    window = MonitorWindow(session)  # no autostart: the preview
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: "emg" in window.device_panel.rows, timeout=15_000)
        qtbot.waitUntil(
            lambda: (
                window.device_panel.row_texts("emg")[1] == "streaming"
                and "/ 2000 Hz" in window.device_panel.row_texts("emg")[2]
                and not window.device_panel.row_texts("emg")[2].startswith("…")
            ),
            timeout=20_000,
        )
        assert window.recording_bar.indicator.text() == "● PREVIEW · NOT RECORDING"
        assert window.device_caption.text().startswith("PREVIEW: the devices are connected")
        assert window.stim_label.text().startswith("PREVIEW (not recorded)")
        assert window.localization_panel.entry_label.isVisible()
        assert window.traces.lanes and window.traces._curves[0].getData()[0] is not None
        assert list(tmp_path.iterdir()) == []  # connected, and nothing written anywhere
        qtbot.wait(1500)  # a stretch of preview that must not reach the file
        start_clicked_ns = session.clock.now_ns()
        qtbot.mouseClick(window.recording_bar.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: session.recording, timeout=10_000)
        assert window.recording_bar.indicator.text() == "● RECORDING"
        assert window.device_caption.text() == ""
        qtbot.waitUntil(lambda: session.devices["emg"].stats.samples > 2000, timeout=20_000)
        window.stop_recording(report=False)
    finally:
        window.close()
    assert verify_report(session.path)["ok"]
    with open_session(session.path) as s:
        (start,) = [e for e in s.events("recording") if isinstance(e, RecordingEvent)
                    and e.action == "start"]  # fmt: skip
        t_ns, _ = s.stream("emg.emg")
    assert start.t_ns >= start_clicked_ns
    # The recording's EMG begins after its start (within one block's back-filled times), not
    # in the 1.5 s and more of preview before it.
    assert t_ns[0] >= start.t_ns - 100_000_000


def test_closing_in_preview_leaves_no_file_and_no_simulator(qtbot: Any, tmp_path: Path) -> None:
    session = Session(demo_config(tmp_path), tmp_path)
    window = MonitorWindow(session)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: "stim" in window.device_panel.rows, timeout=15_000)
    window.close()  # the suite's thread check fails the test if a simulator or device stayed
    assert not session.recording and list(tmp_path.iterdir()) == []


def test_the_end_of_the_protocol_is_said_stopped_and_reported(qtbot: Any, tmp_path: Path) -> None:
    config = parse_config({"session": {"patient_id": "END01", "out_dir": str(tmp_path),
                                       "protocol": "low-back-l3"}})  # fmt: skip
    session = Session(config)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: window.protocol_panel.next_button.isEnabled(), timeout=10_000)
        phases = len(session.protocol.phases) if session.protocol else 0
        assert phases == 9
        for _ in range(phases + 1):  # Start protocol, then Next phase after each phase
            qtbot.mouseClick(window.protocol_panel.next_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not session.recording, timeout=5_000)
        completion = window.completion
        assert completion.isVisible() and completion.title.text() == "Session complete: END01"
        assert "writing the report" in completion.detail.text()
        qtbot.waitUntil(completion.open_button.isEnabled, timeout=60_000)
        report = tmp_path / f"{session.path.stem}.report.html"
        assert report.exists() and window.report_path == report
        assert f"report: {report}" in completion.detail.text()
        qtbot.wait(300)
        assert window.isVisible() and not completion.keep_button.isVisible()  # it stays open
    finally:
        window.close()
    with open_session(session.path) as s:
        (stop,) = [e for e in s.events("recording") if isinstance(e, RecordingEvent)
                   and e.action == "stop"]  # fmt: skip
    assert stop.reason == "protocol complete"


def test_after_stop_nothing_of_the_devices_is_shown_as_live(qtbot: Any, tmp_path: Path) -> None:
    session = Session(demo_config(tmp_path), tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: "OUTPUT ON" in window.stim_label.text(), timeout=30_000)
        qtbot.waitUntil(lambda: window.device_panel.row_texts("emg")[1] == "streaming",
                        timeout=10_000)  # fmt: skip
        window.stop_recording(report=False)
        stopped_s = session.clock.now_ns() / 1e9
        qtbot.wait(700)  # a few health ticks
        assert window.stim_label.text() == "stimulator: not read (the recording has stopped)"
        for name in ("stim", "emg", "caliper"):
            assert window.device_panel.row_texts(name)[1:] == ["disconnected"] + ["—"] * 5, name
        assert window.recording_bar.indicator.text() == "● STOPPED"
        assert window.banner.isHidden()
        assert window.traces.stim_curves()  # every channel's: none held on into the future
        for curve in window.traces.stim_curves():
            x, _y = curve.getData()
            assert x is not None and float(x.max()) <= stopped_s + 0.05
    finally:
        window.close()


def bare_config(tmp_path: Path) -> Path:
    path = tmp_path / "bare.toml"
    path.write_text(f'[session]\npatient_id = "DUR01"\nout_dir = "{tmp_path / "rec"}"\n')
    return path


def test_monitor_with_a_duration_stops_reports_and_closes_by_itself(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [NEEDLELAB, "monitor", str(bare_config(tmp_path)), "--start", "--duration", "1"],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (recording,) = (tmp_path / "rec").glob("DUR01_*.sqlite")
    report = recording.with_name(f"{recording.stem}.report.html")
    assert run.stdout.splitlines() == [f"saved {recording}", f"report: {report}"]
    assert report.exists() and verify_report(recording)["ok"]


def test_the_demo_in_its_window_closes_by_itself_with_its_report(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":97"}  # a "display"
    run = subprocess.run(
        [NEEDLELAB, "demo", "--duration", "3", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "running headless" not in run.stderr  # it ran in the (offscreen) monitor
    (recording,) = tmp_path.glob("DEMO01_*.sqlite")
    reports = [line for line in run.stdout.splitlines() if line.startswith("report: ")]
    assert reports == [f"report: {recording.with_name(recording.stem + '.report.html')}"]
    assert "OK (integrity: ok)" in run.stdout
