"""The live monitor through pytest-qt, offscreen, on sessions with simulated devices.

Every test drives the real window: real drivers and simulators underneath, real key presses and
clicks on top, and the SQLite file the session leaves behind is what is checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.config import FaultSpec, SessionConfig, load_config, parse_config
from needlelab.events import (
    CorrectionEvent,
    NeedleSiteEvent,
    PromptEvent,
    ResponseEvent,
    StimSettingsEvent,
)
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session, verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session
from tests.gui.keys import press

Qt = QtCore.Qt


def demo_config(tmp_path: Path) -> SessionConfig:
    config = load_config(configs_dir() / "demo.toml")
    return config.model_copy(
        update={"session": config.session.model_copy(update={"out_dir": tmp_path})}
    )


@pytest.fixture
def window(qtbot: Any, tmp_path: Path) -> Iterator[MonitorWindow]:
    session = Session(demo_config(tmp_path), tmp_path)
    win = MonitorWindow(session, autostart=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: session.recording, timeout=10_000)
    yield win
    win.close()


def image_array(image: QtGui.QImage) -> np.ndarray:
    """An RGB array of a QImage."""
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return pg.functions.ndarray_from_qimage(image)[:, :, :3].copy()  # PySide6 and PyQt6 alike


def coloured_pixels(rgb: np.ndarray) -> int:
    """Pixels of clearly saturated colour (trace colours), not grey axes, text or background."""
    rgb = rgb.astype(np.int16)
    return int(np.count_nonzero(rgb.max(axis=2) - rgb.min(axis=2) > 80))


def test_the_window_opens_and_its_traces_are_drawn(
    qtbot: Any, window: MonitorWindow, tmp_path: Path
) -> None:
    emg = window.traces.emg_plot
    blank = coloured_pixels(image_array(window.traces.grab().toImage()))
    samples = window.session.devices["emg"].stats
    qtbot.waitUntil(lambda: samples.samples > 8000, timeout=15_000)
    qtbot.waitUntil(lambda: len(window.traces.stim_history) >= 2, timeout=10_000)
    qtbot.wait(200)
    shot = tmp_path / "monitor.png"
    assert window.grab().save(str(shot))
    traces = image_array(window.traces.grab().toImage())
    assert window.frames > 10
    # Every EMG lane has its curve, with about 2 points per pixel column (peak decimation).
    assert len(window.traces.lanes) == 8
    x, _y = window.traces._curves[0].getData()
    assert x is not None and 100 < len(x) <= 2 * max(100, int(emg.vb.width())) + 20
    # The pixels prove it: the trace area went from black to coloured curves.
    assert coloured_pixels(traces) > blank + 5000
    top = traces[: traces.shape[0] // 2]  # the EMG plot
    assert coloured_pixels(top) > 3000
    assert shot.stat().st_size > 20_000


def test_localization_is_keyed_in_three_keys_and_stored_with_scores_and_audit(
    qtbot: Any, window: MonitorWindow
) -> None:
    press(qtbot, window, "Alt+3", "Alt+R", "Alt+E")  # site L3 right, e-stim on
    press(qtbot, window, "Space")
    qtbot.wait(300)
    press(qtbot, window, "3", "R", "Return")  # right level, right side: 3 keys
    press(qtbot, window, "Space")
    qtbot.wait(200)
    press(qtbot, window, "F6", "5", "L", "Return")  # electric; L5 left: wrong
    press(qtbot, window, "4", "R", "Ctrl+Return")  # clinician misheard: it was L4 right
    press(qtbot, window, "Space", "T", "1", "0", "B", "Return", "Ctrl+Z")  # a slip, withdrawn
    panel = window.localization_panel
    assert "2 answers" in panel.accuracy_label.text()
    assert "level exact 50 %" in panel.accuracy_label.text()
    assert window.localization.site is not None and window.localization.site.estim_on
    path = window.session.path
    window.stop_recording()
    with open_session(path) as s:
        events = [
            e
            for kind in ("needle.site", "prompt", "response", "correction")
            for e in s.events(kind)
        ]
    events.sort(key=lambda e: e.id)
    sites = [e for e in events if isinstance(e, NeedleSiteEvent)]
    prompts = [e for e in events if isinstance(e, PromptEvent)]
    responses = [e for e in events if isinstance(e, ResponseEvent)]
    corrections = [e for e in events if isinstance(e, CorrectionEvent)]
    assert [(s.level, s.side, s.estim_on) for s in sites][-1] == ("L3", "R", True)
    assert len(prompts) == 3 and len(responses) == 4 and len(corrections) == 2
    first, wrong, fixed, slip = responses
    assert (first.level, first.side, first.level_error, first.side_correct) == ("L3", "R", 0, True)
    assert first.prompt_id == prompts[0].id and first.latency_ms is not None
    assert 250 <= first.latency_ms < 5000
    assert wrong.descriptors == ("electric",) and wrong.level_error == 2
    assert (fixed.level, fixed.level_error, fixed.side_correct) == ("L4", 1, True)
    assert fixed.prompt_id == wrong.prompt_id and fixed.latency_ms == wrong.latency_ms
    assert (corrections[0].replaces, corrections[0].replacement) == (wrong.id, fixed.id)
    assert (corrections[1].replaces, corrections[1].replacement) == (slip.id, None)
    assert verify_report(path)["ok"]


def test_a_lost_sensor_turns_red_within_two_seconds_and_back(qtbot: Any, tmp_path: Path) -> None:
    session = Session(demo_config(tmp_path), tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: session.recording, timeout=10_000)
        emg = session.devices["emg"]
        qtbot.waitUntil(lambda: emg.stats.samples > 4000, timeout=15_000)
        qtbot.waitUntil(lambda: "emg" in window.device_panel.rows, timeout=2_000)
        assert not window.device_panel.row_is_red("emg") and window.banner.isHidden()
        assert session.simulators is not None
        sensor = session.simulators.ble_devices["emg"]  # type: ignore[union-attr]
        t0 = time.monotonic()
        sensor.inject(FaultSpec(kind="disconnect", at_s=0, duration_s=3.0))
        qtbot.waitUntil(lambda: window.device_panel.row_is_red("emg"), timeout=3_000)
        assert time.monotonic() - t0 <= 2.0
        assert window.banner.isVisible() and "emg" in window.banner.text()
        assert not window.device_panel.row_is_red("stim")
        qtbot.waitUntil(lambda: not window.device_panel.row_is_red("emg"), timeout=15_000)
        assert emg.stats.reconnects >= 1 and window.banner.isHidden()
    finally:
        window.close()


def test_closing_the_window_mid_recording_closes_the_file_cleanly(
    qtbot: Any, window: MonitorWindow
) -> None:
    qtbot.waitUntil(lambda: window.session.devices["emg"].stats.samples > 2000, timeout=15_000)
    path = window.session.path
    window.close()
    assert not window.session.recording
    report = verify_report(path)
    assert report["ok"] and report["closed_cleanly"]


def test_manual_stimulator_entries_are_recorded_like_a_driver_change(
    qtbot: Any, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "session": {"patient_id": "MAN01", "out_dir": str(tmp_path)},
            "devices": [{"kind": "stim_manual", "name": "tens"}],
        }
    )
    session = Session(config, tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bool(window.manual_panels), timeout=10_000)
    panel = window.manual_panels[0]
    panel.frequency.setValue(80.0)
    panel.frequency.editingFinished.emit()
    panel.intensity.setValue(12.5)
    panel.intensity.editingFinished.emit()
    panel.output.click()  # scrolled out of view offscreen: click it as a button, not at a pixel
    qtbot.waitUntil(lambda: len(window.traces.stim_history) >= 3, timeout=5_000)
    window.stop_recording()
    with open_session(session.path) as s:
        changes = [e for e in s.events("stim.settings") if isinstance(e, StimSettingsEvent)]
    entered = [(c.settings.frequency_hz, c.settings.intensity_ma, c.settings.output_on)
               for c in changes]  # fmt: skip
    assert entered == [(80.0, 0.0, False), (80.0, 12.5, False), (80.0, 12.5, True)]
    assert all(c.origin == "manual" for c in changes)
    times = [c.t_ns for c in changes]
    assert times == sorted(times) and len(set(times)) == 3


def test_devices_and_the_writer_keep_going_while_the_gui_is_stalled(
    qtbot: Any, window: MonitorWindow
) -> None:
    emg = window.session.devices["emg"]
    qtbot.waitUntil(lambda: emg.stats.samples > 2000, timeout=15_000)
    frames, before = window.frames, emg.stats.samples
    time.sleep(2.5)  # the Qt thread is blocked: no timer, no paint, no key
    assert window.frames == frames
    # 2 kHz for 2.5 s arrived meanwhile, through the BLE loop and device threads.
    assert emg.stats.samples - before > 4000
    qtbot.waitUntil(lambda: window.frames > frames + 5, timeout=5_000)
    path = window.session.path
    window.stop_recording()
    report = verify_report(path)
    (stream,) = [s for s in report["streams"] if s["name"] == "emg.emg"]
    assert report["ok"] and stream["samples"] == emg.stats.samples
    assert report["gaps"] == [] and stream["samples_lost_known"] == 0


def pick(combo: QtWidgets.QComboBox, text: str) -> None:
    """Choose an item as a click on the list does (`activated`, not a programmatic change)."""
    index = combo.findText(text)
    assert index >= 0, text
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def test_site_widgets_record_each_change_and_switch_region(qtbot: Any, tmp_path: Path) -> None:
    config = parse_config(
        {
            "session": {"patient_id": "NECK01", "out_dir": str(tmp_path)},
            "localization": {"regions": {"lumbar": ["L3", "L4", "L5"],
                                         "neck": ["C4", "C5", "C6", "C7"]}},
        }
    )  # fmt: skip
    session = Session(config, tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: session.recording, timeout=10_000)
    panel = window.localization_panel
    assert panel.region_combo.isVisibleTo(window)
    pick(panel.side_combo, "R")  # each widget change is a site event at once
    pick(panel.region_combo, "neck")
    assert [b.text() for b in panel.level_buttons] == ["C4  [4]", "C5  [5]", "C6  [6]", "C7  [7]"]
    pick(panel.level_combo, "C6")
    panel.estim_check.click()
    press(qtbot, window, "Space", "5", "L", "Return")
    window.stop_recording()
    with open_session(session.path) as s:
        sites = [e for e in s.events("needle.site") if isinstance(e, NeedleSiteEvent)]
        (answer,) = [e for e in s.events("response") if isinstance(e, ResponseEvent)]
    assert [(e.region, e.level, e.side, e.muscle, e.estim_on) for e in sites] == [
        ("lumbar", "L3", "R", "multifidus", False), ("neck", "C4", "R", "multifidus", False),
        ("neck", "C6", "R", "multifidus", False), ("neck", "C6", "R", "multifidus", True),
    ]  # fmt: skip
    assert (answer.level, answer.level_error, answer.side_correct) == ("C5", -1, False)
