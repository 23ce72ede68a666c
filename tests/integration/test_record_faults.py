"""`needlelab record` killed with SIGKILL: what it loses, and sealing the file after; an
unwritable output folder.

The fault matrix (tests/reliability/test_fault_matrix.py) has the disk-full and SIGKILL rows
with every device.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from needlelab.record import RecordingError, open_session, verify_report

from .test_stim_serial import start_sim_process, stop_process

CONFIG = """
[session]
patient_id = "CRASH01"

[[devices]]
kind = "stim_serial"
name = "stim"
profile = "needlelab-stim-ascii"
port = "{port}"
poll_interval_ms = 20
"""


def record_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "needlelab.cli",
        "record",
        str(config),
        "--out",
        str(out),
        "--no-console",
        *extra,
    ]


def test_sigkill_loses_at_most_a_tenth_of_a_second(tmp_path: Path) -> None:
    """Kill the recorder at random points, 10 times: every file verifies; loss ≤ 0.1 s.

    The simulator runs in its own process and logs every message it sends with its monotonic
    time (CLOCK_MONOTONIC is system-wide). Loss = kill time − send time of the first message
    that was sent after the last recorded one: the data the recorder had and did not commit.
    """
    sim, url, log = start_sim_process(tmp_path, "--pty", "--pattern", "random", "--seed", "4")
    config = tmp_path / "crash.toml"
    config.write_text(CONFIG.format(port=url))
    rng = random.Random(1234)
    losses = []
    try:
        for run in range(10):
            out = tmp_path / f"run{run}"
            proc = subprocess.Popen(
                record_cmd(config, out),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith("recording to"), "recorder did not start"
            time.sleep(rng.uniform(0.6, 1.6))
            proc.send_signal(signal.SIGKILL)
            kill_ns = time.monotonic_ns()
            proc.wait(10)
            proc.stderr.close()
            (path,) = out.glob("*.sqlite")
            report = verify_report(path)
            assert report["ok"], report
            assert not report["closed_cleanly"]
            with open_session(path) as s:
                anchor = s.meta["anchor_monotonic_ns"]
                t_ns, _ = s.stream("stim.ch1")
            assert len(t_ns) > 10
            latency_ns = 1_000_000  # the profile's known latency, subtracted on recording
            last_recorded = anchor + int(t_ns[-1]) + latency_ns
            sent = [json.loads(line)["t_mono_ns"] for line in log.read_text().splitlines()]
            # Sent after the last recorded message (allowing 2 ms of transit) and before the kill.
            lost = [t for t in sent if last_recorded + 2_000_000 < t < kill_ns]
            losses.append((kill_ns - min(lost)) / 1e9 if lost else 0.0)
    finally:
        stop_process(sim)
    print(f"SIGKILL losses (s): {[round(x, 3) for x in losses]}")
    assert max(losses) <= 0.1, losses


@pytest.mark.parametrize("where", ["file-as-folder"])
def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    config = tmp_path / "c.toml"
    config.write_text(
        CONFIG.replace('port = "{port}"', "").replace(
            "poll_interval_ms = 20", "[devices.simulator]\ntransport = 'pty'"
        )
    )
    result = subprocess.run(
        record_cmd(config, blocker / "sub", "--duration", "1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4  # cannot write (needlelab --help, exit codes)
    assert "Traceback" not in result.stderr
    assert "cannot create files in" in result.stderr and "--out" in result.stderr
    assert not blocker.is_dir()  # refused before anything was made


def sample_count(path: Path) -> int:
    with open_session(path) as s:
        return sum(len(s.stream(name)[0]) for name in s.streams)


def test_a_killed_recording_is_sealed_into_one_self_contained_file(tmp_path: Path) -> None:
    """After a SIGKILL the latest commits are in NAME-wal: verify says so, and `needlelab seal`
    folds them in, so the .sqlite copied alone holds everything. A live recording is refused."""
    config = tmp_path / "c.toml"
    config.write_text(
        CONFIG.replace('port = "{port}"', "").replace(
            "poll_interval_ms = 20", "poll_interval_ms = 20\n[devices.simulator]\ntransport = 'pty'"
        )
    )
    proc = subprocess.Popen(
        record_cmd(config, tmp_path / "out"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("recording to")
    time.sleep(1.5)
    (path,) = (tmp_path / "out").glob("*.sqlite")
    live = subprocess.run(cli("seal", str(path)), capture_output=True, text=True, timeout=30)
    assert live.returncode == 4 and "in use" in live.stderr and "Traceback" not in live.stderr
    time.sleep(0.5)
    proc.kill()
    proc.wait(10)
    proc.stderr.close()

    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    recorded = sample_count(path)
    assert recorded > 50  # the refused seal took nothing from the recording
    shown = subprocess.run(cli("verify", str(path)), capture_output=True, text=True, timeout=30)
    assert f"{path.name}-wal" in shown.stdout and "needlelab seal" in shown.stdout
    alone = tmp_path / "copied" / path.name
    alone.parent.mkdir()
    shutil.copyfile(path, alone)
    with contextlib.suppress(RecordingError):  # or not even the first commit is there
        # The .sqlite without its log lacks the commits since the last 1 s checkpoint, if any
        # came after it (a kill just after a checkpoint leaves none: seen in CI).
        assert sample_count(alone) <= recorded

    sealed = subprocess.run(cli("seal", str(path)), capture_output=True, text=True, timeout=30)
    assert sealed.returncode == 0 and "sealed" in sealed.stdout, sealed.stderr
    assert not wal.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    shutil.copyfile(path, alone)
    assert sample_count(alone) == recorded
    report = verify_report(alone)
    assert report["ok"] and not report["closed_cleanly"]  # sealing does not pretend otherwise
    assert report["wal_bytes"] == 0
    again = subprocess.run(cli("seal", str(path)), capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "nothing to fold" in again.stdout
    not_ours = tmp_path / "notes.sqlite"
    not_ours.write_text("not a database")
    wrong = subprocess.run(cli("seal", str(not_ours)), capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 3 and "not a readable SQLite file" in wrong.stderr


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "needlelab.cli", *args]


def test_a_slow_disk_is_told_on_the_record_console(tmp_path: Path) -> None:
    """`needlelab record` on a disk whose commits take 2.5 s for the first 3 s (the writer's
    documented fault seam): the console says the disk is not keeping up as it happens, the
    `backlog` command shows how far behind it is, the console says when it caught up, and the
    file keeps both warnings and every poll."""
    import os

    config = tmp_path / "c.toml"
    config.write_text(
        CONFIG.replace('port = "{port}"', "").replace(
            "poll_interval_ms = 20", "poll_interval_ms = 20\n[devices.simulator]\ntransport = 'pty'"
        )
    )
    env = dict(os.environ, NEEDLELAB_FAULT_SLOW_DISK="2.5:0:3")
    proc = subprocess.Popen(
        cli("record", str(config), "--out", str(tmp_path / "out"), "--duration", "12"),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "the disk is not keeping up" in line:
            proc.stdin.write("backlog\n")
            proc.stdin.flush()
    proc.wait(30)
    proc.stdin.close()
    proc.stderr.close()
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    slow = next(i for i, line in enumerate(lines) if "the disk is not keeping up" in line)
    behind = next(i for i, line in enumerate(lines) if line.startswith("writer FALLING BEHIND"))
    caught = next(i for i, line in enumerate(lines) if "the disk caught up" in line)
    assert slow < behind < caught, text
    (path,) = (tmp_path / "out").glob("*.sqlite")
    report = verify_report(path)
    assert report["ok"] and report["closed_cleanly"]
    assert [w["code"] for w in report["warnings"]] == ["writer.backlog", "writer.backlog"]
    with open_session(path) as s:
        t_ns, _ = s.stream("stim.ch1")
    # Polled every 20 ms for ~12 s, the slow commits included: nothing was dropped meanwhile.
    assert np.all(np.diff(t_ns) < 0.5e9) and len(t_ns) > 100
