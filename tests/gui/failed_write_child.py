"""Child of test_entry_truth.py's failed-write test: a monitor whose file stops growing
(RLIMIT_FSIZE, as on a full disk) while answers are keyed in. Prints, as JSON, the file and
what the window shows once the failure is seen; the parent compares it with the file."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import pyqtgraph as pg
from pyqtgraph.Qt import QtTest

from needlelab.config import parse_config
from needlelab.monitor.window import MonitorWindow
from needlelab.record import ignore_sigxfsz
from needlelab.session import Session
from tests.gui.entry_machine import QtDriver
from tests.gui.truth import screen_entries


def main() -> int:
    ignore_sigxfsz()
    app = pg.mkQApp("failed-write")
    out = Path(sys.argv[1])
    session = Session(parse_config({"session": {"patient_id": "FULL01", "out_dir": str(out)}}))
    window = MonitorWindow(session, autostart=True)
    driver = QtDriver()
    driver.show(window)
    QtTest.QTest.qWait(300)
    keys = ["Alt+3", "Space", "3", "R", "Return", "Space", "4", "R", "Return"]
    for key in keys:
        driver.press(window, key)
    QtTest.QTest.qWait(1500)  # committed, and folded into the file by a checkpoint
    size = max(session.path.stat().st_size, Path(f"{session.path}-wal").stat().st_size)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))  # the disk is full from now on
    deadline = time.monotonic() + 30
    typed = 0
    while session.error is None and time.monotonic() < deadline:
        for key in ("Space", "5", "L", "Return"):
            driver.press(window, key)
        typed += 1
        QtTest.QTest.qWait(20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    QtTest.QTest.qWait(600)  # the window sees the failure at its next health tick
    driver.press(window, "Space")
    driver.press(window, "Return")
    QtTest.QTest.qWait(100)
    window.refresh()
    shown = screen_entries(window)
    result = {
        "path": str(session.path), "error": session.error, "typed": typed,
        "message": window.statusBar().currentMessage(),
        "entry_off": window.localization_panel.entry_label.text(),
        "shown": {"answers": list(shown.answers), "level_exact_pct": shown.level_exact_pct,
                  "site": list(shown.site) if shown.site else None, "notes": list(shown.notes)},
    }  # fmt: skip
    window.close()
    app.processEvents()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
