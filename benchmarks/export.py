"""Exports of long sessions: does memory stay flat, and how long does each format take?

Load: synthetic sessions of 16 ch x 2 kHz EMG (float32 noise in 100-sample blocks whose
arrivals come from a crystal 80 ppm fast with 0-2 ms of latency jitter, so the grid is
resampled for real), a stimulator settings stream every 2 s and a clinician event every 5 s,
written by the real SessionWriter from a real Hub, of each length given (--minutes). Each
export (XDF, EDF+, BDF+, CSV, BIDS) runs alone in a fresh process; its peak resident memory
(VmHWM) and wall time are read. The peer is the whole-file way the project wrote EDF before
(every sample in memory, then edfio's Edf.write), given the same EMG.

Goal (E1): peak memory of every export <= 300 MB and flat with session length (the longest
session's peak within 50 MB of the shortest's); 2 h of session needs --minutes 120.

    python benchmarks/export.py [--minutes 1 10 60] [--formats xdf edf bdf csv bids] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
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
start = time.perf_counter()
if fmt == "peer":
    # The whole-file way: every sample in memory, then edfio (as export.py did before).
    import edfio, numpy as np
    from needlelab.record import open_session
    with open_session(source) as s:
        t_ns, values = s.stream("emg.emg")
        wall = s.meta["anchor_wall_ns"]
    data = np.asarray(values, dtype=np.float64)
    peak = float(np.abs(data).max()) * 1.01
    n = len(data) // 2000 * 2000
    signals = [edfio.EdfSignal(data[:n, c], 2000, label=f"EMG {c + 1}", physical_dimension="uV",
                               physical_range=(-peak, peak)) for c in range(data.shape[1])]
    edfio.Edf(signals).write(out)
else:
    from needlelab.record import export
    if fmt == "bids":
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
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--formats", nargs="+", default=["xdf", "edf", "bdf", "csv", "bids"])
    parser.add_argument(
        "--peer-minutes",
        type=float,
        default=10.0,
        help="the longest session the peer is run on (it holds all in memory)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
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
            for fmt in formats:
                suffix = {"csv": "_csv", "bids": "_bids", "peer": "_peer.edf"}.get(fmt, f".{fmt}")
                out = folder / f"out{suffix}"
                r = run_child(CHILD, str(source), fmt, str(out))
                r.update(minutes=minutes, format=fmt, file_mb=size_mb(out))
                results.append(r)
                print(f"{minutes:>8g} {fmt:>8} {r['seconds']:>8.1f} "
                      f"{minutes * 60 / r['seconds']:>7.0f} {r['peak_mb']:>8.0f} "
                      f"{r['file_mb']:>8.0f}")  # fmt: skip
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            source.unlink()
    ours = [r for r in results if r["format"] != "peer"]
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
    write_json(
        args.json,
        [Row("E1", f"export peak memory, {longest:g} min 16 ch x 2 kHz (any format)", peak, "MB",
             f"<= {GOAL_MB:.0f} MB, flat (+<= {FLAT_MB:.0f} MB from {shortest:g} min)", met,
             peer=f"edfio whole file, {peer['minutes']:g} min" if peer else "",
             peer_value=peer["peak_mb"] if peer else None,
             ratio=(peer["peak_mb"] / edf_same["peak_mb"]) if peer and edf_same else None,
             better="lower")],
        results=results, baseline_mb=base,
    )  # fmt: skip


if __name__ == "__main__":
    main()
