"""The monitor walks a clinician through the protocol: phases, ratings, TPD trials (with the
caliper's reading as the distance), an LRJ block, all recorded in the session file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyqtgraph.Qt import QtCore

from needlelab.config import parse_config
from needlelab.events import NrsEvent, PhaseEvent, RomEvent, TpdTrialEvent
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session
from needlelab.session import Session

Qt = QtCore.Qt


def test_the_panel_steps_through_phases_and_records_what_they_ask(
    qtbot: Any, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "session": {"patient_id": "PROT01", "out_dir": str(tmp_path),
                        "protocol": "low-back-l3"},
            "devices": [{"kind": "caliper_ble", "name": "caliper",
                         "profile": "needlelab-caliper-ref",
                         "simulator": {"seed": 3, "press_every_s": 0.3}}],
        }
    )  # fmt: skip
    session = Session(config, tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.show()
    panel = window.protocol_panel
    qtbot.waitUntil(lambda: session.protocol_run is not None, timeout=10_000)
    qtbot.waitUntil(lambda: panel.next_button.isEnabled(), timeout=2_000)
    assert panel.isVisible() and "Start protocol" in panel.next_button.text()
    panel.next_button.click()  # 1: baseline pain
    assert panel.phase_label.text() == "1/9: baseline pain"
    assert panel.next_label.text() == "next: baseline TPD"
    panel.nrs_spin.setValue(7)
    panel.record_nrs()
    panel.next_button.click()  # 2: baseline TPD, with the caliper pressing every 0.3 s
    # The trial takes the press made for it (since it was put up), not an older one.
    qtbot.waitUntil(lambda: panel.run is not None and panel.run.trial_press() is not None,
                    timeout=10_000)  # fmt: skip
    assert "pre L3 R vertical, trial 1: TWO points at 60.0 mm" in panel.tpd_label.text()
    assert panel.run is not None
    pressed = panel.run.trial_press()
    assert pressed is not None
    panel.tpd_answer("two")
    panel.use_caliper.setChecked(False)
    panel.tpd_answer("one")
    panel.next_button.click()  # 3: baseline LRJ
    panel.lrj_button.click()
    assert panel.lrj_task is not None
    qtbot.waitUntil(lambda: panel.lrj_task is not None and panel.lrj_task.shown_t_ns is not None,
                    timeout=5_000)  # fmt: skip
    task = panel.lrj_task
    qtbot.keyClick(task, Qt.Key.Key_Right)  # one answer, then Escape ends the block early
    qtbot.keyClick(task, Qt.Key.Key_Escape)
    assert panel.lrj_task is None
    panel.next_button.click()  # 4: baseline movement
    panel.rom_spins["flexion"].setValue(45)
    panel.rom_spins["extension"].setValue(20)
    panel.record_rom()
    panel.next_button.click()  # 5: needling with e-stim: the site is set from the template
    site = session.localization.site
    assert site is not None and (site.level, site.side, site.estim_on) == ("L3", "R", True)
    assert "needling L3 R with e-stim" in panel.needling_label.text()
    window.stop_recording()
    with open_session(session.path) as s:
        phases = [e for e in s.events("phase") if isinstance(e, PhaseEvent)]
        trials = [e for e in s.events("tpd.trial") if isinstance(e, TpdTrialEvent)]
        nrs = [e for e in s.events("rating.nrs") if isinstance(e, NrsEvent)]
        rom = [e for e in s.events("rating.rom") if isinstance(e, RomEvent)]
        lrj = s.events("lrj.trial")
    assert [(p.name, p.boundary) for p in phases][:4] == [
        ("baseline pain", "start"), ("baseline pain", "end"),
        ("baseline TPD", "start"), ("baseline TPD", "end"),
    ]  # fmt: skip
    assert [(n.value, n.when) for n in nrs] == [(7, "pre")]
    first, second = trials
    assert first.distance_source == "caliper" and abs(first.distance_mm - pressed) < 1e-3
    assert (second.distance_source, second.distance_mm, second.answer) == ("manual", 60.0, "one")
    assert [(r.movement, r.degrees) for r in rom] == [("flexion", 45.0), ("extension", 20.0)]
    assert len(lrj) == 1
