"""Save a screenshot of the monitor during the demo session (for the README).

Runs the demo config (simulators in-process) in the monitor on Qt's offscreen platform, lets the
demo's scripted clinician set the needle site and log three answers, and saves the window.

    python scripts/monitor_screenshot.py [--out docs/monitor.png] [--at 27]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from needlelab.config import load_config
from needlelab.demo import demo_script
from needlelab.monitor.window import MonitorWindow
from needlelab.resources import configs_dir
from needlelab.session import Session


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/monitor.png"))
    parser.add_argument("--at", type=float, default=27.0, help="seconds into the session")
    args = parser.parse_args()
    app = pg.mkQApp("needlelab")
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(load_config(configs_dir() / "demo.toml"), Path(tmp))
        window = MonitorWindow(session, autostart=True, script=demo_script)
        window.resize(1600, 1000)
        window.show()

        def shoot() -> None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            ok = window.grab().save(str(args.out))
            print(f"{'saved' if ok else 'could not save'} {args.out}", file=sys.stderr)
            window.close()
            app.quit()

        QtCore.QTimer.singleShot(round(args.at * 1000), shoot)
        app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
