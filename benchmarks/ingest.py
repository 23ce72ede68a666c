"""Ingest throughput: hub → SessionWriter → committed SQLite (fsync on), against a plain writer.

Load: 16 channels × 2 kHz float32 in 50 ms blocks (100 samples a block), pushed as fast as
possible. A "sample" is one 16-channel frame. The peer is the minimal writer with needlelab's
own layout (`same_layout_writer`): one BLOB per 100-sample block in the same `blocks` table, WAL,
synchronous=FULL, the same page size, a commit every 50 ms and a PASSIVE checkpoint at the same
cadence, on one thread. The two run interleaved (`--rounds`) in ABBA order (needlelab first in
even rounds, the peer first in odd ones), on the same disk; the figure is samples committed per
second, to the last commit for both (needlelab's close after it, which folds the log into the
file, is given apart: the peer's time leaves its own close out too), the median of the rounds;
each round's own ratio is given too (its median: the paired figure). needlelab's extra work
(the hub's ring and sample times on the pushing thread, the writer's clock fit per block) is
measured apart.
`--row-peer` also runs the old row-per-sample `executemany` peer once, for reference.

The pusher waits while more than 8 MB are queued for the writer and not yet taken (the record
queue is bounded: it warns at 16 MB and a recording stops at its limit), so the figure is the
writer's own rate. What the writer has taken is written into its open transaction and counts in
the backlog until the commit, as the peer's rows wait in its own; a limit on that too capped
needlelab at 8 MB a commit cycle (50 ms and the commit), about 1.3 M samples/s, which was then
the pusher's figure, not the writer's.
`--page-size` and `--checkpoint-s` (0: SQLite's own checkpoints only, as before the time cadence)
compare settings; the table also gives the writer's checkpoints and its deepest backlog.

Goal (issue 16): needlelab >= 0.9 x the same-layout writer's samples/s while doing its extra work.

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
from needlelab.clock import SessionClock, StreamClock
from needlelab.hub import CHUNK_OVERHEAD_BYTES, Hub
from needlelab.record import SessionMeta, SessionWriter, open_session
from needlelab.record.writer import CHECKPOINT_INTERVAL_S, LIVE_CLOCK_POINTS, PAGE_SIZE
from needlelab.streams import Chunk, StreamKind, StreamSpec

CHANNELS, RATE_HZ, BLOCK = 16, 2000, 100
LAST: dict[str, float] = {}  # the last needlelab run's writer figures, for the table
CLOSE_S: list[float] = []  # each needlelab run's close, after its last commit


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
    # The writer's thread opens its connection and declares the stream in its first commit:
    # timed from then on, as the peer is from its table on (a recording's writer is up before
    # its devices stream).
    while writer.commits < 1:
        time.sleep(0.001)
    start = time.perf_counter()
    # Chunks queued for the writer, not yet taken: what it has taken is in its open transaction
    # until the next commit, as the peer's rows are in its own.
    most = backlog_mb * 1e6 / (block.nbytes + CHUNK_OVERHEAD_BYTES)
    push_s = 0.0
    for i in range(n_blocks):
        while i % 64 == 0 and hub.record_queue.qsize() > most:
            time.sleep(0.005)
        chunk = Chunk(spec.name, block, (i + 1) * period_ns, i * BLOCK)
        t0 = time.perf_counter()
        hub.push(chunk)
        push_s += time.perf_counter() - t0
    writer.stop(timeout_s=600)  # returns when everything is committed and the file closed
    # To the last commit, as the peer's time: not the close that follows it (the log folded
    # into the file, WAL mode left), which the peer's time leaves out too (its close folds its
    # log in as well). The close is given apart.
    elapsed = time.perf_counter() - start - writer.close_s
    CLOSE_S.append(writer.close_s)
    backlog = hub.backlog_status()
    assert backlog.refused == 0, "the pusher outran the backlog's limit"
    LAST.update(
        checkpoints=writer.checkpoints, checkpoint_max_s=writer.checkpoint_s_max,
        checkpoint_total_s=writer.checkpoint_s_total, peak_mb=backlog.peak_bytes / 1e6,
        peak_s=backlog.peak_seconds, push_us=push_s / n_blocks * 1e6,
    )  # fmt: skip
    with open_session(writer.path) as s:
        stored = sum(b.n for b in s.blocks(spec.name))
    assert stored == n_blocks * BLOCK, "samples missing"
    return elapsed, stored


def same_layout_writer(
    folder: Path,
    seconds: float,
    page_size: int = PAGE_SIZE,
    checkpoint_s: float | None = CHECKPOINT_INTERVAL_S,
) -> tuple[float, int]:
    """The fair peer: needlelab's file layout written the plainest way, one thread, no hub."""
    conn = sqlite3.connect(folder / "same_layout.sqlite", isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE blocks (id INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL, first_index "
        "INTEGER NOT NULL, n INTEGER NOT NULL, t_host_ns INTEGER NOT NULL, device_counter INTEGER,"
        " device_t_us INTEGER, t_ns BLOB, data BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX blocks_by_stream ON blocks (stream_id, id)")
    insert = "INSERT INTO blocks VALUES (NULL, 1, ?, ?, ?, NULL, NULL, NULL, ?)"
    block = np.random.default_rng(0).standard_normal((BLOCK, CHANNELS)).astype(np.float32)
    n_blocks = int(seconds * RATE_HZ / BLOCK)
    period_ns = BLOCK * 1_000_000_000 // RATE_HZ
    start = time.perf_counter()
    commit_at = time.monotonic() + 0.05
    checkpoint_at = time.monotonic() + (checkpoint_s or float("inf"))
    conn.execute("BEGIN")
    for i in range(n_blocks):
        conn.execute(insert, (i * BLOCK, BLOCK, (i + 1) * period_ns, block.tobytes()))
        if time.monotonic() >= commit_at:
            conn.execute("COMMIT")
            if time.monotonic() >= checkpoint_at:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                checkpoint_at = time.monotonic() + (checkpoint_s or float("inf"))
            conn.execute("BEGIN")
            commit_at = time.monotonic() + 0.05
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    stored = conn.execute("SELECT sum(n) FROM blocks").fetchone()[0]
    conn.close()
    assert stored == n_blocks * BLOCK, "samples missing"
    return elapsed, stored


def clock_fit_us(seconds: float) -> float:
    """The writer's per-block clock work alone (StreamClock.add), µs a block."""
    clock = StreamClock(RATE_HZ, min_latency_ns=0, keep=LIVE_CLOCK_POINTS)
    n_blocks = int(seconds * RATE_HZ / BLOCK)
    period_ns = BLOCK * 1_000_000_000 // RATE_HZ
    start = time.perf_counter()
    for i in range(n_blocks):
        clock.add(i * BLOCK + BLOCK - 1, (i + 1) * period_ns)
    return (time.perf_counter() - start) / n_blocks * 1e6


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
    parser.add_argument("--row-peer", action="store_true", help="also the row-per-sample peer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each writer")
    args = parser.parse_args()
    checkpoint_s = args.checkpoint_s or None
    ours_runs: list[tuple[float, int]] = []
    peer_runs: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        # Interleaved, in ABBA order (needlelab first in even rounds, the peer first in odd
        # ones): a load change hits both alike, and neither always runs second, on caches and
        # a disk the other has just warmed.
        for r in range(args.rounds):
            folder = Path(tmp) / str(r)
            folder.mkdir()
            peer_first = r % 2 == 1 and not args.no_peer
            if peer_first:
                peer_runs.append(
                    same_layout_writer(folder, args.seconds, args.page_size, checkpoint_s)
                )
            ours_runs.append(needlelab_writer(folder, args.seconds, args.page_size, checkpoint_s))
            if not args.no_peer and not peer_first:
                peer_runs.append(
                    same_layout_writer(folder, args.seconds, args.page_size, checkpoint_s)
                )
        plain = plain_executemany(Path(tmp), args.seconds) if args.row_peer else None
    rates = sorted(n / t for t, n in ours_runs)
    peer_rates = sorted(n / t for t, n in peer_runs)
    rate_ours = float(np.median(rates))
    rate_peer = float(np.median(peer_rates)) if peer_rates else float("nan")
    ours = ours_runs[len(ours_runs) // 2]
    peer = plain
    print(
        f"ingest: {CHANNELS} ch x {RATE_HZ} Hz float32, {BLOCK}-sample blocks, "
        f"{args.seconds:g} s of data, fsync on every commit; {args.page_size} B pages, "
        + (f"checkpoint every {checkpoint_s:g} s" if checkpoint_s else "SQLite's checkpoints")
    )
    print(f"{'writer':<34} {'samples':>10} {'seconds':>8} {'samples/s':>12} {'x real time':>11}")
    runs = [(f"needlelab hub -> SessionWriter #{k + 1}", run) for k, run in enumerate(ours_runs)]
    runs += [(f"same-layout minimal writer #{k + 1}", run) for k, run in enumerate(peer_runs)]
    if peer:
        runs.append(("plain executemany (row/sample)", peer))
    for name, (elapsed, n) in runs:
        print(
            f"{name:<34} {n:>10} {elapsed:>8.2f} {n / elapsed:>12,.0f} "
            f"{n / elapsed / RATE_HZ:>11.0f}"
        )
    ratio = rate_ours / rate_peer
    # Each round's own ratio (the two ran in the same minute): its median is the paired figure.
    paired = (
        sorted((n / t) / (pn / pt) for (t, n), (pt, pn) in zip(ours_runs, peer_runs, strict=True))
        if peer_runs
        else []
    )
    clock_us = clock_fit_us(args.seconds)
    print(
        f"median: needlelab {rate_ours:,.0f} (range {rates[0]:,.0f}-{rates[-1]:,.0f}), "
        f"same-layout writer {rate_peer:,.0f}"
        + (f" (range {peer_rates[0]:,.0f}-{peer_rates[-1]:,.0f})" if peer_rates else "")
    )
    print(
        f"needlelab's extra work per {BLOCK}-sample block: hub.push (queue, ring, sample times) "
        f"{LAST['push_us']:.1f} us on the pushing thread, writer clock fit {clock_us:.1f} us "
        f"(together {(LAST['push_us'] + clock_us) * 1e-6 * ours[1] / BLOCK / ours[0]:.0%} "
        "of a needlelab run's time)"
    )
    with_close = sorted(n / (t + c) for (t, n), c in zip(ours_runs, CLOSE_S, strict=True))
    print(
        f"needlelab's close after its last commit (log folded in, WAL left; not in the figures "
        f"above, as the peer's): {', '.join(f'{c * 1e3:.0f}' for c in CLOSE_S)} ms; with it "
        f"needlelab {np.median(with_close):,.0f} samples/s "
        f"(range {with_close[0]:,.0f}-{with_close[-1]:,.0f})"
    )
    print(
        f"writer: {LAST['checkpoints']:.0f} checkpoints (longest "
        f"{LAST['checkpoint_max_s'] * 1e3:.1f} ms, {LAST['checkpoint_total_s'] / ours[0]:.1%} "
        "of the run); deepest backlog "
        f"{LAST['peak_mb']:.1f} MB, {LAST['peak_s']:.2f} s"
    )
    met = ratio >= 0.9
    print(
        f"ratio needlelab / same-layout writer: {ratio:.2f}x (medians' ratio; per round, "
        + (
            f"median {np.median(paired):.2f}x, range {paired[0]:.2f}-{paired[-1]:.2f}x"
            if paired
            else "no peer"
        )
        + f", {args.rounds} rounds in ABBA order); goal >= 0.9x: {'met' if met else 'NOT met'}"
    )
    write_json(
        args.json,
        [Row("P1", "ingest hub -> writer -> committed SQLite, fsync on", rate_ours, "samples/s",
             ">= 0.9 x peer", met,
             "minimal same-layout writer: BLOB per 100-sample block, WAL, sync=FULL, commit/50 ms",
             rate_peer, ratio),
         Row("P1c", f"needlelab's extra work per {BLOCK}-sample block (push: ring, times, queue;"
             " clock fit)", LAST["push_us"] + clock_us, "us", "measured, no goal", None,
             better="lower")],
        seconds=args.seconds, rounds=args.rounds,
    )  # fmt: skip


if __name__ == "__main__":
    main()
