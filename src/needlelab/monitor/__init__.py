"""The live monitor: pyqtgraph traces, stimulator strip, device health, needling and localization.

Qt lives only here, and only on the Qt main thread: the window pulls from the hub's ring buffers
and recent events on a QTimer and never touches device I/O, so devices and the writer keep going
if the GUI stalls. It needs the `gui` extra (PySide6-Essentials, or PyQt6, and pyqtgraph).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Mapping

GUI_EXTRA_HINT = "the monitor needs the GUI extra: pip install 'needlelab[gui]'"

QT_XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",  # loaded at run time: `ldd` does not list it
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}
"""The system libraries Qt's xcb platform plugin (the one that opens windows on Linux) needs
beyond a base system, with their Debian / Ubuntu packages: `ldd` on the plugin of PySide6 6.11,
plus the cursor library the plugin loads by name (Qt 6.5 and later)."""

QT_PROBE_TIMEOUT_S = 10.0
_PROBE = (
    "import sys\n"
    "from pyqtgraph.Qt import QtWidgets\n"
    "app = QtWidgets.QApplication(sys.argv[:1])\n"
    "print(app.platformName())\n"
)


def gui_missing() -> str | None:
    """Why the monitor cannot run here (a one-line hint), or None if it can."""
    try:
        import pyqtgraph  # noqa: F401
        from pyqtgraph.Qt import QtWidgets  # noqa: F401
    except Exception as exc:  # ImportError, or a Qt binding that fails to load its libraries
        return f"{GUI_EXTRA_HINT} ({type(exc).__name__}: {exc})"
    return None


def display_available() -> bool:
    """Whether a window can be shown to someone: a desktop session (Qt's offscreen platform
    does not count: it is for tests and screenshots)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def missing_qt_libraries() -> list[str]:
    """The Debian packages of `QT_XCB_LIBRARIES` whose library cannot be loaded here (Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    missing = []
    for library, package in QT_XCB_LIBRARIES.items():
        try:
            ctypes.CDLL(library)
        except OSError:
            missing.append(package)
    return missing


def qt_problem(
    platform: str | None = None,
    timeout_s: float = QT_PROBE_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why Qt cannot start here, in one line, or None if it can.

    Qt that cannot open its platform (missing xcb libraries, no display) aborts the process
    (SIGABRT), so it is tried first in a child process that creates a QApplication with
    `platform` (QT_QPA_PLATFORM's value; None: what the environment says) and is given
    `timeout_s`, in `environ` (default: this process's). The line names the Debian packages
    to install when libraries are missing.
    """
    env = dict(os.environ if environ is None else environ)
    if platform is not None:
        env["QT_QPA_PLATFORM"] = platform
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        display = env.get("DISPLAY") or "(DISPLAY is not set)"
        return f"Qt did not start within {timeout_s:g} s (is the display {display} reachable?)"
    if probe.returncode == 0:
        return None
    chosen = env.get("QT_QPA_PLATFORM") or "the default"
    missing = missing_qt_libraries() if chosen in ("xcb", "the default") else []
    if missing:
        return (
            f"Qt cannot open a window: its xcb platform needs system libraries that are missing; "
            f"install them with: sudo apt-get install {' '.join(missing)}"
        )
    text = probe.stderr.strip().splitlines()
    if any("could not connect to display" in line for line in text):
        display = env.get("DISPLAY") or "(DISPLAY is not set)"
        return f"Qt cannot open a window: no display at {display}"
    detail = next((line for line in text if "qt.qpa" in line or "platform" in line), "")
    how = (
        f"exit status {probe.returncode}" if probe.returncode > 0 else f"signal {-probe.returncode}"
    )
    return f"Qt cannot start with platform {chosen!r} ({how}){': ' + detail if detail else ''}"
