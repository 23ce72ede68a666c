"""The monitor under a real X server (Xvfb), driven by xdotool through the window system:
tests/gui/xvfb_cases.py runs in a child process with DISPLAY at the Xvfb started here and Qt's
xcb platform. Skipped, with the reason, where Xvfb, xdotool or Qt's xcb libraries are absent
(Debian: apt-get install xvfb xdotool and the packages `qt_problem` names)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from needlelab.monitor import qt_problem

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def x_display() -> Iterator[str]:
    """A private Xvfb (1920x1080, no TCP): its display name."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian: apt-get install xvfb xdotool)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 20)
        number = os.read(read, 64).decode().strip() if ready else ""
        if not number:
            pytest.fail("Xvfb did not say its display within 20 s")
        yield f":{number}"
    finally:
        os.close(read)
        server.terminate()
        server.wait(10)


SOAK = settings.default.max_examples == settings.get_profile("soak").max_examples


@pytest.mark.timeout(7200 if SOAK else 300)
def test_the_monitor_under_a_real_x_server(x_display: str, request: pytest.FixtureRequest) -> None:
    env = {**os.environ, "DISPLAY": x_display, "QT_QPA_PLATFORM": "xcb",
           "NEEDLELAB_XVFB_CHILD": "1"}  # fmt: skip
    problem = qt_problem("xcb", environ=env)
    if problem:
        pytest.skip(problem)
    profile = request.config.getoption("hypothesis_profile", default=None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(HERE / "xvfb_cases.py"), "--rootdir", str(HERE.parents[1])]  # fmt: skip
    if profile:
        command.append(f"--hypothesis-profile={profile}")
    child = subprocess.run(
        command, env=env, cwd=HERE.parents[1], capture_output=True, text=True,
        timeout=7000 if SOAK else 280, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-2000:]
    assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout[-2000:]
