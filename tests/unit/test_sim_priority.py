"""The simulator process keeps time: real-time priority where the OS allows, not passed on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import os, subprocess, sys
from needlelab.sim.cli import keep_time
said = keep_time()
child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(said, os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0), child, sep="|")
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_RR"), reason="no real-time scheduling here")
def test_the_simulator_process_runs_at_real_time_priority_where_allowed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    said, policy, child = out.split("|")
    try:  # whether this user may: the kernel's answer, asked apart from needlelab
        allowed = subprocess.run(
            [sys.executable, "-c", "import os; os.sched_setscheduler(0, os.SCHED_RR, "
             "os.sched_param(1))"],
            capture_output=True, timeout=60,
        ).returncode == 0  # fmt: skip
    except OSError:
        allowed = False
    if allowed:
        assert said == "real-time priority" and int(policy) == os.SCHED_RR
    else:
        assert said.startswith("normal priority") and int(policy) == os.SCHED_OTHER
    assert int(child) == os.SCHED_OTHER  # the processes it starts (the probe's central) are not
