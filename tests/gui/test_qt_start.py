"""Qt that cannot start is found before it can abort the process (issue 14, point 8): the
probe runs a QApplication in a child; the demo then records headless and says, in one line,
what to install. Before this, the demo died of SIGABRT (exit 134) with no recording when the
xcb libraries were missing or the display could not be reached."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.monitor import QT_XCB_LIBRARIES, qt_problem
from needlelab.record import open_session, verify_report

NO_X_SERVER = ":97"  # a display number with no server behind it


def without_x(display: str | None) -> dict[str, str]:
    """This process's environment with no Qt platform chosen and DISPLAY as given."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY")}
    if display is not None:
        env["DISPLAY"] = display
    return env


def test_the_probe_tells_qt_that_starts_from_qt_that_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert qt_problem("offscreen") is None
    problem = qt_problem("no-such-platform")
    assert problem is not None and "platform 'no-such-platform' (signal 6)" in problem
    monkeypatch.setattr(os, "environ", without_x(NO_X_SERVER))
    problem = qt_problem("xcb")
    assert problem is not None and "\n" not in problem
    # Either the libraries are missing (said with their packages) or there is no display.
    assert f"no display at {NO_X_SERVER}" in problem or "sudo apt-get install libxcb" in problem


def test_the_demo_records_headless_when_qt_cannot_open_its_window(tmp_path: Path) -> None:
    assert not Path(f"/tmp/.X11-unix/X{NO_X_SERVER[1:]}").exists()
    script = Path(sys.executable).with_name("needlelab")
    demo = subprocess.run(
        [str(script), "demo", "--duration", "2", "--out", str(tmp_path)],
        env=without_x(NO_X_SERVER), capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-2000:]
    said = [line for line in demo.stderr.splitlines() if "running headless" in line]
    assert len(said) == 1 and said[0].startswith("Qt cannot open a window"), demo.stderr
    assert "Aborted" not in demo.stderr and "core dumped" not in demo.stderr
    (path,) = tmp_path.glob("DEMO01_*.sqlite")
    assert verify_report(path)["ok"]
    with open_session(path) as s:
        assert len(s.stream("emg.emg")[0]) > 1000


def _library_path(soname: str) -> Path | None:
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"):
        if (Path(folder) / soname).exists():
            return (Path(folder) / soname).resolve()
    found = ctypes.util.find_library(soname.removeprefix("lib").split(".so")[0])
    return Path(found).resolve() if found and Path(found).is_absolute() else None


def test_missing_xcb_libraries_are_named_with_their_packages(tmp_path: Path) -> None:
    """libxcb-icccm.so.4 hidden in a private mount namespace (an empty file over it): what a
    system without the package looks like to the loader."""
    library = _library_path("libxcb-icccm.so.4")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to hide a library in a mount namespace")
    hide = f"mount --bind /dev/null {library} && " if library is not None else ""
    code = "from needlelab.monitor import qt_problem; print(qt_problem('xcb'))"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'{hide}exec "{sys.executable}" -c "{code}"'],
        env=without_x(NO_X_SERVER), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if probe.returncode != 0 and "Operation not permitted" in probe.stderr:
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()}")
    assert probe.returncode == 0, probe.stderr
    (line,) = probe.stdout.splitlines()
    assert line.startswith("Qt cannot open a window: its xcb platform needs system libraries")
    packages = line.split("sudo apt-get install ")[1].split()
    assert "libxcb-icccm4" in packages and set(packages) <= set(QT_XCB_LIBRARIES.values())


def test_the_monitor_says_in_one_line_that_qt_cannot_start(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("needlelab")
    config = Path(__file__).parents[2] / "configs" / "demo.toml"
    monitor = subprocess.run(
        [str(script), "monitor", str(config), "--out", str(tmp_path)],
        env=without_x(NO_X_SERVER), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert monitor.returncode == 2, monitor.stderr  # usage: this machine cannot show it
    (line,) = monitor.stderr.splitlines()
    assert line.startswith("needlelab: Qt cannot open a window") or "Qt cannot open" in line
    assert "`needlelab record CONFIG` records headless" in line
    assert list(tmp_path.iterdir()) == []  # nothing was recorded, nothing left behind
