"""Ingest throughput: hub → SessionWriter → committed SQLite (fsync on), against a plain writer.

Load: 16 channels × 2 kHz float32 in 50 ms blocks (100 samples a block), pushed as fast as
possible. A "sample" is one 16-channel frame. The peer is what one writes without needlelab:
`sqlite3` `executemany` with one row per sample frame, WAL + synchronous=FULL, a commit per
block. Both write to the same disk; the figure is samples committed per second.

The pusher waits while more than 8 MB wait for the writer (the record queue is bounded: it warns
at 16 MB and a recording stops at its limit), so the figure is the writer's own rate.
`--page-size` and `--checkpoint-s` (0: SQLite's own checkpoints only, as before the time cadence)
compare settings; the table also gives the writer's checkpoints and its deepest backlog.

    python benchmarks/ingest.py [--seconds 60] [--dir /tmp] [--no-peer]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import Row, write_json
from needlelab.clock import SessionClock
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, open_session
from needlelab.record.writer import CHECKPOINT_INTERVAL_S, PAGE_SIZE
from needlelab.streams import Chunk, StreamKind, StreamSpec

CHANNELS, RATE_HZ, BLOCK = 16, 2000, 100
LAST: dict[str, float] = {}  # the last needlelab run's writer figures, for the table


def needlelab_writer(
    folder: Path,
    seconds: float,
    page_size: int = PAGE_SIZE,
    checkpoint_s: float | None = CHECKPOINT_INTERVAL_S,
    backlog_mb: float = 8.0,
) -> tuple[float, int]:
    clock = SessionClock()
    hub = Hub(clock)
    meta = SessionMeta(
        session_id="bench",
        patient_id="BENCH",
        config_json="{}",
        anchor_monotonic_ns=clock.anchor_monotonic_ns,
        anchor_wall_ns=clock.anchor_wall_ns,
        software_version="bench",
    )
    writer = SessionWriter(
        folder / "needlelab.sqlite", hub, meta, checkpoint_interval_s=checkpoint_s,
        page_size=page_size,
    )  # fmt: skip
    writer.start()
    spec = StreamSpec(
        "emg.raw",
        "EMG",
        tuple(f"ch{i}" for i in range(CHANNELS)),
        ("uV",) * CHANNELS,
        StreamKind.REGULAR,
        RATE_HZ,
        device="emg",
    )
    hub.add_stream(spec)
    block = np.random.default_rng(0).standard_normal((BLOCK, CHANNELS)).astype(np.float32)
    n_blocks = int(seconds * RATE_HZ / BLOCK)
    period_ns = BLOCK * 1_000_000_000 // RATE_HZ
    start = time.perf_counter()
    most = backlog_mb * 1e6
    for i in range(n_blocks):
        while i % 64 == 0 and hub.backlog_status().bytes > most:
            time.sleep(0.005)
        hub.push(Chunk(spec.name, block, (i + 1) * period_ns, i * BLOCK))
    writer.stop(timeout_s=600)  # returns when everything is committed
    elapsed = time.perf_counter() - start
    backlog = hub.backlog_status()
    assert backlog.refused == 0, "the pusher outran the backlog's limit"
    LAST.update(
        checkpoints=writer.checkpoints, checkpoint_max_s=writer.checkpoint_s_max,
        checkpoint_total_s=writer.checkpoint_s_total, peak_mb=backlog.peak_bytes / 1e6,
        peak_s=backlog.peak_seconds,
    )  # fmt: skip
    with open_session(writer.path) as s:
        stored = sum(b.n for b in s.blocks(spec.name))
    assert stored == n_blocks * BLOCK, "samples missing"
    return elapsed, stored


def plain_executemany(folder: Path, seconds: float) -> tuple[float, int]:
    conn = sqlite3.connect(folder / "plain.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    cols = ", ".join(f"c{i} REAL" for i in range(CHANNELS))
    conn.execute(f"CREATE TABLE emg (t_ns INTEGER, {cols})")
    insert = f"INSERT INTO emg VALUES (?{', ?' * CHANNELS})"
    block = np.random.default_rng(0).standard_normal((BLOCK, CHANNELS)).astype(np.float32)
    n_blocks = int(seconds * RATE_HZ / BLOCK)
    start = time.perf_counter()
    for i in range(n_blocks):
        t0 = i * BLOCK * 500_000
        rows = [(t0 + k * 500_000, *map(float, block[k])) for k in range(BLOCK)]
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    stored = conn.execute("SELECT count(*) FROM emg").fetchone()[0]
    conn.close()
    return elapsed, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of data to write")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE)
    parser.add_argument(
        "--checkpoint-s", type=float, default=CHECKPOINT_INTERVAL_S,
        help="the writer's checkpoint cadence (0: none, SQLite's own at 1000 pages)",
    )  # fmt: skip
    parser.add_argument("--no-peer", action="store_true", help="only needlelab's writer")
    args = parser.parse_args()
    checkpoint_s = args.checkpoint_s or None
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        ours = needlelab_writer(folder, args.seconds, args.page_size, checkpoint_s)
        peer = None if args.no_peer else plain_executemany(folder, args.seconds)
    rate_ours = ours[1] / ours[0]
    rate_peer = peer[1] / peer[0] if peer else float("nan")
    print(
        f"ingest: {CHANNELS} ch x {RATE_HZ} Hz float32, {BLOCK}-sample blocks, "
        f"{args.seconds:g} s of data, fsync on every commit; {args.page_size} B pages, "
        + (f"checkpoint every {checkpoint_s:g} s" if checkpoint_s else "SQLite's checkpoints")
    )
    print(f"{'writer':<34} {'samples':>10} {'seconds':>8} {'samples/s':>12} {'x real time':>11}")
    runs = [("needlelab hub -> SessionWriter", ours)]
    if peer:
        runs.append(("plain executemany (row/sample)", peer))
    for name, (elapsed, n) in runs:
        print(
            f"{name:<34} {n:>10} {elapsed:>8.2f} {n / elapsed:>12,.0f} "
            f"{n / elapsed / RATE_HZ:>11.0f}"
        )
    print(
        f"writer: {LAST['checkpoints']:.0f} checkpoints (longest "
        f"{LAST['checkpoint_max_s'] * 1e3:.1f} ms, {LAST['checkpoint_total_s'] / ours[0]:.1%} "
        "of the run); deepest backlog "
        f"{LAST['peak_mb']:.1f} MB, {LAST['peak_s']:.2f} s"
    )
    goal = "met" if rate_ours >= 1e6 else "NOT met"
    print(
        f"ratio needlelab / plain: {rate_ours / rate_peer:.1f}x; goal >= 1,000,000 samples/s: "
        f"{goal}"
    )
    write_json(
        args.json,
        [Row("P1", "ingest hub -> writer -> committed SQLite, fsync on", rate_ours, "samples/s",
             ">= 1,000,000 samples/s", rate_ours >= 1e6, "plain executemany writer", rate_peer,
             rate_ours / rate_peer)],
        seconds=args.seconds,
    )  # fmt: skip


if __name__ == "__main__":
    main()
