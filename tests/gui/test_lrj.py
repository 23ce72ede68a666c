"""The left/right judgement task offscreen: procedural pictures, timed keys, reaction times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui

from needlelab.clinic.lrj import LrjStimulus
from needlelab.config import parse_config
from needlelab.events import LrjTrialEvent
from needlelab.monitor.lrj import LrjTask
from needlelab.session import Session

Qt = QtCore.Qt


def picture(qtbot: Any, task: LrjTask, stimulus: LrjStimulus) -> np.ndarray:
    task.current = stimulus
    task._needs_stamp = False
    task.repaint()
    image = task.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return pg.functions.ndarray_from_qimage(image)[:, :, :3].astype(np.int16)


def lrj_session(tmp_path: Path) -> Session:
    config = parse_config(
        {"session": {"patient_id": "LRJ01", "out_dir": str(tmp_path), "protocol": "low-back-l3"}}
    )
    session = Session(config, tmp_path)
    session.start()
    assert session.protocol_run is not None
    while (phase := session.protocol_run.advance()) is not None and phase.kind != "lrj":
        pass
    return session


def test_pictures_are_drawn_and_left_is_right_mirrored(qtbot: Any, tmp_path: Path) -> None:
    session = lrj_session(tmp_path)
    try:
        assert session.protocol_run is not None
        task = LrjTask(session.protocol_run, session.clock, [], 5.0, 0.1)
        qtbot.addWidget(task)
        task.resize(400, 400)
        task.show()
        for part in ("hand", "foot", "back"):
            right = picture(qtbot, task, LrjStimulus(part, "R", 0))
            left = picture(qtbot, task, LrjStimulus(part, "L", 0))
            skin = np.all(np.abs(right - [0xE0, 0xB4, 0x8C]) < 12, axis=2)
            assert skin.mean() > 0.05, part  # a picture, not a blank page
            assert np.mean(np.any(np.abs(left - right[:, ::-1]) > 40, axis=2)) < 0.01, part
            assert np.mean(np.any(np.abs(left - right) > 40, axis=2)) > 0.02, part  # not symmetric
            turned = picture(qtbot, task, LrjStimulus(part, "R", 90))
            assert np.mean(np.any(np.abs(turned - right) > 40, axis=2)) > 0.02, part
    finally:
        session.stop()


def test_reaction_times_run_from_the_pictures_frame(qtbot: Any, tmp_path: Path) -> None:
    session = lrj_session(tmp_path)
    try:
        assert session.protocol_run is not None
        stimuli = [LrjStimulus("hand", "R", 0), LrjStimulus("foot", "L", 90),
                   LrjStimulus("back", "R", 180), LrjStimulus("hand", "L", 270)]  # fmt: skip
        task = LrjTask(session.protocol_run, session.clock, stimuli, timeout_s=0.8, gap_s=0.05)
        qtbot.addWidget(task)
        task.resize(500, 500)
        task.show()
        keys = [Qt.Key.Key_Right, Qt.Key.Key_L, Qt.Key.Key_Left, None]  # 3rd wrong, 4th silent
        waits_ms = [200, 350, 250, None]
        with qtbot.waitSignal(task.finished, timeout=10_000):
            task.start()
            for key, wait_ms in zip(keys, waits_ms, strict=True):
                qtbot.waitUntil(lambda: task.shown_t_ns is not None, timeout=3_000)
                if key is not None:
                    qtbot.wait(wait_ms)
                    qtbot.keyClick(task, key)
                    assert task.shown_t_ns is None  # answered: the picture is gone
        trials = [e for e in session.hub.recent_events() if isinstance(e, LrjTrialEvent)]
    finally:
        session.stop()
    assert [t.stimulus for t in trials] == [s.name for s in stimuli]
    assert [(t.answer, t.correct) for t in trials] == [
        ("R", True), ("L", True), ("L", False), (None, False),
    ]  # fmt: skip
    for trial, wait_ms in zip(trials[:3], waits_ms[:3], strict=True):
        # (qtbot.wait runs a coarse Qt timer: it may return up to 5 % early.)
        assert trial.rt_ms is not None and 0.94 * wait_ms <= trial.rt_ms < wait_ms + 150
        assert trial.t_ns - trial.shown_t_ns == round(trial.rt_ms * 1e6)
    assert trials[3].rt_ms is None and trials[3].block == "pre"
    assert [t.trial for t in trials] == [1, 2, 3, 4]
