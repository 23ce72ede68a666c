"""Exports of long sessions: does memory stay flat, and how long does each format take?

Load: synthetic sessions of 16 ch x 2 kHz EMG (float32 noise in 100-sample blocks whose
arrivals come from a crystal 80 ppm fast with 0-2 ms of latency jitter, so the grid is
resampled for real), a stimulator settings stream every 2 s and a clinician event every 5 s,
written by the real SessionWriter from a real Hub, of each length given (--minutes). Each
export (XDF, EDF+, BDF+, CSV, BIDS) runs alone in a fresh process; its peak resident memory
(VmHWM) and wall time are read. `needlelab report` runs on each session too (unless
--no-report), as a command in its own process (peak resident memory from the kernel's rusage of
that child). The peer is the whole-file way the project wrote EDF before (every sample in
memory, then edfio's Edf.write), given the same EMG; beside BIDS, the ecosystem's way to a BIDS
EMG dataset (every sample in an MNE Raw, then mne-bids' write_raw_bids to EDF). The sessions
are written as fast as the writer takes them (a 2 h one in about a minute), not in real time.

Goals: E1 peak memory of every export <= 300 MB and flat with session length (the longest
session's peak within 50 MB of the shortest's). E2-E9, at the longest session (2 h of session
is --minutes 120): the time and peak memory of the XDF, EDF+ and BIDS exports and of the report,
each peak <= 300 MB; EDF+ and BIDS beside their peers when --peer-minutes reaches it.

    python benchmarks/export.py [--minutes 1 10 120] [--formats xdf edf bdf csv bids]
        [--peer-minutes 120] [--no-report] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _results import Row, write_json
from needlelab.clock import SessionClock
from needlelab.events import MarkerEvent, StimSettings, StimSettingsEvent
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, session_file_name
from needlelab.streams import Chunk, StreamKind, StreamSpec

RATE = 2000
CHANNELS = 16
BLOCK = 100
DRIFT_PPM = 80
GOAL_MB = 300.0
FLAT_MB = 50.0

CHILD = r"""
import json, sys, time
from pathlib import Path
source, fmt, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
# Each side's imports come before its clock starts (about a second each here; not the export).
from needlelab.record import export, open_session
if fmt == "peer":
    import edfio, numpy as np
elif fmt == "bids_peer":
    import mne, mne_bids, numpy as np
start = time.perf_counter()
if fmt == "peer":
    # The whole-file way: every sample in memory, then edfio (as export.py did before).
    with open_session(source) as s:
        t_ns, values = s.stream("emg.emg")
        wall = s.meta["anchor_wall_ns"]
    data = np.asarray(values, dtype=np.float64)
    peak = float(np.abs(data).max()) * 1.01
    n = len(data) // 2000 * 2000
    signals = [edfio.EdfSignal(data[:n, c], 2000, label=f"EMG {c + 1}", physical_dimension="uV",
                               physical_range=(-peak, peak)) for c in range(data.shape[1])]
    edfio.Edf(signals).write(out)
elif fmt == "bids_peer":
    # The ecosystem's way to a BIDS EMG dataset: every sample in an MNE Raw, then mne-bids.
    with open_session(source) as s:
        t_ns, values = s.stream("emg.emg")
    data = np.asarray(values, dtype=np.float64).T * 1e-6
    info = mne.create_info([f"EMG {c + 1}" for c in range(len(data))], 2000.0, "emg")
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.info["line_freq"] = 50
    path = mne_bids.BIDSPath(subject="BENCH", session="1", task="needling", datatype="emg",
                             root=out)
    mne_bids.write_raw_bids(raw, path, format="EDF", allow_preload=True, emg_placement="Other",
                            verbose="error")
elif fmt == "bids":
    export(source, "edf", None, (out, "BENCH", "1"))
else:
    export(source, fmt, out)
took = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": took, "peak_mb": hwm / 1024}))
"""

BASELINE = r"""
import json
import needlelab.record.export, needlelab.record.bids, numpy, edfio, mne
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_mb": hwm / 1024}))
"""


def write_session(folder: Path, minutes: float) -> Path:
    """A synthetic session of `minutes`, written by the real writer."""
    hub = Hub(SessionClock())
    wall = 1_795_443_906_661_234_567
    meta = SessionMeta(session_id="bench", patient_id="BENCH01", anchor_monotonic_ns=0,
                       anchor_wall_ns=wall, config_json='{"session": {"patient_id": "BENCH01"}}',
                       software_version="bench")  # fmt: skip
    writer = SessionWriter(folder / session_file_name("BENCH01", wall), hub, meta)
    writer.start()
    names = tuple(f"EMG L3 multifidus R {c + 1}" for c in range(CHANNELS))
    emg = StreamSpec("emg.emg", "EMG", names,
                     ("uV",) * CHANNELS, StreamKind.REGULAR, RATE, device="emg")  # fmt: skip
    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    hub.add_stream(emg)
    hub.add_stream(stim)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((RATE * 4, CHANNELS)) * 40).astype(np.float32)
    period = 1e9 / RATE / (1 + DRIFT_PPM * 1e-6)
    total = int(minutes * 60 * RATE / BLOCK)
    for k in range(total):
        first = k * BLOCK
        arrival = round(5e6 + (first + BLOCK - 1) * period + 3e6 + rng.integers(0, 2_000_000))
        at = first % (len(noise) - BLOCK)
        hub.push(Chunk("emg.emg", noise[at : at + BLOCK], arrival, first))
        if k % (2 * RATE // BLOCK) == 0:  # every 2 s
            t = np.array([arrival], np.int64)
            hub.push(Chunk("stim.ch1", np.array([[2, (k // 40) % 20]], np.float32), arrival,
                           k // 40, t))  # fmt: skip
            hub.emit(StimSettingsEvent(t_ns=arrival, source="stim", settings=StimSettings(
                frequency_hz=2, pulse_width_us=250, intensity_ma=(k // 40) % 20,
                output_on=True)))  # fmt: skip
        if k % (5 * RATE // BLOCK) == 0:  # every 5 s
            hub.emit(MarkerEvent(t_ns=arrival, text=f"note {k}", source="clinician"))
        while hub.backlog() > 2000:
            time.sleep(0.001)
    writer.stop()
    if writer.error is not None or writer.dropped:
        raise RuntimeError(f"the writer failed: {writer.error} ({writer.dropped} dropped)")
    return writer.path


def run_report(source: Path, out: Path) -> dict[str, Any]:
    """`needlelab report SOURCE --out OUT` in its own process: wall time and peak memory."""
    out.mkdir()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "needlelab.cli", "report", str(source), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"needlelab report failed: {errors.decode()[-500:]}")
    return {"seconds": took, "peak_mb": usage.ru_maxrss / 1024}


def run_child(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 120])
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["xdf", "edf", "bdf", "bids"],
        help="of xdf edf bdf csv bids (csv: slow for hours, not by default)",
    )
    parser.add_argument(
        "--peer-minutes",
        type=float,
        default=10.0,
        help="the longest session the peer is run on (it holds all in memory)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="do not time `needlelab report` on each session"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    base = run_child(BASELINE)["peak_mb"]
    print(
        f"export: {CHANNELS} ch x {RATE} Hz, {DRIFT_PPM} ppm; a process importing the "
        f"exporters peaks at {base:.0f} MB"
    )
    print(f"{'minutes':>8} {'format':>8} {'seconds':>8} {'x real':>7} {'peak MB':>8} "
          f"{'file MB':>8}")  # fmt: skip
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for minutes in args.minutes:
            folder = Path(tmp) / f"m{minutes:g}"
            folder.mkdir()
            began = time.perf_counter()
            source = write_session(folder, minutes)
            wrote = time.perf_counter() - began
            print(f"{minutes:>8g} {'(write)':>8} {wrote:>8.1f} {minutes * 60 / wrote:>7.0f} "
                  f"{'':>8} {size_mb(source):>8.0f}")  # fmt: skip
            formats = list(args.formats)
            if minutes <= args.peer_minutes:
                formats.append("peer")
                if "bids" in args.formats:
                    formats.append("bids_peer")
            if not args.no_report:
                formats.append("report")
            for fmt in formats:
                suffix = {"csv": "_csv", "bids": "_bids", "peer": "_peer.edf", "report": "_report",
                          "bids_peer": "_bids_peer"}  # fmt: skip
                out = folder / f"out{suffix.get(fmt, f'.{fmt}')}"
                if fmt == "report":
                    r = run_report(source, out)
                else:
                    r = run_child(CHILD, str(source), fmt, str(out))
                r.update(minutes=minutes, format=fmt, file_mb=size_mb(out))
                results.append(r)
                print(f"{minutes:>8g} {fmt:>8} {r['seconds']:>8.1f} "
                      f"{minutes * 60 / r['seconds']:>7.0f} {r['peak_mb']:>8.0f} "
                      f"{r['file_mb']:>8.0f}")  # fmt: skip
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            source.unlink()
    ours = [r for r in results if r["format"] not in ("peer", "bids_peer", "report")]
    peak = max(r["peak_mb"] for r in ours)
    longest, shortest = max(args.minutes), min(args.minutes)
    growth = max(
        max(r["peak_mb"] for r in ours if r["minutes"] == longest and r["format"] == f)
        - min(r["peak_mb"] for r in ours if r["minutes"] == shortest and r["format"] == f)
        for f in args.formats
    )
    met = peak <= GOAL_MB and growth <= FLAT_MB
    peers = [r for r in results if r["format"] == "peer"]
    peer = max(peers, key=lambda r: r["minutes"]) if peers else None
    edf_same = next((r for r in ours if r["format"] == "edf" and peer
                     and r["minutes"] == peer["minutes"]), None)  # fmt: skip
    print(f"peak memory of any export {peak:.0f} MB (goal <= {GOAL_MB:.0f} MB), growth from "
          f"{shortest:g} to {longest:g} min {growth:+.0f} MB (goal <= {FLAT_MB:.0f} MB): "
          f"{'met' if met else 'NOT met'}")  # fmt: skip
    if peer is not None and edf_same is not None:
        print(f"peer (all in memory, edfio) at {peer['minutes']:g} min: {peer['peak_mb']:.0f} MB, "
              f"{peer['seconds']:.1f} s; needlelab EDF+ {edf_same['peak_mb']:.0f} MB, "
              f"{edf_same['seconds']:.1f} s")  # fmt: skip
    load = max(load_start, os.getloadavg()[0])
    loaded = f"; load {load:.1f} on {os.cpu_count()} CPUs" + (
        ", LOADED machine" if load > (os.cpu_count() or 1) * 0.5 else ""
    )
    rows = [Row("E1", f"export peak memory, {longest:g} min 16 ch x 2 kHz (any format)", peak, "MB",
             f"<= {GOAL_MB:.0f} MB, flat (+<= {FLAT_MB:.0f} MB from {shortest:g} min)", met,
             peer=f"edfio whole file, {peer['minutes']:g} min" if peer else "",
             peer_value=peer["peak_mb"] if peer else None,
             ratio=peer["peak_mb"] / peak if peer else None,  # against the figure shown
             better="lower")]  # fmt: skip
    bids_peer = next((r for r in results if r["format"] == "bids_peer"
                      and r["minutes"] == longest), None)  # fmt: skip
    rows += longest_rows(results, longest, peer, bids_peer, loaded)
    write_json(args.json, rows, results=results, baseline_mb=base, load=load)


def longest_rows(
    results: list[dict[str, Any]],
    minutes: float,
    peer: dict[str, Any] | None,
    bids_peer: dict[str, Any] | None,
    loaded: str,
) -> list[Row]:
    """E2-E9: time and peak memory of XDF, EDF+, BIDS and the report at the longest session;
    EDF+ beside the edfio whole-file peer and BIDS beside mne-bids' write_raw_bids (from an MNE
    Raw holding every sample) if they ran on that session."""
    names = {"xdf": "XDF", "edf": "EDF+", "bids": "BIDS (EDF+)", "report": "needlelab report"}
    size = f"{minutes:g} min 16 ch x 2 kHz session"
    peers = {
        "edf": (peer, f"edfio whole file (all in memory), {minutes:g} min"),
        "bids": (bids_peer, f"mne-bids write_raw_bids of an in-memory Raw, {minutes:g} min"),
    }
    rows = []
    for k, fmt in enumerate(names):
        r = next((r for r in results if r["format"] == fmt and r["minutes"] == minutes), None)
        if r is None:
            continue
        p, pname = peers.get(fmt, (None, ""))
        if p is None or p["minutes"] != minutes:
            p, pname = None, ""
        what = "" if fmt == "report" else " export"
        rows.append(
            Row(
                f"E{2 + 2 * k}",
                f"{names[fmt]}{what} time, {size} ({minutes * 60 / r['seconds']:.0f}"
                f"x real time{loaded})",
                r["seconds"],
                "s",
                "measured (no goal)",
                None,
                pname,
                p["seconds"] if p else None,
                (p["seconds"] / r["seconds"]) if p else None,
                better="lower",
            )
        )
        rows.append(Row(
            f"E{3 + 2 * k}", f"{names[fmt]}{what} peak memory, {size}", r["peak_mb"], "MB",
            f"<= {GOAL_MB:.0f} MB", r["peak_mb"] <= GOAL_MB, pname, p["peak_mb"] if p else None,
            (p["peak_mb"] / r["peak_mb"]) if p else None, better="lower",
        ))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
