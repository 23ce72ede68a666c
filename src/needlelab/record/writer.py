"""`SessionWriter`: the one thread that commits a session's chunks and events to SQLite."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from needlelab.clock import FIT_METHOD, ClockSegment, StreamClock
from needlelab.config import PATIENT_ID_PATTERN
from needlelab.events import EventBase, WarningEvent
from needlelab.hub import Backlog, Hub, RecordItem, StreamAdded, format_bytes
from needlelab.private import private_dir
from needlelab.record.schema import (
    APPLICATION_ID,
    SCHEMA,
    SCHEMA_VERSION,
    NotASessionError,
    RecordingError,
)
from needlelab.streams import Chunk, StreamKind, StreamSpec

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
"""Bytes per SQLite page. Every 50 ms commit rewrites a few pages whatever it carries (the
blocks' last leaf, their index, the heartbeat), so at low rates the page size, not the data, sets
how fast the write-ahead log grows: 0.95 MB/s at 100 samples/s and 1.08 MB/s at the demo's rates
with 16 KiB pages, 0.30 and 0.41 MB/s with 4 KiB (benchmarks/wal_growth.py). 4 KiB is also the
file system's block. Blocks larger than a page (16 ch x 100 float32, 6.4 kB) overflow into a
second one, which costs the ingest benchmark up to a tenth: still hundreds of times real time."""
CHECKPOINT_INTERVAL_S = 1.0
"""How often the writer folds its write-ahead log into the file: a .sqlite copied without its
`-wal` after a kill holds everything up to about this long before it. Measured in
benchmarks/kill_alone.py (20 kills) and benchmarks/ingest.py (its cost)."""
AUTOCHECKPOINT_BYTES = 16 * 1024 * 1024
SPILL_BYTES = 16 * 1024 * 1024
"""A transaction's changed pages stay in memory up to this much before SQLite writes them to the
log ahead of the commit. At its default (the 2 MB page cache) a commit of a few MB spilled: the
pages it changes again (the last leaf, the index) were written to the log twice and all read back
at the commit to re-checksum them, 40 % more log writes at full ingest (benchmarks/ingest.py,
143 against 99 MB written for 41 MB of samples). The memory is given back at each commit
(sqlite3_memory_used: 15.9 MB within a 12 MB transaction, 2.2 MB after its commit)."""
MAX_BATCH_ITEMS = 100_000
SLOW_DISK_ENV = "NEEDLELAB_FAULT_SLOW_DISK"
# Arrivals a live clock keeps (16 bytes each): the LSL publisher fits up to 20,000 of them (100 s
# of 10-sample notifications at 2 kHz), the monitor the last 2,000.
LIVE_CLOCK_POINTS = 32_768


BLOCK_COLUMNS = "stream_id, first_index, n, t_host_ns, device_counter, device_t_us, t_ns, data"
ROWS_PER_INSERT = 64
"""Blocks one INSERT statement writes (8 parameters each). Each statement is one step, and
SQLite releases the GIL only for a step: with one row a step (executemany) the writer takes the
GIL back from other threads (a device's, the monitor's) after every block. What that costs was
within the noise of a loaded 2-core machine in benchmarks/ingest.py (ratio to the peer 0.85 at
64 rows, 0.78 at one; 256 and 1024 rows no better than 64)."""
_NATIVE_LE = sys.byteorder == "little"


@functools.cache
def _insert_blocks_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO blocks ({BLOCK_COLUMNS}) VALUES {values}"


def _insert_blocks(conn: sqlite3.Connection, params: list[object]) -> None:
    """Insert blocks in order, given their column values one block after the other (8 each):
    `ROWS_PER_INSERT` a statement, the rest in statements of halving sizes (a few sizes, each
    prepared once and kept in the connection's statement cache)."""
    width = 8
    rows, done, size = len(params) // width, 0, ROWS_PER_INSERT
    while done < rows:
        while rows - done < size:
            size //= 2
        conn.execute(_insert_blocks_sql(size), params[done * width : (done + size) * width])
        done += size


def _le_bytes(values: npt.NDArray[Any]) -> bytes:
    """The samples' bytes, little-endian (as the file stores them)."""
    return values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


class SessionMeta(BaseModel):
    """What the `session` row holds: ids, clock anchors, the validated config, the version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    patient_id: str
    anchor_monotonic_ns: int
    anchor_wall_ns: int
    config_json: str
    software_version: str


def session_file_name(patient_id: str, wall_ns: int) -> str:
    """`<patient_id>_<YYYYMMDDTHHMMSSZ>.sqlite`: a pseudonymous id and a UTC time, nothing else."""
    if not re.fullmatch(PATIENT_ID_PATTERN, patient_id):
        raise RecordingError(
            f"patient id {patient_id!r} is not allowed in a file name: use 1-32 "
            "letters, digits, '_' or '-' (a pseudonymous id, never a name)"
        )
    stamp = datetime.fromtimestamp(wall_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{patient_id}_{stamp}.sqlite"


def ignore_sigxfsz() -> None:
    """Make a file-size limit an ordinary write error instead of a kill (main thread only)."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def create_private_file(path: Path) -> None:
    """Create `path` owner-only (0600) and its folder owner-only (0700) if new; never overwrite."""
    try:
        private_dir(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise RecordingError(f"{path} already exists; a recording is never overwritten") from None
    except OSError as exc:
        raise RecordingError(
            f"cannot create {path}: {exc.strerror or exc}. Choose a writable "
            "folder with --out (or out_dir in the config)."
        ) from None
    os.close(fd)


def connect_for_writing(
    path: Path, new_file: bool = False, page_size: int = PAGE_SIZE
) -> sqlite3.Connection:
    """Open a session file with the store's durability settings (WAL, synchronous=FULL)."""
    # The writer thread owns the connection; check_same_thread stays on to catch mistakes.
    conn = sqlite3.connect(path, isolation_level=None)
    if new_file:
        conn.execute(f"PRAGMA page_size={page_size}")  # only before WAL is on can it be set
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    # SQLite's own checkpoint (at 1000 pages) stays a backstop at the same 16 MB of log whatever
    # the page size: with 4 KiB pages it would fold the log in every 60 ms at full ingest.
    pages = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_BYTES // pages}")
    conn.execute(f"PRAGMA cache_spill={SPILL_BYTES // pages}")
    # ... and spilling on: SQLite also reads that number as a yes/no, from its lowest byte only
    # (4096 pages is "no", which would hold a transaction of any size in memory).
    conn.execute("PRAGMA cache_spill=ON")
    return conn


_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # SQLite's names for a file that is not sound


def seal(path: str | Path) -> bool:
    """Fold a session file's write-ahead log into it, so that the one file holds every commit.

    A recording that was killed keeps its latest commits in `NAME.sqlite-wal` beside it (a
    reader sees them; a copy of the .sqlite alone would not). Sealing changes nothing else: the
    file still says it was not closed cleanly. True if there was a log to fold. `RecordingError`
    if the file is not a session, is being recorded now, or cannot be written.
    """
    path = Path(path)
    wal = Path(f"{path}-wal")
    had_log = wal.exists() and wal.stat().st_size > 0
    if not path.is_file():
        raise RecordingError(f"{path}: no such session file")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=1.0)
    except sqlite3.Error as exc:
        raise RecordingError(f"{path}: cannot open it for writing: {exc}") from None
    try:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") not in _DAMAGED:
                raise  # a disk or permission error: said below
            raise NotASessionError(f"{path}: not a readable SQLite file ({exc})") from None
        if app_id != APPLICATION_ID:
            raise NotASessionError(f"{path}: not a needlelab session file")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise sqlite3.OperationalError("database is locked")
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") in _DAMAGED:
            raise NotASessionError(f"{path}: damaged session file ({exc})") from None
        if "locked" in str(exc) or "busy" in str(exc):
            raise RecordingError(
                f"{path} is in use (being recorded now, or open in another program); seal it "
                "once that has stopped"
            ) from None
        raise RecordingError(
            f"{path}: cannot fold its write-ahead log in ({exc}). Nothing is lost as long as "
            f"{wal.name} stays beside it; free disk space if it is full, and try again"
        ) from None
    finally:
        conn.close()
    return had_log


@dataclass(frozen=True)
class SlowDisk:
    """Fault injection: commits take as long as on a slow disk (tests and benchmarks).

    A commit takes `latency_s` plus its sample bytes at `bytes_per_s`, during the recording's
    first `for_s` seconds (None: all along); the writer sleeps inside the transaction, so the
    record queue backs up exactly as behind a slow fsync. Off unless given to `SessionWriter`,
    or set for a recorder started as a process in the environment variable
    NEEDLELAB_FAULT_SLOW_DISK as `LATENCY_S[:BYTES_PER_S[:FOR_S]]` (0 for none; logged when on).
    A really slow disk cannot be made here without root (a FUSE or device-mapper delay), so
    this seam is what the back-pressure tests use, like the simulators' faults.
    """

    latency_s: float = 0.0
    bytes_per_s: float | None = None
    for_s: float | None = None

    def delay_s(self, nbytes: int, elapsed_s: float) -> float:
        """How long a commit of `nbytes`, `elapsed_s` into the recording, takes on this disk."""
        if self.for_s is not None and elapsed_s >= self.for_s:
            return 0.0
        return self.latency_s + (nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)

    @classmethod
    def from_env(cls) -> SlowDisk | None:
        """The fault set in NEEDLELAB_FAULT_SLOW_DISK, or None (`RecordingError` if malformed)."""
        text = os.environ.get(SLOW_DISK_ENV, "").strip()
        if not text:
            return None
        try:
            parts = [float(p) for p in text.split(":")]
            if len(parts) > 3 or min(parts) < 0:
                raise ValueError
        except ValueError:
            raise RecordingError(
                f"{SLOW_DISK_ENV}={text!r} (a test fault): expected "
                "LATENCY_S[:BYTES_PER_S[:FOR_S]], numbers >= 0; unset it to record normally"
            ) from None
        rate = parts[1] if len(parts) > 1 and parts[1] > 0 else None
        return cls(parts[0], rate, parts[2] if len(parts) > 2 and parts[2] > 0 else None)


class SessionWriter:
    """Drains the hub's record queue into one SQLite session file, committing on a fixed cadence.

    Everything that arrived within `commit_interval_s` goes into one transaction, so a killed
    process loses at most that interval and the file opens without repair (WAL +
    synchronous=FULL). Every `checkpoint_interval_s` the write-ahead log is folded into the
    file, so the .sqlite alone (copied without its `-wal`) lacks at most about that much.

    A write error (disk full, file-size limit, vanished folder) stops writing with a
    `RecordingError` in `error` and `on_error`; what was committed stays readable, and the queue
    keeps being drained (and counted in `dropped`) so devices are never blocked. A disk that
    falls behind raises a `writer.backlog` warning event; at the backlog's limit
    (`BacklogLimits`) the recording stops the same way, but everything accepted until then is
    still written and the file closed cleanly.
    """

    def __init__(
        self,
        path: str | Path,
        hub: Hub,
        meta: SessionMeta,
        commit_interval_s: float = 0.05,
        checkpoint_interval_s: float | None = CHECKPOINT_INTERVAL_S,
        page_size: int = PAGE_SIZE,
        slow_disk: SlowDisk | None = None,
    ) -> None:
        if not 0 < commit_interval_s <= 0.1:
            raise ValueError("commit_interval_s must be in (0, 0.1]")
        if checkpoint_interval_s is not None and checkpoint_interval_s <= 0:
            raise ValueError("checkpoint_interval_s must be positive (or None: SQLite's own)")
        self.path = Path(path)
        self.hub = hub
        self.meta = meta
        self.commit_interval_s = commit_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.page_size = page_size
        self.slow_disk = slow_disk if slow_disk is not None else SlowDisk.from_env()
        if self.slow_disk is not None:
            log.warning("fault injection on: every commit is slowed as %s", self.slow_disk)
        self.error: RecordingError | None = None
        self.on_error: Callable[[RecordingError], None] | None = None
        self.dropped = 0
        self.commits = 0
        self.last_commit_t_ns: int | None = None
        self.checkpoints = 0
        self.checkpoint_s_max = 0.0  # the longest checkpoint (the window a kill could tear)
        self.checkpoint_s_total = 0.0
        self.close_s = 0.0  # how long the close took after the last commit (log folded in)
        self._write_failed = False  # a write error: nothing more can be stored
        self._pending = 0  # items written in the open transaction, not yet committed
        self._pending_bytes = 0  # their sample bytes (for the slow-disk fault)
        self._started = time.monotonic()
        self._next_checkpoint = 0.0
        self._stream_ids: dict[str, int] = {}
        self._specs: dict[str, StreamSpec] = {}
        self._clocks: dict[str, StreamClock] = {}
        # What each block of a stream needs: its id, its dtype, its live clock (regular streams).
        self._block_streams: dict[str, tuple[int, np.dtype[Any], StreamClock | None]] = {}
        self._clock_adds: dict[str, int] = {}  # arrivals given to each live clock
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the file (0600), write the session row and start the writer thread."""
        self.hub.record_queue.listener = self._on_backlog
        create_private_file(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = connect_for_writing(self.path, new_file=True, page_size=self.page_size)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.executescript(f"BEGIN; {SCHEMA} COMMIT;")
            m = self.meta
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO session VALUES (1, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    m.session_id,
                    m.patient_id,
                    m.anchor_monotonic_ns,
                    m.anchor_wall_ns,
                    m.config_json,
                    m.software_version,
                    SCHEMA_VERSION,
                ),
            )
            conn.execute("INSERT INTO heartbeat VALUES (1, 0, 0)")
            interval = self.checkpoint_interval_s
            conn.execute(
                "INSERT INTO writer VALUES (1, ?, ?)",
                (
                    round(self.commit_interval_s * 1e9),
                    None if interval is None else round(interval * 1e9),
                ),
            )
            conn.execute("COMMIT")
            conn.close()
        except (sqlite3.Error, OSError) as exc:
            # Nothing was committed (a full disk at create): leave no empty file behind.
            if conn is not None:
                conn.close()
            for leftover in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                leftover.unlink(missing_ok=True)
            raise RecordingError(f"cannot initialise {self.path}: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="session-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, mark the session closed and close the file.

        Waits as long as the writer makes progress (a slow disk may have a backlog to write),
        and gives up after `timeout_s` without a commit.
        """
        if self._thread is None:
            return
        self.hub.close()
        commits, since = self.commits, time.monotonic()
        while self._thread.is_alive():
            self._thread.join(0.25)
            if self.commits != commits:
                commits, since = self.commits, time.monotonic()
            elif time.monotonic() - since > timeout_s:
                log.error("session writer made no progress for %.0f s; giving up", timeout_s)
                break
        self._thread = None

    def backlog(self) -> Backlog:
        """What waits to be written: items, bytes, seconds behind (for consoles and benches)."""
        return self.hub.backlog_status()

    # -- thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        q = self.hub.record_queue
        try:
            self._conn = connect_for_writing(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            self._drain()
            return
        self._started = time.monotonic()
        self._next_checkpoint = self._started + (self.checkpoint_interval_s or 0.0)
        finished = False
        while not finished:
            # Items are written as they are taken, into a transaction open until the commit is
            # due: the inserts run while more arrive, not all at once after the interval (which
            # left the writer idle for most of it and then behind). A commit is still due every
            # `commit_interval_s`, and nothing counts as written before it.
            deadline = time.monotonic() + self.commit_interval_s
            taken = 0
            while not finished and taken < MAX_BATCH_ITEMS:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                batch = q.get_batch(remaining, MAX_BATCH_ITEMS - taken)
                if not batch:
                    break
                taken += len(batch)
                finished = self._write(batch)
            if not self._write_failed:
                try:
                    self._commit(final=finished)
                except (sqlite3.Error, OSError) as exc:
                    self._give_up(exc)
                else:
                    try:
                        if not finished:
                            self._maybe_checkpoint()
                    except (sqlite3.Error, OSError) as exc:  # committed, in the log: kept
                        self._fail(exc)
            q.release()
        self._close()

    def _maybe_checkpoint(self) -> None:
        """Fold the write-ahead log into the file when it is time (PASSIVE: never waits).

        Only then does the .sqlite alone hold the latest commits; SQLite on its own folds the log
        in at 1000 pages, minutes of data at low rates. A kill while the pages are being copied
        could leave the .sqlite alone (not the pair) torn: `checkpoint_s_max` is that window.
        """
        interval = self.checkpoint_interval_s
        conn = self._conn
        if interval is None or conn is None or time.monotonic() < self._next_checkpoint:
            return
        t0 = time.perf_counter()
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        took = time.perf_counter() - t0
        self.checkpoints += 1
        self.checkpoint_s_total += took
        self.checkpoint_s_max = max(self.checkpoint_s_max, took)
        self._next_checkpoint = time.monotonic() + interval

    def _write(self, items: list[RecordItem | None]) -> bool:
        """Write items into the open transaction (begun here if none is): not yet committed.

        True when the end marker (None) came: the hub closed, this is the last commit (what
        follows it is not written). After a write error nothing more is written: the items are
        counted in `dropped`.
        """
        finished = False
        for k, item in enumerate(items):
            if item is None:  # the hub closed: this is the last commit
                items, finished = items[:k], True
                break
        if self._write_failed:
            self.dropped += len(items)
            return finished
        conn = self._conn
        assert conn is not None
        self._pending += len(items)  # dropped with the rest of the transaction if it fails
        blocks: list[object] = []  # every block's column values, one after the other
        events: list[tuple[object, ...]] = []
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")
            for item in items:
                if isinstance(item, Chunk):
                    self._block_row(item, blocks)
                    self._pending_bytes += item.values.nbytes
                elif isinstance(item, StreamAdded):
                    self._add_stream(conn, item.spec)
                elif isinstance(item, EventBase):
                    events.append(
                        (
                            item.id,
                            item.t_ns,
                            getattr(item, "kind", "unknown"),
                            item.source,
                            json.dumps(item.payload()),
                        )
                    )
            if blocks:
                _insert_blocks(conn, blocks)
            if events:
                conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", events)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)
        return finished

    def _commit(self, final: bool) -> None:
        """Commit what `_write` wrote since the last commit, with the heartbeat (and, at the
        end, the clock models and the close time). Even with nothing written: the heartbeat
        says the writer is alive."""
        conn = self._conn
        assert conn is not None
        now = self.hub.clock.now_ns()  # after the last item taken: the file holds all before it
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")
            conn.execute("UPDATE heartbeat SET t_ns = ?, commits = commits + 1", (now,))
            if self.slow_disk is not None:  # fault injection (tests): a disk this slow
                elapsed_s = time.monotonic() - self._started
                time.sleep(self.slow_disk.delay_s(self._pending_bytes, elapsed_s))
            if final:
                for name, model in self._clock_models(conn).items():
                    conn.execute("UPDATE streams SET clock_model = ? WHERE name = ?", (model, name))
                conn.execute("UPDATE session SET closed_t_ns = ?", (now,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self._pending = self._pending_bytes = 0
        self.commits += 1
        self.last_commit_t_ns = now

    def _give_up(self, exc: BaseException) -> None:
        """A write or commit failed: roll back what was not committed (counted in `dropped`)
        and stop writing."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self.dropped += self._pending
        self._pending = self._pending_bytes = 0
        self._fail(exc)

    def _add_stream(self, conn: sqlite3.Connection, spec: StreamSpec) -> None:
        cur = conn.execute(
            "INSERT INTO streams (name, type, kind, channels, units, dtype, nominal_rate_hz, "
            "latency_ns, device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spec.name,
                spec.type,
                spec.kind.value,
                json.dumps(spec.channels),
                json.dumps(spec.units),
                spec.dtype,
                spec.nominal_rate_hz,
                spec.latency_ns,
                spec.device,
            ),
        )
        assert cur.lastrowid is not None
        self._stream_ids[spec.name] = cur.lastrowid
        self._specs[spec.name] = spec
        if spec.latency_floor != "least":
            conn.execute(
                "INSERT INTO latency_floors (stream_id, floor) VALUES (?, ?)",
                (cur.lastrowid, spec.latency_floor),
            )
        if spec.kind is StreamKind.REGULAR:
            self._clocks[spec.name] = StreamClock(
                spec.nominal_rate_hz,
                min_latency_ns=spec.latency_ns,
                floor=spec.latency_floor,
                keep=LIVE_CLOCK_POINTS,
            )
        clock = self._clocks.get(spec.name)
        self._block_streams[spec.name] = (cur.lastrowid, np.dtype(spec.dtype), clock)
        self._clock_adds[spec.name] = 0

    def _block_row(self, chunk: Chunk, params: list[object]) -> None:
        """Append a block's 8 column values (as `_insert_blocks` takes them) to `params`."""
        stream_id, dtype, clock = self._block_streams[chunk.stream]
        values = chunk.values
        if values.dtype != dtype or not values.flags.c_contiguous:
            values = values.astype(dtype, order="C")
        n = values.shape[0]
        if clock is not None and n:
            clock.add(chunk.first_index + n - 1, chunk.t_host_ns)
            self._clock_adds[chunk.stream] += 1
        t_ns = None if chunk.t_ns is None else chunk.t_ns.astype("<i8").tobytes()
        # A C-contiguous little-endian array is bound as it is (its buffer is the BLOB's
        # bytes, copied once by SQLite); otherwise, and for no samples, its little-endian bytes.
        data = values if n and _NATIVE_LE and dtype.isnative else _le_bytes(values)
        params += (
            stream_id,
            chunk.first_index,
            n,
            chunk.t_host_ns,
            chunk.device_counter,
            chunk.device_t_us,
            t_ns,
            data,
        )

    def live_clock(self, stream: str, points: int = 2000) -> ClockSegment | None:
        """A clock fit of a regular stream's latest `points` arrivals (since its last gap), for
        the monitor and the LSL stamps."""
        clock = self._clocks.get(stream)
        return clock.recent(points) if clock is not None else None

    def _clock_models(self, conn: sqlite3.Connection) -> dict[str, str]:
        """Each regular stream's clock model, fitted from every block in the file.

        The live clocks keep only their latest points, so memory stays flat however long the
        session; the file has them all (and the reader refits from the same rows).
        """
        models = {}
        for name, live in self._clocks.items():
            if live.points == self._clock_adds[name]:
                # The live clock still holds every block's arrival (it drops its older half only
                # at twice LIVE_CLOCK_POINTS), in the file's order: it is fitted as it is, set up
                # as below but for `keep`, which a fit does not use. Reading every block back
                # was most of a close (22 ms for 6,000 blocks, against 2 ms for the fit).
                if live.fit():
                    models[name] = json.dumps({"method": FIT_METHOD, **live.summary()})
                continue
            clock = StreamClock(
                live.nominal_rate_hz, min_latency_ns=live.min_latency_ns, floor=live.floor
            )
            rows = conn.execute(
                "SELECT first_index + n - 1, t_host_ns FROM blocks "
                "WHERE stream_id = ? AND n > 0 ORDER BY id",
                (self._stream_ids[name],),
            )
            for x_last, t_host_ns in rows:
                clock.add(x_last, t_host_ns)
            if clock.fit():
                models[name] = json.dumps({"method": FIT_METHOD, **clock.summary()})
        return models

    def _on_backlog(self, state: Literal["slow", "cleared", "full"], b: Backlog) -> None:
        """The record queue's state changed (on the thread that changed it): tell the operator,
        and at the limit stop the recording."""
        details = {
            "items": b.items,
            "bytes": b.bytes,
            "seconds": round(b.seconds, 3),
            "limit_bytes": self.hub.record_queue.limits.limit_bytes,
        }
        limit = format_bytes(self.hub.record_queue.limits.limit_bytes)
        waiting = f"{b.items} items, {format_bytes(b.bytes)}, the oldest {b.seconds:.1f} s old"
        if state == "slow":
            message = (
                f"the disk is not keeping up: {waiting}, wait to be written to {self.path.name}, "
                f"and a crash now would lose them; at {limit} the recording stops. If this "
                "lasts, record to a faster local disk (--out)"
            )
        elif state == "cleared":
            message = f"the disk caught up: {self.path.name} is written as data arrive again"
        else:
            message = (
                f"the disk could not keep up: {waiting}, waited to be written, the most "
                "needlelab holds in memory; the recording stops here"
            )
        log.warning("%s", message)  # on the record console's stderr, as it happens
        self.hub.emit(
            WarningEvent(
                code="writer.backlog",
                message=message,
                details={**details, "cleared": state == "cleared", "stopped": state == "full"},
                source="writer",
            )
        )
        if state != "full":
            return
        self.error = RecordingError(
            f"recording stopped: the disk could not keep up ({waiting}, waited to be "
            f"written, the most needlelab holds in memory). File: {self.path}; everything "
            "received until then is written to it before it closes (check with `needlelab "
            f"verify {self.path}`). Record to a faster local disk with --out (or out_dir in the "
            "config)."
        )
        if self.on_error is not None:
            self.on_error(self.error)
        else:
            log.error("%s", self.error)

    def _fail(self, exc: BaseException) -> None:
        self._write_failed = True
        last = self.last_commit_t_ns
        saved = (
            f"everything up to t={last / 1e9:.2f} s is saved and readable"
            if last is not None
            else "nothing was committed"
        )
        text = str(exc)
        if "full" in text or "I/O" in text or isinstance(exc, OSError):
            cause = f"a write failed ({text}): the disk is full, a file-size limit was reached, "
            cause += "or the drive is gone"
        else:
            cause = f"a write failed ({text})"
        self.error = RecordingError(
            f"recording stopped: {cause}. File: {self.path}; {saved} (check with `needlelab "
            f"verify {self.path}`). Free disk space or record to another folder with --out."
        )
        if self.on_error is not None:
            self.on_error(self.error)
        else:  # nobody is listening: make sure it is seen
            log.error("%s", self.error)

    def _drain(self) -> None:
        while self.hub.record_queue.get() is not None:
            self.dropped += 1

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        t0 = time.perf_counter()
        try:
            if not self._write_failed:  # also after a full backlog: the disk itself works
                # Fold the WAL into the main file: a finished recording is one self-contained file.
                # Leaving WAL mode too means readers (read-only) need no -wal/-shm beside it, and
                # would otherwise leave both behind at every open.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()
            self.close_s = time.perf_counter() - t0
