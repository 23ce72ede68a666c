"""The EDF grid over a long session: do samples stay where the clock model puts them, and is
the signal's power kept band by band?

Load: one EMG channel of white noise at 2 kHz from a crystal --ppm fast (default 100: 0.72 s
of drift over 2 h), in 100-sample blocks with 3-5 ms of arrival latency (a 3 ms floor the
stream declares, as a calibrated setup does), written by the real SessionWriter (accelerated:
the session's time is simulated). The session is exported to EDF+; pyedflib reads it back. At
--points places through the session, the samples as simulated (their true times, from the
simulation's own sample period, not from needlelab) are located in the export by
cross-correlation (G1); so are the stored samples at their clock-model times (G1b: the
export's resampling alone); and the band power of 20 s of export is compared with that of the
samples (G2).

Goals (G1, G1b, G2): every offset within 1 ms; every band ratio (1-900 Hz) within 0.98-1.02.
Peer (G1): the samples placed on a least-squares line of arrival time against sample number,
minus the same declared floor (what a careful writer without a one-sided fit does; it keeps
the drift, and carries the mean latency above the floor as bias).

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
FIRST_NS = 5_000_000  # true time of sample 0 on the session clock
FLOOR_NS = 3_000_000  # least arrival latency, declared by the stream
JITTER_NS = 2_000_000  # arrival latency above the floor: uniform 0-2 ms
BANDS = [(1, 20), (20, 50), (50, 100), (100, 250), (250, 450), (450, 700), (700, 900)]


def period_ns(ppm: float) -> float:
    """The true sample period of a crystal `ppm` fast."""
    return 1e9 / RATE / (1 + ppm * 1e-6)


def write(folder: Path, hours: float, ppm: float) -> tuple[Path, np.ndarray, np.ndarray]:
    """The session file, and each block's last sample number and arrival time (ns)."""
    hub = Hub(SessionClock())
    wall = 1_795_443_906_661_234_567
    meta = SessionMeta(session_id="grid", patient_id="GRID01", anchor_monotonic_ns=0,
                       anchor_wall_ns=wall, config_json='{"session": {"patient_id": "GRID01"}}',
                       software_version="bench")  # fmt: skip
    writer = SessionWriter(folder / session_file_name("GRID01", wall), hub, meta)
    writer.start()
    spec = StreamSpec("emg.emg", "EMG", ("EMG 1",), ("uV",), StreamKind.REGULAR, RATE,
                      device="emg", latency_ns=FLOOR_NS)  # fmt: skip
    hub.add_stream(spec)
    rng = np.random.default_rng(1)
    period = period_ns(ppm)
    blocks = int(hours * 3600 * RATE / BLOCK)
    last = np.arange(blocks, dtype=np.int64) * BLOCK + BLOCK - 1
    arrivals = np.empty(blocks, np.int64)
    for k in range(blocks):
        first = k * BLOCK
        arrivals[k] = round(FIRST_NS + last[k] * period + FLOOR_NS + rng.integers(0, JITTER_NS))
        values = (rng.standard_normal((BLOCK, 1)) * 40).astype(np.float32)
        hub.push(Chunk("emg.emg", values, int(arrivals[k]), first))
        while hub.backlog() > 2000:
            time.sleep(0.001)
    writer.stop()
    return writer.path, last, arrivals


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
        source, last, arrivals = write(Path(tmp), args.hours, args.ppm)
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
    if len(t_ns) != int(last[-1]) + 1:
        raise SystemExit(f"grid: {len(t_ns)} samples stored of {int(last[-1]) + 1} pushed")
    # Sample i of the simulation was taken at FIRST_NS + i * period: the truth, from outside.
    number = np.arange(len(t_ns), dtype=np.float64)
    true_s = ((wall + FIRST_NS + number * period_ns(args.ppm)) - start_ns) / 1e9
    stored_s = ((wall + t_ns) - start_ns) / 1e9
    slope, intercept = np.polyfit(last.astype(np.float64), arrivals.astype(np.float64), 1)
    peer_s = ((wall + intercept + number * slope - FLOOR_NS) - start_ns) / 1e9
    print(f"grid: {args.hours:g} h at {RATE} Hz, {args.ppm:g} ppm; written in {wrote:.0f} s, "
          f"EDF+ export {took:.0f} s")  # fmt: skip
    print(f"{'at min':>8} {'vs true ms':>10} {'vs model':>9} {'peer ms':>8}  "
          "band power ratio 1-20 ... 700-900 Hz")  # fmt: skip
    worst, worst_model, worst_ratio, peer_worst = 0.0, 0.0, 0.0, 0.0
    span = true_s[-1] - true_s[0]
    for at in np.linspace(true_s[0] + 15, true_s[-1] - 15, args.points):
        lo, hi = round((at - 10) * RATE), round((at + 10) * RATE)
        pick = (true_s >= (lo + 25) / RATE) & (true_s < (hi - 25) / RATE)
        lag = lag_s(grid[lo:hi], true_s[pick] - lo / RATE, values[pick])
        in_model = (stored_s >= (lo + 25) / RATE) & (stored_s < (hi - 25) / RATE)
        lag_model = lag_s(grid[lo:hi], stored_s[in_model] - lo / RATE, values[in_model])
        idx = np.flatnonzero(pick)
        peer = float(np.median(peer_s[idx] - true_s[idx]))
        ratio = bands(grid[lo:hi]) / bands(values[idx])
        worst = max(worst, abs(lag))
        worst_model = max(worst_model, abs(lag_model))
        peer_worst = max(peer_worst, abs(peer))
        worst_ratio = max(worst_ratio, float(np.max(np.abs(np.log(ratio)))))
        print(
            f"{at / 60:>8.1f} {lag * 1e3:>10.3f} {lag_model * 1e3:>9.3f} {peer * 1e3:>8.3f}  "
            + " ".join(f"{r:.4f}" for r in ratio)
        )
    ratio_bound = float(np.exp(worst_ratio))
    print(f"largest offset from the true sample times {worst * 1e3:.3f} ms (goal <= 1 ms; "
          f"least-squares peer {peer_worst * 1e3:.3f} ms over {span / 3600:.1f} h), from the "
          f"clock model {worst_model * 1e3:.3f} ms; band ratios within "
          f"1/{ratio_bound:.4f}..{ratio_bound:.4f} (goal 0.98-1.02)")  # fmt: skip
    where = f"{args.hours:g} h at {args.ppm:g} ppm, 3-5 ms latency, 3 ms floor declared"
    write_json(
        args.json,
        [Row("G1", f"EDF+ grid sample offset from the true sample times, {where}",
             worst * 1e3, "ms", "<= 1 ms", worst <= 1e-3,
             peer="least-squares line of arrival vs sample number, minus the declared floor",
             peer_value=peer_worst * 1e3, ratio=peer_worst / worst if worst else None,
             better="lower"),
         Row("G1b", f"EDF+ grid sample offset from needlelab's clock model (the export's "
             f"resampling alone), {where}", worst_model * 1e3, "ms", "<= 1 ms",
             worst_model <= 1e-3, better="lower"),
         Row("G2", "grid band power ratio, worst band 1-900 Hz (as a factor)", ratio_bound, "x",
             "<= 1.02", ratio_bound <= 1.02, better="lower")],
        hours=args.hours, ppm=args.ppm, export_s=took,
    )  # fmt: skip


if __name__ == "__main__":
    main()
