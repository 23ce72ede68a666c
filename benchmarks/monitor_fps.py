"""Monitor frame rate, offscreen: needlelab's trace drawing against pyqtgraph's own downsampling.

Load: 16 EMG channels at 2 kHz pushed into a recording session (writer on, fsync'd commits to a
temporary file) by a feeder thread in 20-sample chunks every 10 ms, as a BLE driver delivers
them; the monitor shows a 10 s window, Qt on the offscreen platform. Every other part of the
window (stimulator strip, caliper lane, device panel, localization) runs as in a session.

Two ways of drawing the EMG, the rest of the window the same:

- needlelab: `TracePanel` as shipped: per lane, each pixel column's min and max (peak
  decimation, kept as samples arrive by `monitor.traces.ColumnEnvelope`: a frame folds in only
  the new samples), redrawn once a pixel column's worth of samples is new, into an image per
  lane that scrolls by whole pixels and is stroked only where the points changed
  (`monitor.plots.LaneCurve`); a frame copies the images.
- pyqtgraph (the peer): what pyqtgraph offers for the same job, as an expert would use it for
  a sliding window: one `PlotDataItem` per lane with pyqtgraph's peak downsampling and
  `setClipToView(True)`, given each lane's full 10 s array (20,000 points x 16 lanes; the ring
  read once per stream, scaled and clipped to its lane as needlelab does) only when a pixel
  column's worth of samples is new, and otherwise slid as they stand (x relative to the time
  they were set, a group per stream moved by the time since). The factor (`--peer-ds`):
  "column" (default), a pixel column's samples, two points a column as needlelab draws;
  "auto", pyqtgraph's `setDownsampling(auto=True)`, which aims at 5 samples a pixel (a small
  factor here: several times needlelab's points to draw). Both are checked to draw every pixel
  column's envelope by the pixel test of tests/gui/test_trace_envelope.py (run on the peer by
  hand).

Both run in one window on one session, in turns (`--rounds`, each round both sides, the order
swapped every round): the same warm-up, data, writer and machine load for both, so a load that
comes and goes on the shared machine falls on both rather than on whichever ran then. The turn's
side draws, the other side's curves are hidden and not updated; glibc's malloc thresholds are
pinned (`pin_malloc`) so that one side's allocations do not set the other's. Measuring starts
after 10.5 s, once the 10 s window is full of data (a shorter warm-up flatters the peer, which
then draws less), and each turn after 0.5 s of its own (the side catches up). For each side and
turn:
- max fps: the window's timer at 0 ms (as fast as the GUI thread can go), each refresh asking
  for a repaint of the trace view (needlelab slides by whole pixels and Qt would otherwise paint
  only when something moved by one); frames are counted as paint events of the trace view, so a
  refresh that Qt folded into another paint is not counted twice.
- at 60 Hz: the timer at 16 ms, as configured; the GUI thread's CPU share (its thread CPU time
  over wall time) is the cost of showing the session live (`--max-only` skips these).
The figures are the medians over the rounds, printed with their min and max.

Goal (issue 16): >= 60 fps and >= 2 x pyqtgraph's own peak downsampling (medians).

    python benchmarks/monitor_fps.py [--seconds 8] [--rounds 3] [--channels 16] [--rate 2000]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from _results import Row, write_json
from needlelab.config import parse_config
from needlelab.monitor.plots import COLOURS, LANE_HALF, TracePanel
from needlelab.monitor.window import MonitorWindow
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

CHUNK = 20


@dataclass
class PeerLanes:
    """The peer's drawing on one panel: a `PlotDataItem` per lane, in a sliding group per
    stream, and per stream the ring's total and the time (session s) its curves were set at."""

    items: list[pg.PlotDataItem] = field(default_factory=list)
    groups: dict[str, pg.ItemGroup] = field(default_factory=dict)
    drawn: dict[str, tuple[int, float]] = field(default_factory=dict)


PEERS: dict[int, PeerLanes] = {}  # per panel
# How the peer picks its peak decimation's factor: "column", one pixel column's samples (two
# points a column, as needlelab draws); "auto", pyqtgraph's automatic one (its default aims at
# about 5 samples a pixel: a small factor on this window, several times the points).
PEER_DS = "column"
PEER_ROW = {
    "column": "pyqtgraph PlotDataItem peak downsampling (ds = a pixel column's samples) + "
    "clipToView, setData only on a new pixel column, curves slide in between",
    "auto": "pyqtgraph PlotDataItem setDownsampling(auto, peak) + clipToView, setData only on "
    "a new pixel column, curves slide in between",
}


def pyqtgraph_refresh_emg(self: TracePanel) -> None:
    """The peer's `TracePanel._refresh_emg`: pyqtgraph's own peak downsampling and clip to view
    on PlotDataItems, as an expert would use them for a sliding window.

    A stream's curves are set (its ring read once, each lane scaled and clipped to its lane as
    needlelab does, `setData` with the whole window) only when a pixel column's worth of samples
    is new, as needlelab redraws; otherwise they stand and slide. x is relative to the time the
    curves were set, and the stream's group slides by the time since: pyqtgraph clips to the
    view's range in view coordinates (not the item's), so x must stay within a frame of what
    the view shows for clip-to-view to keep the window (absolute times in a group slid by -now
    would clip it all away, and moving the view's range instead makes pyqtgraph clip and
    decimate every lane afresh every frame)."""
    peer = PEERS.setdefault(id(self), PeerLanes())
    columns = self._columns()
    while len(peer.items) < len(self.lanes):
        lane = self.lanes[len(peer.items)]
        group = peer.groups.get(lane.stream)
        if group is None:
            group = peer.groups[lane.stream] = pg.ItemGroup()
            self.emg_plot.addItem(group)
        # needlelab's lane colours and pen, so that both draw the same picture.
        item = pg.PlotDataItem(pen=pg.mkPen(COLOURS[len(peer.items) % len(COLOURS)], width=1))
        item.setParentItem(group)
        item.setDownsampling(auto=PEER_DS == "auto", method="peak")
        item.setClipToView(True)
        peer.items.append(item)
    by_stream: dict[str, list[int]] = {}
    for i, lane in enumerate(self.lanes):
        by_stream.setdefault(lane.stream, []).append(i)
    for stream, indices in by_stream.items():
        ring = self.hub.ring(stream)
        shown = int(self.window_s * ring.spec.nominal_rate_hz) + 1
        k = -(-shown // columns)  # samples per pixel column, as needlelab's
        total = ring.total
        drawn = peer.drawn.get(stream)
        if drawn is None or total - drawn[0] >= k:
            t_ns, values = ring.latest(shown)
            if len(t_ns):
                x = t_ns / 1e9 - self._now_s
                for i in indices:
                    lane = self.lanes[i]
                    scale = lane.gain / lane.range_uv
                    y = np.clip(values[:, lane.channel] * scale, -LANE_HALF, LANE_HALF) - i
                    if PEER_DS == "column":  # (a no-op unless the width changed)
                        peer.items[i].setDownsampling(ds=k, auto=False, method="peak")
                    peer.items[i].setData(x, y, skipFiniteCheck=True)
                drawn = peer.drawn[stream] = (total, self._now_s)
        if drawn is not None:
            peer.groups[stream].setPos(drawn[1] - self._now_s, 0)


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


def pin_malloc() -> bool:
    """Fix glibc's malloc thresholds for this process (False where there is no glibc).

    By default glibc moves its mmap and trim thresholds as blocks are freed, so how fast a large
    allocation is depends on what the process did before. The peer allocates megabytes a frame
    (each lane's full window): its turns after needlelab's (which allocates little) ran 30 %
    slower in its own code than after the code before, which allocated as much. Pinned, neither
    side's figure depends on the other's turn (and the peer runs faster)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 128 << 20)
    )


WINDOW_S = 10.0
WARMUP_S = WINDOW_S + 0.5  # every lane's window full of data, as after 10 s of a session
SETTLE_S = 0.5  # a turn's side catches up (needlelab folds the samples of the other's turn)


def draw_with(traces: TracePanel, peer: bool) -> None:
    """Let one side draw the EMG from now on; the other's curves are hidden."""
    if peer:
        traces._refresh_emg = types.MethodType(pyqtgraph_refresh_emg, traces)
    else:
        traces.__dict__.pop("_refresh_emg", None)  # the class's own again
        traces._redraw_emg()
    for curve in traces._curves:
        curve.setVisible(not peer)
    lanes = PEERS.get(id(traces))
    if lanes is not None:
        lanes.drawn.clear()  # set afresh at its turn's first frame, as needlelab's are
        for item in lanes.items:
            item.setVisible(peer)


def run(
    turns: list[tuple[bool, int]], seconds: float, channels: int, rate: float
) -> list[dict[str, float]]:
    """One session and window, the turns (peer?, timer interval ms) one after another: for each,
    frames/s and the GUI thread's CPU share."""
    app = pg.mkQApp("needlelab-bench")
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({"session": {"patient_id": "BENCH", "out_dir": tmp}})
        session = Session(config, Path(tmp))
        window = MonitorWindow(session, autostart=False)
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
        # Every refresh repaints the view, whether or not anything moved by a pixel: needlelab
        # slides by whole pixels, so at 0 ms most refreshes change nothing and Qt paints only
        # when one does; forced, both sides paint a whole frame per refresh they manage.
        window.timer.timeout.connect(window.traces.viewport().update)
        pending = list(turns)
        mark: dict[str, float] = {}

        def turn() -> None:  # the next side draws; measured once it caught up
            if not pending:
                app.quit()
                return
            peer, interval_ms = pending.pop(0)
            draw_with(window.traces, peer)
            window.timer.setInterval(interval_ms)
            QtCore.QTimer.singleShot(round(SETTLE_S * 1000), begin)

        def begin() -> None:
            paints[0] = 0
            mark["t0"], mark["cpu0"] = time.perf_counter(), time.thread_time()
            QtCore.QTimer.singleShot(round(seconds * 1000), end)

        def end() -> None:
            wall = time.perf_counter() - mark["t0"]
            cpu = (time.thread_time() - mark["cpu0"]) / wall
            results.append({"fps": paints[0] / wall, "cpu": cpu})
            turn()

        QtCore.QTimer.singleShot(round((WARMUP_S - SETTLE_S) * 1000), turn)
        app.exec()
        stop.set()
        feed.join()
        window.close()
        session.stop()
    return results


def spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each side")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument(
        "--max-only", action="store_true", help="skip the runs at the 60 Hz refresh (quick bench)"
    )
    parser.add_argument(
        "--peer-ds", choices=("column", "auto"), default="column",
        help="the peer's peak decimation factor: a pixel column's samples, or pyqtgraph's auto",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    globals()["PEER_DS"] = args.peer_ds
    pinned = pin_malloc()
    print(
        f"monitor: {args.channels} ch x {args.rate:g} Hz, 10 s window, recording on, offscreen "
        f"({os.environ['QT_QPA_PLATFORM']}), {os.cpu_count()} CPUs, {args.rounds} rounds of "
        f"{args.seconds:g} s per side and refresh, load {os.getloadavg()[0]:.2f}, malloc "
        f"thresholds {'pinned' if pinned else 'not pinned (no glibc)'}"
    )
    intervals = (0,) if args.max_only else (0, 16)
    turns = []
    for r in range(args.rounds):
        for peer in (False, True) if r % 2 == 0 else (True, False):
            turns += [(peer, interval) for interval in intervals]
    results = run(turns, args.seconds, args.channels, args.rate)
    by: dict[tuple[bool, int], list[dict[str, float]]] = {}
    for key, result in zip(turns, results, strict=True):
        by.setdefault(key, []).append(result)
    names = {False: "needlelab (peak decimation)", True: f"pyqtgraph peak ({PEER_DS})+clip"}
    medians = {peer: statistics.median(r["fps"] for r in by[peer, 0]) for peer in names}
    print(f"  {'drawing':<30} {'max fps min/median/max':>24} {'ratio':>6}", end="")
    print("" if args.max_only else f" {'fps @60 (median)':>17} {'GUI CPU @60 (median)':>21}")
    for peer, name in names.items():
        fast = [r["fps"] for r in by[peer, 0]]
        line = f"  {name:<30} {spread(fast):>24} {medians[peer] / medians[True]:>5.1f}x"
        if not args.max_only:
            at60 = by[peer, 16]
            fps60 = statistics.median(r["fps"] for r in at60)
            cpu60 = statistics.median(r["cpu"] for r in at60)
            line += f" {fps60:>17.1f} {cpu60:>21.0%}"
        print(line)
    ours, theirs = medians[False], medians[True]
    ratios = [a["fps"] / b["fps"] for a, b in zip(by[False, 0], by[True, 0], strict=True)]
    print(f"  ratio per round: {', '.join(f'{x:.1f}x' for x in ratios)}; load now "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    ok = ours >= 60 and ours >= 2 * theirs
    print(f"  goal >= 60 fps and >= 2 x pyqtgraph's downsampling (medians): "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    gui_cpu = None if args.max_only else statistics.median(r["cpu"] for r in by[False, 16])
    write_json(
        args.json,
        [Row("P4", f"monitor max fps, offscreen, {args.channels} ch x {args.rate:g} Hz, 10 s "
             f"(median of {args.rounds})",
             ours, "fps", ">= 60 fps and >= 2 x peer", ok,
             PEER_ROW[PEER_DS], theirs,
             ours / theirs)],
        seconds=args.seconds, rounds=args.rounds, gui_cpu_at_60=gui_cpu, malloc_pinned=pinned,
        max_fps={"needlelab": [r["fps"] for r in by[False, 0]],
                 "pyqtgraph": [r["fps"] for r in by[True, 0]]},
    )  # fmt: skip


if __name__ == "__main__":
    main()
