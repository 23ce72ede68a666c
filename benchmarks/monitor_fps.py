"""Monitor frame rate, offscreen: needlelab's trace drawing against pyqtgraph's own downsampling.

Load: 16 EMG channels at 2 kHz pushed into a recording session (writer on, fsync'd commits to a
temporary file) by a feeder thread in 20-sample chunks every 10 ms, as a BLE driver delivers
them; the monitor shows a 10 s window, Qt on the offscreen platform. Every other part of the
window (stimulator strip, caliper lane, device panel, localization) runs as in a session.

Two ways of drawing the EMG, the rest of the window the same:

- needlelab: `TracePanel` as shipped: per lane, each pixel column's min and max (peak
  decimation, `monitor.traces.peak_decimate`), redrawn only when the ring has new samples.
- pyqtgraph (the peer): what pyqtgraph offers for the same job, one `PlotDataItem` per lane
  with `setDownsampling(auto=True, method="peak")` and `setClipToView(True)`, given each lane's
  full 10 s array (20,000 points x 16 lanes) every frame, scaled and clipped to its lane as
  needlelab does, x relative to now.

Each run starts measuring after 10.5 s, once the 10 s window is full of data (a shorter warm-up
flatters the peer, which then draws less). For each, two runs:
- max fps: the window's timer at 0 ms (as fast as the GUI thread can go); frames are counted
  as paint events of the trace view, so a refresh that Qt folded into another paint is not
  counted twice.
- at 60 Hz: the timer at 16 ms, as configured; the GUI thread's CPU share (its thread CPU time
  over wall time) is the cost of showing the session live (`--max-only` skips these).

Goal (issue 16): >= 60 fps and >= 2 x pyqtgraph's own peak downsampling.

    python benchmarks/monitor_fps.py [--seconds 8] [--channels 16] [--rate 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from _results import Row, write_json
from needlelab.config import parse_config
from needlelab.monitor.plots import LANE_HALF, TracePanel
from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

CHUNK = 20


PEER_ITEMS: dict[int, list[pg.PlotDataItem]] = {}  # per panel: its lanes' PlotDataItems


def pyqtgraph_refresh_emg(self: TracePanel) -> None:
    """The peer's `TracePanel._refresh_emg`: pyqtgraph's own peak downsampling and clip to view
    on PlotDataItems, each lane's full window every frame."""
    items = PEER_ITEMS.setdefault(id(self), [])
    while len(items) < len(self.lanes):
        colour = pg.intColor(len(items), hues=16)
        item = pg.PlotDataItem(pen=pg.mkPen(colour, width=1))
        self.emg_plot.addItem(item)  # not in the sliding group: x is relative to now
        # After addItem: PlotItem.addItem gives the item the plot's own modes (none).
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)
        items.append(item)
    for i, lane in enumerate(self.lanes):
        ring = self.hub.ring(lane.stream)
        t_ns, values = ring.latest(int(self.window_s * ring.spec.nominal_rate_hz) + 1)
        if len(t_ns):
            scale = lane.gain / lane.range_uv
            y = np.clip(values[:, lane.channel] * scale, -LANE_HALF, LANE_HALF) - i
            items[i].setData(t_ns / 1e9 - self._now_s, y, skipFiniteCheck=True)


def feeder(session: Session, channels: int, rate: float, stop: threading.Event) -> None:
    """Push `channels` x `rate` Hz of noise with bursts, in 20-sample chunks, on time."""
    spec = StreamSpec(
        "emg.emg", "EMG", tuple(f"EMG {i + 1}" for i in range(channels)),
        ("uV",) * channels, StreamKind.REGULAR, rate, device="emg",
    )  # fmt: skip
    session.hub.add_stream(spec)
    rng = np.random.default_rng(0)
    period = CHUNK / rate
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        values = rng.standard_normal((CHUNK, channels)).astype(np.float32) * 30
        if (k * period) % 4 > 2.5:
            values *= 8
        session.hub.push(Chunk("emg.emg", values, session.clock.now_ns(), k * CHUNK))
        k += 1
        delay = start + k * period - time.monotonic()
        if delay > 0:
            stop.wait(delay)


WINDOW_S = 10.0
WARMUP_S = WINDOW_S + 0.5  # every lane's window full of data, as after 10 s of a session


def run(peer: bool, interval_ms: int, seconds: float, channels: int, rate: float) -> dict:
    """One run; frames/s, GUI-thread CPU share, samples pushed."""
    app = pg.mkQApp("needlelab-bench")
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({"session": {"patient_id": "BENCH", "out_dir": tmp}})
        session = Session(config, Path(tmp))
        window = MonitorWindow(session, autostart=False)
        if peer:
            window.traces._refresh_emg = types.MethodType(pyqtgraph_refresh_emg, window.traces)
        window.resize(1500, 950)
        window.show()
        session.start()
        window.start_recording()  # no-op for the session; shows it recording
        stop = threading.Event()
        feed = threading.Thread(target=feeder, args=(session, channels, rate, stop), daemon=True)
        feed.start()
        paints = [0]

        class Counter(QtCore.QObject):
            def eventFilter(self, _obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
                if event.type() == QtCore.QEvent.Type.Paint:
                    paints[0] += 1
                return False

        counter = Counter()
        window.traces.viewport().installEventFilter(counter)
        window.timer.setInterval(interval_ms)
        result: dict = {}

        def begin() -> None:  # once the window is laid out and its 10 s of data are there
            paints[0] = 0
            result["t0"], result["cpu0"] = time.perf_counter(), time.thread_time()
            QtCore.QTimer.singleShot(round(seconds * 1000), end)

        def end() -> None:
            wall = time.perf_counter() - result["t0"]
            result["fps"] = paints[0] / wall
            result["cpu"] = (time.thread_time() - result["cpu0"]) / wall
            app.quit()

        QtCore.QTimer.singleShot(round(WARMUP_S * 1000), begin)
        app.exec()
        stop.set()
        feed.join()
        result["lanes"] = len(window.traces.lanes)
        window.close()
        session.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument(
        "--max-only", action="store_true", help="skip the runs at the 60 Hz refresh (quick bench)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    print(
        f"monitor: {args.channels} ch x {args.rate:g} Hz, 10 s window, recording on, offscreen "
        f"({os.environ['QT_QPA_PLATFORM']}), {os.cpu_count()} CPUs, {args.seconds:g} s per run"
    )
    rows = []
    for name, peer in (
        ("needlelab (peak decimation)", False),
        ("pyqtgraph peak+clipToView", True),
    ):
        fast = run(peer, 0, args.seconds, args.channels, args.rate)
        at60 = {} if args.max_only else run(peer, 16, args.seconds, args.channels, args.rate)
        rows.append((name, fast["fps"], at60.get("fps"), at60.get("cpu")))
    print(
        f"  {'drawing':<30} {'max fps':>8} {'fps @60':>8} {'GUI CPU @60':>12} {'max fps ratio':>14}"
    )
    base = rows[1][1]
    for name, fps, fps60, cpu in rows:
        at60 = f"{fps60:>8.1f} {cpu:>11.0%}" if fps60 is not None else f"{'-':>8} {'-':>11}"
        print(f"  {name:<30} {fps:>8.1f} {at60} {fps / base:>13.1f}x")
    ours, theirs = rows[0][1], rows[1][1]
    ok = ours >= 60 and ours >= 2 * theirs
    print(f"  goal >= 60 fps and >= 2 x pyqtgraph's downsampling: {'met' if ok else 'NOT met'}")
    write_json(
        args.json,
        [Row("P4", f"monitor max fps, offscreen, {args.channels} ch x {args.rate:g} Hz, 10 s",
             ours, "fps", ">= 60 fps and >= 2 x peer", ok,
             "pyqtgraph PlotDataItem setDownsampling(auto, peak) + setClipToView", theirs,
             ours / theirs)],
        seconds=args.seconds, gui_cpu_at_60=rows[0][3],
    )  # fmt: skip


if __name__ == "__main__":
    main()
