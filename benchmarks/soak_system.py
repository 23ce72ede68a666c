"""The whole system over a long session, accelerated: memory, CPU, and every sample accounted for.

Load: the three simulated devices of `configs/demo.toml` (a serial stimulator on a pty, a BLE
EMG sensor and a BLE caliper behind bumble controllers on unix sockets) served by the real
simulators (`SimulatorSet`) in their own process; the recorder in another process, reaching
them as it reaches hardware (a serial port, bleak through a Bluetooth controller), with the
monitor window drawing (Qt offscreen, its own 60 Hz timer) and LSL on with needlelab's loopback
config; this script, a third process, reads the EMG outlet through a pylsl inlet (loopback
only), as LabRecorder would.

Accelerated means the simulators run at `--speed` times their rates for `--minutes` of real
time, so the file gets the samples of a longer session: the EMG sensor at speed x 2 kHz x 8 ch
(its profile with rate_hz scaled: notifications `speed` times as often, still 10 samples each),
the stimulator polled `speed` times as often (down to 20 ms), the caliper pressed `speed` times
as often and a clinician note every 5 s / speed. The stimulator's own settings changes keep
their real-time pattern (the simulator has no speed). How much session the run holds is counted
from the file (EMG samples / 2 kHz), not assumed: on a loaded 2-core machine the simulators fell
behind at 4x (58 % of the samples due were sent; 92 % at 2x), so the full run is 2x for 65
minutes (a 2 h session when the simulators keep up to 92 %); a run that holds less than
`--extrapolate-h` of session also extrapolates the growth to it (the least-squares trend per
session hour after warm-up, times that length, or the measured growth if larger). Rings sized
in seconds hold `speed` times more samples than at 1x: warm-up, not growth.

Measured from outside (/proc): the recorder's resident memory (VmRSS) every 2 s from its first
EMG sample; growth is the highest reading after warm-up minus the reading at the end of warm-up
(10 % of the run, at least --warmup-s: the hub's 30 s rings fill in real time). CPU: the
recorder's and the simulators' user + system seconds per real-time second after warm-up.
Afterwards every sample is accounted for against the simulators' own send logs: EMG, every
frame handed to the link while a central was subscribed, matched to the file's blocks by frame
counter (the EMG values are not compared: the simulator logs its frames, not their samples);
each stimulator channel, every settings message, and the caliper, every valid notification,
matched to the file's samples as a contiguous run in order by value (sent no later than
stored), from the device's connect as the file says (a device the file never saw connect: from
the simulator's first message). `missing`: sent, not in the file; `misfit`: in
the file but not what was sent at its place; what was sent in the last 0.2 s before the recorder
began to stop is in flight (may or may not be in the file); `declared`: the file's gap events.
With no faults injected, all must be 0. `early` (reported, not a loss): stimulator samples in
their place with their values but dated more than 10 ms before the simulator sent them.

Goals (S1-S3): memory growth <= 50 MB; CPU reported (no goal); 0 samples unaccounted and 0
declared lost.

    python benchmarks/soak_system.py [--minutes 65] [--speed 2] [--extrapolate-h 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from _results import Row, write_json

HERE = Path(__file__).resolve()
BASE_RATE = 2000.0
SPF = 10  # samples per EMG notification (the reference profile's frame)
POLL_MS = 100  # the demo's stimulator poll interval at 1x
PRESS_S = 1.5  # the demo caliper's press interval at 1x
NOTE_S = 5.0  # a clinician note this often at 1x
GOAL_MB = 50.0
WARMUP_MIN_S = 35.0  # the hub's rings (30 s) fill in real time whatever the speed
JUDGE_MIN_S = 300.0  # less real time after warm-up than this shows warm-up, not growth
SLACK_NS = 10e6
IN_FLIGHT_S = 0.2  # what was sent this close to the recorder's stop may be missing from the file
TICK = os.sysconf("SC_CLK_TCK")


# -- the configs ---------------------------------------------------------------------------------
def emg_profile(folder: Path, speed: float) -> Path:
    """The reference EMG profile with its rate scaled by `speed` (a profile file beside it)."""
    from needlelab.resources import drivers_dir

    text = (drivers_dir() / "needlelab-emg-ref.toml").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^rate_hz = .*$", f"rate_hz = {BASE_RATE * speed:g}", text)
    assert n == 1, "the reference profile's rate_hz line moved"
    path = folder / "soak-emg-ref.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sim_config(folder: Path, speed: float) -> dict[str, Any]:
    """The demo's devices with their simulators, sped up (what the simulator process serves)."""
    return {
        "session": {"patient_id": "SOAK02", "out_dir": str(folder)},
        "devices": [
            {"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
             "channels": [1, 2], "poll_interval_ms": max(20, round(POLL_MS / speed)),
             "simulator": {"transport": "pty", "pattern": "clinical", "seed": 1}},
            {"kind": "emg_ble", "name": "emg", "profile": str(emg_profile(folder, speed)),
             "muscle": "L3 multifidus R",
             "simulator": {"seed": 1, "drift_ppm": 50, "clock_offset_s": 1234.5, "jitter_ms": 2,
                           "connection_interval_ms": 7.5, "artefacts_from": "stim",
                           "artefacts_channel": 1}},
            {"kind": "caliper_ble", "name": "caliper", "profile": "needlelab-caliper-ref",
             "simulator": {"seed": 2, "press_every_s": max(0.06, PRESS_S / speed)}},
        ],
    }  # fmt: skip


def app_config(sims: dict[str, Any], endpoints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The recorder's config: the same devices reached at the simulators' endpoints, as a
    config for hardware says, LSL on (loopback)."""
    devices = []
    for device in sims["devices"]:
        entry = {k: v for k, v in device.items() if k != "simulator"}
        entry.update(endpoints[device["name"]])
        devices.append(entry)
    return {"session": dict(sims["session"], commit_interval_ms=50), "devices": devices,
            "lsl": {"enabled": True}}  # fmt: skip


# -- the simulator process -----------------------------------------------------------------------
def sims_main(config_path: Path, workdir: Path, truth_path: Path) -> int:
    """Serve the simulators until SIGTERM; then write what each sent (`truth_path`, npz)."""
    import resource

    from needlelab.config import parse_config
    from needlelab.signals import SignalStop
    from needlelab.sim.caliper import SimulatedCaliper
    from needlelab.sim.emg_sensor import SimulatedEmgSensor
    from needlelab.sim.serve import SimulatorSet

    config = parse_config(json.loads(config_path.read_text()), str(config_path))
    stop = SignalStop().install().event
    sims = SimulatorSet(config, workdir, ble="unix", tag="soak")
    endpoints = sims.start()
    # The caliper's WireLog counts what it sent but keeps neither times nor values of valid
    # readings: note each (time, distance, button) as the simulator encodes and reports it.
    caliper_sent: list[tuple[int, float, float]] = []
    for device in sims.ble_devices.values():
        if isinstance(device, SimulatedCaliper):
            own_sent, own_encode = device.wire.sent, device.encode
            last: list[tuple[float, float]] = []

            def encode(
                distance_mm: float, button: bool, _own: Any = own_encode, last: Any = last
            ) -> bytes:
                last[:] = [(round(distance_mm * 1000) / 1000, float(button))]
                return bytes(_own(distance_mm, button))

            def sent(kind: Any, n: int = 1, _own: Any = own_sent, last: Any = last) -> None:
                if kind == "valid" and last:
                    caliper_sent.extend([(time.monotonic_ns(), *last[0])] * n)
                _own(kind, n)

            device.encode = encode  # type: ignore[method-assign]
            device.wire.sent = sent  # type: ignore[method-assign]
    print(json.dumps(endpoints), flush=True)
    while not stop.wait(0.5):
        pass
    stims = dict(sims.stims)  # stop() forgets them
    sims.stop()
    logs: dict[str, np.ndarray] = {}
    for name, device in sims.ble_devices.items():
        if isinstance(device, SimulatedEmgSensor):
            # Every notification handed to the link: frame number, time, whether a central was
            # subscribed and it was a valid frame (what the recorder can store).
            log = device.sent_log
            logs[f"{name}.emg"] = np.array(
                [(seq, t, subscribed and kind == "valid") for seq, t, subscribed, kind, _ in log],
                np.int64,
            ).reshape(-1, 3)
            logs[f"{name}.emg.spf"] = np.array([device.profile.frame.samples_per_frame])
            logs[f"{name}.emg.rate"] = np.array([device.profile.frame.rate_hz])
    logs["caliper.distance"] = np.array(caliper_sent, np.float64).reshape(-1, 3)
    for name, stim in stims.items():
        for channel in stim.channels:
            logs[f"{name}.ch{channel}"] = np.array(
                [(m.t_mono_ns, m.fields["frequency_hz"], m.fields["pulse_width_us"],
                  m.fields["intensity_ma"], float(m.fields["output_on"]))
                 for m in stim.sent_log() if m.fields.get("channel") == channel],
                np.float64,
            ).reshape(-1, 5)  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)
    logs["cpu_s"] = np.array([usage.ru_utime + usage.ru_stime])
    logs["maxrss_mb"] = np.array([usage.ru_maxrss / 1024])
    with open(truth_path, "wb") as out:
        np.savez(out, **logs)
    return 0


# -- the recorder process ------------------------------------------------------------------------
def app_main(config_path: Path, result_path: Path, seconds: float, speed: float) -> int:
    """Record with the monitor drawing offscreen for `seconds`, a note every 5 s / speed."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from pyqtgraph.Qt import QtCore

    from needlelab.config import parse_config
    from needlelab.monitor.window import MonitorWindow
    from needlelab.session import Session

    config = parse_config(json.loads(config_path.read_text()), str(config_path))
    session = Session(config, lsl=True)
    app = pg.mkQApp("needlelab-soak")
    window = MonitorWindow(session, autostart=True, auto_close=False)
    window.show()
    state: dict[str, Any] = {"notes": 0}

    def note() -> None:
        if session.recording:
            state["notes"] += 1
            session.mark(f"soak note {state['notes']}")

    def announce() -> None:
        emg = session.devices.get("emg")
        if "streaming_ns" not in state and emg is not None and emg.stats.samples > 0:
            state["streaming_ns"] = time.monotonic_ns()
            state["frames_at_stream"] = window.frames
            print(f"streaming {session.path}", flush=True)
            QtCore.QTimer.singleShot(round(seconds * 1000), finish)

    def finish() -> None:
        state["stop_ns"] = time.monotonic_ns()
        state["frames"] = window.frames - state["frames_at_stream"]
        window.stop_recording("soak over", report=False)
        state["closed_ns"] = time.monotonic_ns()
        state["path"] = str(session.path)
        state["error"] = session.error
        app.quit()

    notes = QtCore.QTimer()
    notes.timeout.connect(note)
    notes.start(round(NOTE_S / speed * 1000))
    watch = QtCore.QTimer()
    watch.timeout.connect(announce)
    watch.start(50)
    app.exec()
    if session.recording:
        session.stop("soak ended")
    result_path.write_text(json.dumps(state))
    return 0


# -- the driver ----------------------------------------------------------------------------------
def proc_sample(pid: int) -> tuple[float, float] | None:
    """(VmRSS MB, user + system CPU s) of a process, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fields = stat.rsplit(")", 1)[1].split()
    return rss / 1024, (int(fields[11]) + int(fields[12])) / TICK


class LslReader(threading.Thread):
    """A pylsl inlet on the recorder's EMG outlet (loopback config), counting what it gets."""

    def __init__(self) -> None:
        super().__init__(name="soak-lsl", daemon=True)
        self.samples = 0
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            from needlelab.lsl import pylsl_module

            pylsl = pylsl_module()
            found = []
            deadline = time.monotonic() + 60
            while not found and not self.stop.is_set() and time.monotonic() < deadline:
                found = pylsl.resolve_byprop("name", "emg.emg", 1, 1.0)
            if not found:
                self.error = "no emg.emg outlet found"
                return
            inlet = pylsl.StreamInlet(found[0], max_buflen=60)
            inlet.open_stream(timeout=10)
            while not self.stop.is_set():
                _, stamps = inlet.pull_chunk(timeout=0.2, max_samples=100_000)
                self.samples += len(stamps)
            inlet.close_stream()
        except Exception as exc:  # said in the results, never a hang
            self.error = f"{type(exc).__name__}: {exc}"


def align(sent: np.ndarray, host_ns: np.ndarray, stored: np.ndarray) -> tuple[int, int, int, float]:
    """Where the stored samples start in the sent messages, and how many of them are not the
    sent message at their place. Nothing lost means the file holds a contiguous run of what was
    sent, in order: stored sample j is sent message a + j (same values, sent no later than it
    arrived + SLACK_NS: a serial driver dates a message by when it ended on the line,
    estimated from the bytes read after it). `a` is the start with the fewest misfits (not
    the same values) among the messages that could be the first; also how many fit but were
    dated more than SLACK_NS before they were sent, and the worst of those (ms). `sent`: rows
    of (monotonic ns, values...)."""
    n = len(stored)
    if n == 0:
        return 0, 0, 0, 0.0
    last = int(np.searchsorted(sent[:, 0], host_ns[0] + SLACK_NS, side="right"))
    best = (0, n, 0, 0.0)
    for a in range(last - 1, max(-1, last - 200), -1):
        if not np.allclose(sent[a, 1:], stored[0], atol=1e-3):
            continue
        ahead = sent[a : a + n]
        same = np.all(np.isclose(ahead[:, 1:], stored[: len(ahead)], atol=1e-3), axis=1)
        # A sample dated before its message was sent: there, in order, but stamped early.
        early_ns = ahead[:, 0] - host_ns[: len(ahead)]
        early = same & (early_ns > SLACK_NS)
        misfits = int(n - same.sum())
        if misfits < best[1]:
            worst = float(early_ns[early].max() / 1e6) if early.any() else 0.0
            best = (a, misfits, int(early.sum()), worst)
        if misfits == 0:
            break
    return best


def account(path: Path, truth: Any, stop_ns: int) -> dict[str, dict[str, Any]]:
    """Per stream: every sample the simulator sent while the recorder listened (EMG: every
    frame sent while a central was subscribed; stimulator and caliper: from the device's
    connect event on) until IN_FLIGHT_S before its stop, against the file. `missing`: sent
    then, not in the file; `misfit`: stored samples that are not the sent message at their
    place (a loss in the middle shifts the rest), or EMG frames never sent; `declared_lost`:
    the file's own gap events (a gap of unknown size counts 1)."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    out: dict[str, dict[str, Any]] = {}
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        anchor = conn.execute("SELECT anchor_monotonic_ns FROM session").fetchone()[0]
        connect = {
            src: anchor + t
            for src, t in conn.execute(
                "SELECT source, MIN(t_ns) FROM events WHERE kind = 'device.info' GROUP BY source"
            )
        }
        lost: dict[str, int] = {}
        gaps: dict[str, list[str]] = {}
        for (payload,) in conn.execute("SELECT payload FROM events WHERE kind = 'gap'"):
            gap = json.loads(payload)
            lost[gap["stream"]] = lost.get(gap["stream"], 0) + max(1, gap["samples_lost"] or 0)
            # Where and why, so a failing run says what happened without a rerun.
            gaps.setdefault(gap["stream"], []).append(
                f"{gap['start_ns'] / 1e9:.0f} s +{(gap['end_ns'] - gap['start_ns']) / 1e9:.1f} s"
                f" {'unknown' if gap['samples_lost'] is None else gap['samples_lost']} lost"
                f" {gap.get('reason') or ''}".rstrip()
            )

        def blocks(name: str) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT b.n, b.t_host_ns, b.device_counter, b.data FROM blocks b JOIN streams s "
                "ON s.id = b.stream_id WHERE s.name = ? ORDER BY b.id",
                (name,),
            ).fetchall()

        end = stop_ns - IN_FLIGHT_S * 1e9
        for name in ("emg.emg", "caliper.distance", "stim.ch1", "stim.ch2"):
            device = name.split(".")[0]
            # No connect event: everything the simulator sent counts (fails closed, where the
            # recorder's silence would otherwise make nothing due).
            start = connect.get(device, -(2**63))
            rows = blocks(name)
            n_stored = sum(r[0] for r in rows)
            if name.endswith(".emg"):
                spf = int(truth[f"{name}.spf"][0])
                log = truth[name]
                ok = log[log[:, 2] == 1]
                counters = np.array([r[2] for r in rows], np.int64)
                host = np.array([r[1] for r in rows], np.int64) + anchor
                seqs = np.empty(0, np.int64)
                if len(rows):
                    # The file's frame counters, unwrapped from where its first frame was sent.
                    c0 = ok[(ok[:, 0] % 65536 == counters[0] % 65536) & (ok[:, 1] <= host[0])]
                    s0 = int(c0[-1, 0]) if len(c0) else -(10**9)
                    steps = np.diff(counters) % 65536
                    seqs = s0 + np.concatenate([[0], np.cumsum(steps)])
                # Every frame sent to a subscribed central counts, from the first: the
                # subscription is the simulator's truth, not the recorder's word.
                window = ok[ok[:, 1] < end, 0]
                missing = spf * int(np.isin(window, seqs, invert=True).sum())
                extra = spf * int(np.isin(seqs, ok[:, 0], invert=True).sum())
                extra += abs(n_stored - spf * len(rows))  # a block that is not one frame
                sent_n, in_flight = spf * len(window), spf * int((ok[:, 1] >= end).sum())
                early, early_ms = 0, 0.0  # EMG samples are dated by the clock model, not here
                before = spf * int((ok[:, 1] < start).sum())
            else:
                log = truth[name]
                width = log.shape[1] - 1
                # A block holds every reading of one arrival (a connection event's several).
                stored = np.concatenate(
                    [np.frombuffer(r[3], np.float32).reshape(r[0], width) for r in rows]
                    or [np.empty((0, width), np.float32)]
                ).astype(np.float64)
                host = np.repeat(np.array([r[1] for r in rows], np.int64), [r[0] for r in rows])
                host += anchor
                first, extra, early, early_ms = align(log, host, stored)
                inside = np.flatnonzero((log[:, 0] >= start) & (log[:, 0] < end))
                missing = int(((inside < first) | (inside >= first + len(stored))).sum())
                sent_n, in_flight = len(inside), int((log[:, 0] >= end).sum())
                before = int((log[:, 0] < start).sum())
            out[name] = {
                "sent_before_connect": before, "sent": sent_n, "in_flight_at_stop": in_flight,
                "stored": n_stored, "missing": missing, "misfit": extra,
                "declared_lost": lost.get(name, 0), "unaccounted": missing + extra,
                "stamped_early": early, "early_max_ms": early_ms, "gaps": gaps.get(name, []),
            }  # fmt: skip
    return out


def run(
    minutes: float, speed: float, folder: Path, warmup_min_s: float = WARMUP_MIN_S
) -> dict[str, Any]:
    """One soak; every figure and count."""
    seconds = minutes * 60
    sims_cfg = sim_config(folder, speed)
    (folder / "sims.json").write_text(json.dumps(sims_cfg))
    workdir = folder / "sim"
    workdir.mkdir(mode=0o700)
    truth_path = folder / "truth.npz"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    me = [sys.executable, str(HERE)]
    sims = subprocess.Popen(
        [*me, "--role", "sims", str(folder / "sims.json"), str(workdir), str(truth_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    app: subprocess.Popen[str] | None = None
    lsl = LslReader()
    readings: list[tuple[float, float, float, float | None]] = []  # t, rss, app cpu, sims cpu
    try:
        assert sims.stdout is not None
        line = sims.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator process failed: {sims.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        endpoints = json.loads(line)
        (folder / "app.json").write_text(json.dumps(app_config(sims_cfg, endpoints)))
        app = subprocess.Popen(
            [*me, "--role", "app", str(folder / "app.json"), str(folder / "result.json"),
             str(seconds), str(speed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        assert app.stdout is not None
        line = app.stdout.readline()
        if not line.startswith("streaming "):
            raise RuntimeError(f"the recorder did not stream: {app.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        lsl.start()
        t0 = time.monotonic()
        while app.poll() is None:
            ours, theirs = proc_sample(app.pid), proc_sample(sims.pid)
            if ours is not None:
                readings.append((time.monotonic() - t0, ours[0], ours[1],
                                 theirs[1] if theirs else None))  # fmt: skip
            time.sleep(2.0)
        err = app.stderr.read() if app.stderr is not None else ""
        if app.returncode != 0:
            raise RuntimeError(f"the recorder exited {app.returncode}: {err[-2000:]}")
        result = json.loads((folder / "result.json").read_text())
    finally:
        lsl.stop.set()
        if app is not None and app.poll() is None:
            app.kill()
            app.wait()
        sims.send_signal(signal.SIGTERM)
        try:
            sims.wait(60)
        except subprocess.TimeoutExpired:
            sims.kill()
            sims.wait()
        for proc in (sims, app):
            if proc is not None:
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
        lsl.join(10)
    truth = np.load(truth_path)
    path = Path(result["path"])
    from needlelab.record import verify_report

    verified = bool(verify_report(path)["ok"])
    accounts = account(path, truth, int(result["stop_ns"]))
    # Warm-up: the first 10 % of the run, at least warmup_min_s.
    warm_s = max(warmup_min_s, 0.1 * seconds)
    during = [r for r in readings if r[0] <= seconds]
    warm = next((r for r in during if r[0] >= warm_s), during[0])
    after = [r for r in during if r[0] >= warm[0]]
    last = after[-1]
    span = last[0] - warm[0]
    app_cpu = (last[2] - warm[2]) / span if span > 0 else float("nan")
    sims_cpu = ((last[3] - warm[3]) / span
                if span > 0 and last[3] is not None and warm[3] is not None else None)  # fmt: skip
    rate = float(truth["emg.emg.rate"][0])
    session_min = accounts["emg.emg"]["stored"] / (rate / speed) / 60  # what the file holds
    # Growth per hour of session: a least-squares line through the readings after warm-up,
    # its slope in real time scaled by the session time the run delivered per real second.
    t = np.array([r[0] for r in after])
    mb = np.array([r[1] for r in after])
    slope = float(np.polyfit(t, mb, 1)[0]) if len(after) >= 3 else 0.0  # MB per real s
    per_real = session_min * 60 / seconds  # session s per real s
    mb_per_session_h = slope / per_real * 3600 if per_real > 0 else float("nan")
    return {
        "minutes": minutes, "speed": speed, "session_min": session_min,
        "warmup_s": warm[0], "rss_warm_mb": warm[1], "mb_per_session_h": mb_per_session_h,
        "rss_end_mb": last[1], "rss_max_mb": max(r[1] for r in after),
        "growth_mb": max(r[1] for r in after) - warm[1], "app_cpu": app_cpu, "sims_cpu": sims_cpu,
        "sims_maxrss_mb": float(truth["maxrss_mb"][0]), "frames": result["frames"],
        "fps": result["frames"] / seconds, "notes": result["notes"],
        "close_s": (result["closed_ns"] - result["stop_ns"]) / 1e9, "lsl_samples": lsl.samples,
        "lsl_error": lsl.error, "error": result["error"], "verified": verified,
        "accounts": accounts, "file_mb": path.stat().st_size / 1e6, "file": str(path),
        "stop_ns": int(result["stop_ns"]),
        "unaccounted": sum(a["unaccounted"] for a in accounts.values()),
        "declared_lost": sum(a["declared_lost"] for a in accounts.values()),
        "rss": [(round(t, 1), round(mb, 1)) for t, mb, _, _ in readings],
    }  # fmt: skip


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "sims":
            return sims_main(*(Path(a) for a in rest))  # type: ignore[call-arg]
        return app_main(Path(rest[0]), Path(rest[1]), float(rest[2]), float(rest[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=65.0, help="real time to run")
    parser.add_argument("--speed", type=float, default=2.0, help="simulators at this many x rate")
    parser.add_argument("--warmup-s", type=float, default=WARMUP_MIN_S,
                        help="least warm-up (real s; else 10 %% of the run)")  # fmt: skip
    parser.add_argument(
        "--extrapolate-h",
        type=float,
        default=2.0,
        help="also extrapolate the growth to this session length (0: no)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    load_before = load_average()
    print(f"soak_system: {args.minutes:g} min real time, simulators at {args.speed:g}x "
          f"(EMG {BASE_RATE * args.speed:g} Hz x 8 ch), monitor offscreen, LSL loopback with "
          f"an inlet; load average {load_before:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        r = run(args.minutes, args.speed, Path(tmp), args.warmup_s)
    load_after = load_average()
    print(f"{'s':>7} {'RSS MB':>8}")
    for t, mb in r["rss"][:: max(1, len(r["rss"]) // 20)]:
        print(f"{t:>7.0f} {mb:>8.1f}")
    print(f"{'stream':<18} {'before':>8} {'sent':>10} {'stored':>10} {'in flight':>9} "
          f"{'missing':>8} {'misfit':>6} {'declared':>8} {'early':>6}")  # fmt: skip
    for stream, a in r["accounts"].items():
        print(f"{stream:<18} {a['sent_before_connect']:>8} {a['sent']:>10} {a['stored']:>10} "
              f"{a['in_flight_at_stop']:>9} {a['missing']:>8} {a['misfit']:>6} "
              f"{a['declared_lost']:>8} {a['stamped_early']:>6}"
              + (f" ({a['early_max_ms']:.1f} ms)" if a["stamped_early"] else ""))  # fmt: skip
    growth = r["growth_mb"]
    extrapolated = None
    if args.extrapolate_h > 0 and r["session_min"] < args.extrapolate_h * 60:
        extrapolated = max(growth, r["mb_per_session_h"] * args.extrapolate_h)
    figure_mb = growth if extrapolated is None else extrapolated
    watched_s = args.minutes * 60 - r["warmup_s"]
    ok_mem: bool | None = figure_mb <= GOAL_MB if watched_s >= JUDGE_MIN_S else None
    ok_count = r["unaccounted"] == 0 and r["declared_lost"] == 0 and r["verified"]
    ok_count = ok_count and r["error"] is None
    loaded = max(load_before, load_after) > (os.cpu_count() or 1) * 0.5
    load = f"load {load_before:.1f}-{load_after:.1f} on {os.cpu_count()} CPUs" + (
        ", LOADED machine" if loaded else ""
    )
    sims_cpu = r["sims_cpu"] if r["sims_cpu"] is not None else float("nan")
    print(
        f"{r['session_min']:.1f} min of session samples in {args.minutes:g} min: RSS "
        f"{r['rss_warm_mb']:.0f} MB after {r['warmup_s']:.0f} s warm-up, max "
        f"{r['rss_max_mb']:.0f}, end {r['rss_end_mb']:.0f}: growth {growth:.1f} MB, trend "
        f"{r['mb_per_session_h']:+.1f} MB per session hour"
        + (f", {extrapolated:.1f} MB extrapolated to {args.extrapolate_h:g} h"
           if extrapolated is not None else "")
        + f" (goal <= {GOAL_MB:.0f}); CPU recorder {r['app_cpu']:.2f} s/s, simulators "
        f"{sims_cpu:.2f} s/s; monitor {r['fps']:.1f} fps; LSL inlet got {r['lsl_samples']} EMG "
        f"samples{' (' + r['lsl_error'] + ')' if r['lsl_error'] else ''}; {r['unaccounted']} "
        f"samples unaccounted, {r['declared_lost']} declared lost; file {r['file_mb']:.0f} MB "
        f"{'verifies' if r['verified'] else 'does NOT verify'}; {load}"
    )  # fmt: skip
    # A failing count names its streams and their gaps: the bench keeps only the rows.
    faults = "; ".join(
        f"{stream}: {a['missing']} missing, {a['misfit']} misfit, gaps [{', '.join(a['gaps'])}]"
        for stream, a in r["accounts"].items()
        if a["unaccounted"] or a["declared_lost"]
    )
    run_text = (f"{args.speed:g}x rate for {args.minutes:g} min = {r['session_min']:.0f} min of "
                f"session; stim pty + BLE EMG, caliper sims in own process, monitor offscreen, "
                f"LSL; {load}")  # fmt: skip
    grown = (f"measured {growth:.1f} MB, {r['mb_per_session_h']:+.1f} MB/h trend, "
             f"extrapolated to {args.extrapolate_h:g} h" if extrapolated is not None
             else "measured, not extrapolated")  # fmt: skip
    write_json(
        args.json,
        [
            Row("S1", f"whole-system memory growth ({grown}; {run_text})", figure_mb, "MB",
                f"<= {GOAL_MB:.0f} MB" + ("" if ok_mem is not None else
                f" (not judged: {watched_s:.0f} s after warm-up)"), ok_mem, better="lower"),
            Row("S2", f"whole-system CPU of the recorder per real s ({args.speed:g}x rate, "
                f"monitor {r['fps']:.0f} fps; simulators {sims_cpu:.2f} s/s more; {load})",
                r["app_cpu"], "CPU s/s", "measured (no goal)", None, better="lower"),
            Row("S3", f"samples unaccounted: file vs simulators' send logs, 4 streams, "
                f"{r['declared_lost']} declared lost, no faults ({r['session_min']:.0f} min "
                "of session)" + (f"; {faults}" if faults else ""), float(r["unaccounted"]),
                "samples", "0, 0 declared lost", ok_count, better="lower"),
        ],
        **r, extrapolated_mb=extrapolated, load_before=load_before, load_after=load_after,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
