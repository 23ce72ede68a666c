"""Write-ahead-log growth and bytes written per second, by page size and checkpoint cadence.

Every 50 ms commit rewrites a few pages whatever it carries (the blocks' last leaf page, their
index, the heartbeat), so at low rates the page size, not the data, sets how fast the log grows.
Two real-time loads through hub -> SessionWriter, fsync on:

- demo: the demo's rates: reference EMG 8 ch x 2 kHz int16 in 10-sample notifications (200 a
  second), a stimulator's 2 channels polled every 100 ms;
- 100/s: a stimulator's 2 channels polled every 20 ms (100 samples a second), nothing else.

For each: the log's growth without time checkpoints (the old writer: SQLite folds it in at 1000
pages only), the largest the log gets with the writer's checkpoint cadence, every byte the
process wrote (`wchar` of /proc/self/io: log frames plus checkpoint copies) and the file's size,
per second of recording.

Rows (`--json`), at the demo's rates and the writer's page size: L1 the log's peak with the
writer's checkpoints (goal <= 0.5 MB) beside SQLite's own checkpointing (its log after the same
seconds), L2 every byte written per second, the same two ways.

    python benchmarks/wal_growth.py [--seconds 6] [--pages 16384,4096] [--json PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _results import Row, write_json
from needlelab.clock import SessionClock
from needlelab.devices.stim import stim_stream_spec
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter
from needlelab.record.writer import CHECKPOINT_INTERVAL_S, PAGE_SIZE
from needlelab.streams import Chunk, StreamKind, StreamSpec

PEAK_GOAL_MB = 0.5

EMG = StreamSpec(
    "emg.emg", "EMG", tuple(f"ch{i}" for i in range(8)), ("uV",) * 8, StreamKind.REGULAR,
    2000.0, dtype="int16", device="emg",
)  # fmt: skip
LOADS = {"demo": (True, 0.1), "100/s": (False, 0.02)}  # (EMG on, stimulator poll period s)


def wchar() -> int:
    """Bytes this process has passed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def run(folder: Path, load: str, page_size: int, checkpoint_s: float | None, seconds: float):
    """One recording in real time; (log growth or peak B/s, written B/s, file B/s)."""
    emg_on, poll_s = LOADS[load]
    clock = SessionClock()
    hub = Hub(clock)
    meta = SessionMeta(
        session_id="wal", patient_id="WAL", config_json="{}", software_version="bench",
        anchor_monotonic_ns=clock.anchor_monotonic_ns, anchor_wall_ns=clock.anchor_wall_ns,
    )  # fmt: skip
    path = folder / f"{load.replace('/', '')}-{page_size}-{checkpoint_s}.sqlite"
    writer = SessionWriter(path, hub, meta, checkpoint_interval_s=checkpoint_s, page_size=page_size)
    writer.start()
    stims = [stim_stream_spec("stim", ch) for ch in (1, 2)]
    for spec in stims:
        hub.add_stream(spec)
    if emg_on:
        hub.add_stream(EMG)
    wal = Path(f"{path}-wal")
    rng = np.random.default_rng(0)
    stop = threading.Event()
    peak_wal = 0

    def watch() -> None:
        nonlocal peak_wal
        while not stop.wait(0.01):
            peak_wal = max(peak_wal, wal.stat().st_size if wal.exists() else 0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    written0 = wchar()
    start = time.monotonic()
    tick, index, next_poll = 0.005, 0, start
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        if emg_on:
            values = rng.integers(-2000, 2000, (10, 8), dtype=np.int16)
            hub.push(Chunk(EMG.name, values, clock.now_ns(), index * 10, device_counter=index))
            index += 1
        if now >= next_poll:
            next_poll += poll_s
            for spec in stims:
                t = clock.now_ns()
                row = np.array([[2.0, 250.0, 12.5, 1.0]], np.float32)
                hub.push(Chunk(spec.name, row, t, 0, t_ns=np.array([t], np.int64)))
        time.sleep(max(0.0, start + (index + 1) * tick - time.monotonic()) if emg_on else tick)
    elapsed = time.monotonic() - start
    written = wchar() - written0
    wal_now = wal.stat().st_size if wal.exists() else 0
    file_now = path.stat().st_size
    stop.set()
    watcher.join()
    writer.stop()
    # The longest checkpoint, and the share of the time spent in them: an upper bound on the
    # window in which a kill could leave the .sqlite alone torn (only while pages are copied).
    ckpt = (writer.checkpoint_s_max, writer.checkpoint_s_total / elapsed)
    if checkpoint_s is None:  # nothing folded in (under 1000 pages): the log's own growth
        return wal_now / elapsed, written / elapsed, file_now / elapsed, ckpt
    return peak_wal, written / elapsed, file_now / elapsed, ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--pages", default=f"16384,8192,{PAGE_SIZE},2048")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    pages = [int(p) for p in args.pages.split(",")]
    if args.json is not None and PAGE_SIZE not in pages:
        parser.error(f"--json: its rows are at the writer's page size; add {PAGE_SIZE} to --pages")
    print(
        f"{args.seconds:g} s of each load in real time, 50 ms commits, synchronous=FULL; "
        f"checkpoint every {CHECKPOINT_INTERVAL_S:g} s in the writer, or SQLite's own (1000 pages)"
    )
    print(
        f"{'load':<6} {'page':>6} {'checkpoints':<12} {'log growth':>12} {'log peak':>10} "
        f"{'written/s':>11} {'file/s':>9} {'ckpt max':>9} {'in ckpt':>8}"
    )
    kept: dict[float | None, tuple[float, float]] = {}  # demo, PAGE_SIZE: (log B, written B/s)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for load in LOADS:
            for page in pages:
                for checkpoint_s in (None, CHECKPOINT_INTERVAL_S):
                    wal, written, size, (c_max, c_share) = run(
                        Path(tmp), load, page, checkpoint_s, args.seconds
                    )
                    if load == "demo" and page == PAGE_SIZE:  # growth x seconds: the log then
                        kept[checkpoint_s] = (wal * (args.seconds if checkpoint_s is None else 1),
                                              written)  # fmt: skip
                    growth = f"{wal / 1e6:.3f} MB/s" if checkpoint_s is None else "-"
                    peak = "-" if checkpoint_s is None else f"{wal / 1e6:.2f} MB"
                    mode = "SQLite's" if checkpoint_s is None else f"every {checkpoint_s:g} s"
                    print(
                        f"{load:<6} {page:>6} {mode:<12} {growth:>12} {peak:>10} "
                        f"{written / 1e6:>6.3f} MB/s "
                        + (
                            f"{size / 1e6:>4.3f} MB/s {c_max * 1e3:>6.1f} ms {c_share:>8.2%}"
                            if checkpoint_s  # else nothing is folded into the file yet
                            else f"{'-':>9}"
                        ),
                        flush=True,
                    )
    if args.json is not None:
        (peak, written), (own_log, own_written) = kept[CHECKPOINT_INTERVAL_S], kept[None]
        peer = f"SQLite's own checkpoints (at 1000 pages), same load, {PAGE_SIZE} B pages"
        write_json(args.json, [
            Row("L1", f"write-ahead log peak, demo's rates, checkpoint every "
                f"{CHECKPOINT_INTERVAL_S:g} s, {args.seconds:g} s", peak / 1e6, "MB",
                f"<= {PEAK_GOAL_MB:g} MB", peak / 1e6 <= PEAK_GOAL_MB,
                f"{peer}: its log after {args.seconds:g} s", own_log / 1e6,
                own_log / peak if peak else None, better="lower"),
            Row("L2", "bytes written per s (log frames + checkpoint copies), demo's rates",
                written / 1e6, "MB/s", "measured (no goal)", None, peer, own_written / 1e6,
                own_written / written if written else None, better="lower"),
        ], seconds=args.seconds, page_size=PAGE_SIZE)  # fmt: skip


if __name__ == "__main__":
    main()
