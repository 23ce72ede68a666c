"""The EDF grid over a long session: do samples stay where the clock model puts them, and is
the signal's power kept band by band?

Load: one EMG channel of white noise at 2 kHz from a crystal --ppm fast (default 100: 0.72 s
of drift over 2 h), in 100-sample blocks with 3-5 ms of arrival latency, written by the real
SessionWriter (accelerated: the session's time is simulated). The session is exported to EDF+;
pyedflib reads it back. At --points places through the session, the stored samples (at their
clock-model times, read with open_session) are located in the export by cross-correlation, and
the band power of 20 s of export is compared with that of the stored samples.

Goals (G1, G2): every offset within 1 ms; every band ratio (1-900 Hz) within 0.98-1.02.
Peer: placing the samples at the nominal rate from the first one (what a writer that ignores
the clock does), whose offset at the end is the drift.

    python benchmarks/grid.py [--hours 2] [--ppm 100] [--points 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
import pyedflib
from scipy.signal import welch

from _results import Row, write_json
from needlelab.clock import SessionClock
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, export, open_session, session_file_name
from needlelab.streams import Chunk, StreamKind, StreamSpec

RATE = 2000
BLOCK = 100
BANDS = [(1, 20), (20, 50), (50, 100), (100, 250), (250, 450), (450, 700), (700, 900)]


def write(folder: Path, hours: float, ppm: float) -> Path:
    hub = Hub(SessionClock())
    wall = 1_795_443_906_661_234_567
    meta = SessionMeta(session_id="grid", patient_id="GRID01", anchor_monotonic_ns=0,
                       anchor_wall_ns=wall, config_json='{"session": {"patient_id": "GRID01"}}',
                       software_version="bench")  # fmt: skip
    writer = SessionWriter(folder / session_file_name("GRID01", wall), hub, meta)
    writer.start()
    spec = StreamSpec("emg.emg", "EMG", ("EMG 1",), ("uV",), StreamKind.REGULAR, RATE,
                      device="emg")  # fmt: skip
    hub.add_stream(spec)
    rng = np.random.default_rng(1)
    period = 1e9 / RATE / (1 + ppm * 1e-6)
    for k in range(int(hours * 3600 * RATE / BLOCK)):
        first = k * BLOCK
        arrival = round(5e6 + (first + BLOCK - 1) * period + 3e6 + rng.integers(0, 2_000_000))
        values = (rng.standard_normal((BLOCK, 1)) * 40).astype(np.float32)
        hub.push(Chunk("emg.emg", values, arrival, first))
        while hub.backlog() > 2000:
            time.sleep(0.001)
    writer.stop()
    return writer.path


def lag_s(grid: np.ndarray, times_s: np.ndarray, values: np.ndarray) -> float:
    """Cross-correlation peak of the stored samples at their nearest grid points against the
    export, refined by a parabola (as tests/integration/test_grid.py)."""
    placed = np.zeros(len(grid))
    at = np.rint(times_s * RATE).astype(np.int64)
    inside = (at >= 0) & (at < len(grid))
    placed[at[inside]] = values[inside]
    lags = np.arange(-20, 21)
    core = slice(20, len(grid) - 20)
    corr = np.array([np.dot(placed[core], np.roll(grid, -lag)[core]) for lag in lags])
    k = int(np.argmax(corr))
    if not 0 < k < len(lags) - 1:
        return float("inf")
    a, b, c = corr[k - 1 : k + 2]
    return float(lags[k] + 0.5 * (a - c) / (a - 2 * b + c)) / RATE


def bands(x: np.ndarray) -> np.ndarray:
    f, p = welch(x, fs=RATE, nperseg=4096)
    return np.array([p[(f >= lo) & (f < hi)].sum() for lo, hi in BANDS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--ppm", type=float, default=100.0)
    parser.add_argument("--points", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        began = time.perf_counter()
        source = write(Path(tmp), args.hours, args.ppm)
        wrote = time.perf_counter() - began
        began = time.perf_counter()
        path = export(source, "edf", Path(tmp) / "g.edf")
        took = time.perf_counter() - began
        with open_session(source) as s:
            t_ns, values = s.stream("emg.emg")
            wall = s.meta["anchor_wall_ns"]
        values = np.asarray(values[:, 0], dtype=np.float64)
        reader = pyedflib.EdfReader(str(path))
        try:
            grid = reader.readSignal(0)
            start = dt.datetime(
                reader.startdate_year,
                reader.startdate_month,
                reader.startdate_day,
                reader.starttime_hour,
                reader.starttime_minute,
                reader.starttime_second,
                tzinfo=dt.UTC,
            )
            start_ns = int(start.timestamp()) * 10**9 + reader.starttime_subsecond * 100
        finally:
            reader.close()  # fmt: skip
    times_s = ((wall + t_ns) - start_ns) / 1e9
    nominal_s = times_s[0] + np.arange(len(times_s)) / RATE
    print(f"grid: {args.hours:g} h at {RATE} Hz, {args.ppm:g} ppm; written in {wrote:.0f} s, "
          f"EDF+ export {took:.0f} s")  # fmt: skip
    print(f"{'at min':>8} {'offset ms':>10} {'peer ms':>9}  band power ratio 1-20 ... 700-900 Hz")
    worst, worst_ratio, peer_worst = 0.0, 0.0, 0.0
    span = times_s[-1] - times_s[0]
    for at in np.linspace(times_s[0] + 15, times_s[-1] - 15, args.points):
        lo, hi = round((at - 10) * RATE), round((at + 10) * RATE)
        pick = (times_s >= (lo + 25) / RATE) & (times_s < (hi - 25) / RATE)
        lag = lag_s(grid[lo:hi], times_s[pick] - lo / RATE, values[pick])
        idx = np.flatnonzero(pick)
        peer = float(np.median(nominal_s[idx] - times_s[idx]))
        ratio = bands(grid[lo:hi]) / bands(values[idx])
        worst = max(worst, abs(lag))
        peer_worst = max(peer_worst, abs(peer))
        worst_ratio = max(worst_ratio, float(np.max(np.abs(np.log(ratio)))))
        print(
            f"{at / 60:>8.1f} {lag * 1e3:>10.3f} {peer * 1e3:>9.1f}  "
            + " ".join(f"{r:.4f}" for r in ratio)
        )
    ratio_bound = float(np.exp(worst_ratio))
    print(f"largest offset {worst * 1e3:.3f} ms (goal <= 1 ms; nominal-rate peer "
          f"{peer_worst * 1e3:.0f} ms over {span / 3600:.1f} h); band ratios within "
          f"1/{ratio_bound:.4f}..{ratio_bound:.4f} (goal 0.98-1.02)")  # fmt: skip
    write_json(
        args.json,
        [Row("G1", f"grid sample offset from the clock model, {args.hours:g} h at "
             f"{args.ppm:g} ppm", worst * 1e3, "ms", "<= 1 ms", worst <= 1e-3,
             peer="nominal-rate placement", peer_value=peer_worst * 1e3,
             ratio=peer_worst / worst if worst else None, better="lower"),
         Row("G2", "grid band power ratio, worst band 1-900 Hz (as a factor)", ratio_bound, "x",
             "<= 1.02", ratio_bound <= 1.02, better="lower")],
        hours=args.hours, ppm=args.ppm, export_s=took,
    )  # fmt: skip


if __name__ == "__main__":
    main()
