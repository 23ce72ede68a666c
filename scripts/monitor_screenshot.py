"""Save a screenshot of the monitor during the demo session (for the README).

Runs the demo config (simulators in-process) in the monitor on Qt's offscreen platform, lets the
demo's scripted clinician go through the protocol, and saves the window `--at` seconds into
`--phase` (by default the needling with e-stim: the site set, prompts and answers logged).

    python scripts/monitor_screenshot.py [--size 1366x768] [--out PATH] [--at 27]

The window is shown at exactly `--size` (the screen sizes the layout is checked at: 1366x768 and
1920x1080); without `--out` the picture is docs/monitor-<size>.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from needlelab.config import load_config
from needlelab.demo import demo_script
from needlelab.monitor.window import MonitorWindow
from needlelab.resources import configs_dir
from needlelab.session import Session


def _size(text: str) -> tuple[int, int]:
    """ "1366x768" -> (1366, 768)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the size as WIDTHxHEIGHT") from None
    return width, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(1366, 768), help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, default=None, help="docs/monitor-<size>.png")
    parser.add_argument(
        "--phase", default="needling with e-stim", help="the protocol phase to show"
    )
    parser.add_argument(
        "--at",
        type=float,
        default=14.0,
        help="seconds into that phase (into the session: --phase '')",
    )
    args = parser.parse_args()
    width, height = args.size
    out: Path = args.out or Path(f"docs/monitor-{width}x{height}.png")
    app = pg.mkQApp("needlelab")
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(load_config(configs_dir() / "demo.toml"), Path(tmp))
        window = MonitorWindow(session, autostart=True, script=demo_script)
        window.resize(width, height)
        window.show()

        def shoot() -> None:
            out.parent.mkdir(parents=True, exist_ok=True)
            ok = window.grab().save(str(out))
            size = f"{window.width()}x{window.height()}"
            print(f"{'saved' if ok else 'could not save'} {out} ({size})", file=sys.stderr)
            window.close()
            app.quit()

        if not args.phase:
            QtCore.QTimer.singleShot(round(args.at * 1000), shoot)
        else:
            seen: list[float] = []  # when the phase was first seen (monotonic s)

            def wait_for_phase() -> None:
                run = session.protocol_run
                phase = run.phase if run is not None else None
                if phase is not None and phase.name == args.phase:
                    seen.append(time.monotonic())
                    if seen[-1] - seen[0] >= args.at:
                        shoot()
                        return
                elif seen or (run is not None and run.finished):
                    print(
                        f"the session left or never reached phase {args.phase!r}", file=sys.stderr
                    )
                    window.close()
                    app.quit()
                    return
                QtCore.QTimer.singleShot(100, wait_for_phase)

            QtCore.QTimer.singleShot(100, wait_for_phase)
        app.exec()
    return 0


if __name__ == "__main__":
    sys.exit(main())
