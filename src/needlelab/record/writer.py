"""`SessionWriter`: the one thread that commits a session's chunks and events to SQLite."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from needlelab.clock import ClockSegment, StreamClock
from needlelab.config import PATIENT_ID_PATTERN
from needlelab.events import EventBase
from needlelab.hub import Hub, StreamAdded
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

PAGE_SIZE = 16384
LIVE_CLOCK_POINTS = 4096  # arrivals a live clock keeps: `StreamClock.recent` fits the last 2000


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


def connect_for_writing(path: Path, new_file: bool = False) -> sqlite3.Connection:
    """Open a session file with the store's durability settings (WAL, synchronous=FULL)."""
    # The writer thread owns the connection; check_same_thread stays on to catch mistakes.
    conn = sqlite3.connect(path, isolation_level=None)
    if new_file:
        # Only before WAL is on can the page size be set. 16 KiB pages hold a 50 ms EMG block
        # with fewer overflow pages: 1.6x faster inserts than 4 KiB, measured here.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
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


class SessionWriter:
    """Drains the hub's record queue into one SQLite session file, committing on a fixed cadence.

    Everything that arrived within `commit_interval_s` goes into one transaction, so a killed
    process loses at most that interval and the file opens without repair (WAL +
    synchronous=FULL). A write error (disk full, file-size limit, vanished folder) stops writing
    with a `RecordingError` in `error` and `on_error`; what was committed stays readable, and the
    queue keeps being drained (and counted in `dropped`) so devices are never blocked.
    """

    def __init__(
        self, path: str | Path, hub: Hub, meta: SessionMeta, commit_interval_s: float = 0.05
    ) -> None:
        if not 0 < commit_interval_s <= 0.1:
            raise ValueError("commit_interval_s must be in (0, 0.1]")
        self.path = Path(path)
        self.hub = hub
        self.meta = meta
        self.commit_interval_s = commit_interval_s
        self.error: RecordingError | None = None
        self.on_error: Callable[[RecordingError], None] | None = None
        self.dropped = 0
        self.commits = 0
        self.last_commit_t_ns: int | None = None
        self._stream_ids: dict[str, int] = {}
        self._specs: dict[str, StreamSpec] = {}
        self._clocks: dict[str, StreamClock] = {}
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the file (0600), write the session row and start the writer thread."""
        create_private_file(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = connect_for_writing(self.path, new_file=True)
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
        """Write everything queued, mark the session closed and close the file."""
        if self._thread is None:
            return
        self.hub.close()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("session writer did not finish within %.0f s", timeout_s)
        self._thread = None

    # -- thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._conn = connect_for_writing(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            self._drain()
            return
        q = self.hub.record_queue
        finished = False
        while not finished:
            items: list[object] = []
            deadline = time.monotonic() + self.commit_interval_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = q.get(timeout=remaining)
                except Exception:  # queue.Empty
                    break
                if item is None:
                    finished = True
                    break
                items.append(item)
                # Take whatever else is already waiting without sleeping per item.
                while len(items) < 100_000:
                    try:
                        item = q.get_nowait()
                    except Exception:
                        break
                    if item is None:
                        finished = True
                        break
                    items.append(item)
                if finished:
                    break
            if self.error is not None:
                self.dropped += len(items)
                continue
            try:
                self._commit(items, final=finished)
            except (sqlite3.Error, OSError) as exc:
                self.dropped += len(items)
                self._fail(exc)
        self._close()

    def _commit(self, items: list[object], final: bool) -> None:
        conn = self._conn
        assert conn is not None
        blocks: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        now = self.hub.clock.now_ns()
        conn.execute("BEGIN")
        try:
            for item in items:
                if isinstance(item, Chunk):
                    blocks.append(self._block_row(item))
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
                conn.executemany(
                    "INSERT INTO blocks (stream_id, first_index, n, t_host_ns, "
                    "device_counter, device_t_us, t_ns, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    blocks,
                )
            if events:
                conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", events)
            conn.execute("UPDATE heartbeat SET t_ns = ?, commits = commits + 1", (now,))
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
        self.commits += 1
        self.last_commit_t_ns = now

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
        if spec.kind is StreamKind.REGULAR:
            self._clocks[spec.name] = StreamClock(
                spec.nominal_rate_hz, min_latency_ns=spec.latency_ns, keep=LIVE_CLOCK_POINTS
            )

    def _block_row(self, chunk: Chunk) -> tuple[object, ...]:
        spec = self._specs[chunk.stream]
        values = chunk.values
        if values.dtype != spec.dtype or not values.flags.c_contiguous:
            values = values.astype(spec.dtype, order="C")
        clock = self._clocks.get(chunk.stream)
        if clock is not None and chunk.n:
            clock.add(chunk.first_index + chunk.n - 1, chunk.t_host_ns)
        t_ns = None if chunk.t_ns is None else chunk.t_ns.astype("<i8").tobytes()
        return (
            self._stream_ids[chunk.stream],
            chunk.first_index,
            chunk.n,
            chunk.t_host_ns,
            chunk.device_counter,
            chunk.device_t_us,
            t_ns,
            values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes(),
        )

    def live_clock(self, stream: str) -> ClockSegment | None:
        """A quick clock fit of a regular stream's latest arrivals, for the monitor."""
        clock = self._clocks.get(stream)
        return clock.recent() if clock is not None else None

    def _clock_models(self, conn: sqlite3.Connection) -> dict[str, str]:
        """Each regular stream's clock model, fitted from every block in the file.

        The live clocks keep only their latest points, so memory stays flat however long the
        session; the file has them all (and the reader refits from the same rows).
        """
        models = {}
        for name, live in self._clocks.items():
            clock = StreamClock(live.nominal_rate_hz, min_latency_ns=live.min_latency_ns)
            rows = conn.execute(
                "SELECT first_index + n - 1, t_host_ns FROM blocks "
                "WHERE stream_id = ? AND n > 0 ORDER BY id",
                (self._stream_ids[name],),
            )
            for x_last, t_host_ns in rows:
                clock.add(x_last, t_host_ns)
            if clock.fit():
                models[name] = json.dumps({"method": "lower-envelope", **clock.summary()})
        return models

    def _fail(self, exc: BaseException) -> None:
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
        try:
            if self.error is None:
                # Fold the WAL into the main file: a finished recording is one self-contained file.
                # Leaving WAL mode too means readers (read-only) need no -wal/-shm beside it, and
                # would otherwise leave both behind at every open.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()
