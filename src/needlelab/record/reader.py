"""Reading session files: numpy arrays per stream, typed events, the clock model.

Files are opened read-only, so a reader can run while the writer is still recording (WAL), and a
file whose writer was killed opens as it is, with no repair step. Nothing is ever created beside
the file: SQLite would make `-wal` and `-shm` files for a read-only open of a file in WAL mode,
so `open_read_only` picks the open that needs neither.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, get_args

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from needlelab.clock import Published, StreamClock
from needlelab.config import LatencyFloor
from needlelab.events import ClockPublishedEvent, Event, event_from_row
from needlelab.record.schema import APPLICATION_ID, NotASessionError, RecordingError
from needlelab.streams import StreamKind, StreamSpec


@dataclass(frozen=True)
class UnknownEvent:
    """An event of a kind this version does not know (written by a newer needlelab)."""

    id: int
    t_ns: int
    kind: str
    source: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Block:
    """One stored block, raw: as the device delivered it."""

    first_index: int
    n: int
    t_host_ns: int
    device_counter: int | None
    device_t_us: int | None
    t_ns: npt.NDArray[np.int64] | None
    values: npt.NDArray[np.generic]


def sample_times(
    spec: StreamSpec, blocks: list[Block], published: Published | None = None
) -> npt.NDArray[np.int64]:
    """Per-sample session times of a stream, from its raw blocks.

    Irregular streams carry their own times. Regular streams are fitted with the `StreamClock`
    (a line of arrival time against sample index, its slope from every arrival, its offset on
    their floor, segmented at gaps), so the stored raw arrivals stay untouched and the fit can
    always be redone. Samples an LSL outlet published keep the times it published them with
    (`published`, from the `clock.published` events).
    """
    if not blocks:
        return np.zeros(0, dtype=np.int64)
    if spec.kind is StreamKind.IRREGULAR or all(b.t_ns is not None for b in blocks):
        return np.concatenate(
            [b.t_ns if b.t_ns is not None else np.full(b.n, b.t_host_ns, np.int64) for b in blocks]
        )
    clock = StreamClock(
        spec.nominal_rate_hz,
        min_latency_ns=spec.latency_ns,
        floor=spec.latency_floor,
        published=published,
    )
    for b in blocks:
        if b.n:
            clock.add(b.first_index + b.n - 1, b.t_host_ns)
    indices = np.concatenate([np.arange(b.first_index, b.first_index + b.n) for b in blocks])
    return clock.times(indices)


def header_says_wal(path: Path) -> bool:
    """Whether a SQLite file's header says it is in WAL mode (a recording that did not close)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return (
        len(head) == 20 and head.startswith(b"SQLite format 3\x00") and head[18:20] == b"\x02\x02"
    )


def open_read_only(
    path: Path,
) -> tuple[sqlite3.Connection, tempfile.TemporaryDirectory[str] | None]:
    """A read-only connection that creates nothing beside `path`; and the private folder of the
    snapshot it reads, if it needed one (remove it after closing).

    - a file in WAL mode with its `-wal` and `-shm` (being recorded, or killed in place): read
      as it is, live (SQLite uses both files; they exist already);
    - in WAL mode with no `-wal` (a killed recording copied alone): `immutable`, the file alone;
    - with a `-wal` but no `-shm` (a killed recording copied with its log): SQLite would create
      the `-shm`, so the pair is copied into a private temporary folder (0700) and read there;
    - not in WAL mode (a finished or sealed recording): read-only, which needs neither file.
    """
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    snapshot: tempfile.TemporaryDirectory[str] | None = None
    target, query = path.resolve(), "mode=ro"
    if header_says_wal(path):
        if not wal.exists():
            query = "immutable=1"
        elif not shm.exists():
            snapshot = tempfile.TemporaryDirectory(prefix="needlelab-read-")
            target = Path(snapshot.name) / path.name
            try:
                shutil.copyfile(path, target)
                shutil.copyfile(wal, f"{target}-wal")
            except OSError as exc:
                snapshot.cleanup()
                raise RecordingError(f"{path}: cannot read it with {wal.name}: {exc}") from None
    try:
        return sqlite3.connect(f"{target.as_uri()}?{query}", uri=True), snapshot
    except sqlite3.Error as exc:
        if snapshot is not None:
            snapshot.cleanup()
        raise NotASessionError(f"{path}: cannot open it ({exc})") from None


def _connect_read_only(
    path: Path,
) -> tuple[sqlite3.Connection, tempfile.TemporaryDirectory[str] | None]:
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if path.is_dir():
        raise RecordingError(f"{path}: is a folder, not a session file")
    conn, snapshot = open_read_only(path)

    def give_up() -> None:
        conn.close()
        if snapshot is not None:
            snapshot.cleanup()

    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        give_up()
        raise NotASessionError(
            f"{path}: not a readable SQLite file ({exc}); it is damaged or not a needlelab session"
        ) from None
    if app_id != APPLICATION_ID:
        give_up()
        raise NotASessionError(f"{path}: a SQLite file, but not a needlelab session")
    return conn, snapshot


class SessionFile:
    """A session file opened read-only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn, self._snapshot = _connect_read_only(self.path)
        try:
            row = self._conn.execute(
                "SELECT session_id, patient_id, anchor_monotonic_ns, anchor_wall_ns, config_json, "
                "software_version, schema_version, closed_t_ns FROM session"
            ).fetchone()
            if row is None:
                raise NotASessionError(
                    f"{self.path}: the session row is missing (the file was "
                    "cut before its first commit)"
                )
            keys = (
                "session_id",
                "patient_id",
                "anchor_monotonic_ns",
                "anchor_wall_ns",
                "config_json",
                "software_version",
                "schema_version",
                "closed_t_ns",
            )
            self.meta: dict[str, Any] = dict(zip(keys, row, strict=True))
            self.streams: dict[str, StreamSpec] = {}
            self._stream_ids: dict[str, int] = {}
            self.clock_models: dict[str, dict[str, Any]] = {}
            self.damaged_blocks = 0  # blocks skipped because their bytes were damaged
            # How the writer committed and folded its log in (files before the table: None).
            self.writer_settings: dict[str, int | None] | None = None
            if self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'writer'"
            ).fetchone():
                row = self._conn.execute(
                    "SELECT commit_interval_ns, checkpoint_interval_ns FROM writer"
                ).fetchone()
                if row is not None:
                    self.writer_settings = {
                        "commit_interval_ns": row[0],
                        "checkpoint_interval_ns": row[1],
                    }
            for (
                sid,
                name,
                type_,
                kind,
                ch,
                units,
                dtype,
                rate,
                lat,
                dev,
                model,
            ) in self._conn.execute("SELECT * FROM streams ORDER BY id"):
                self.streams[name] = StreamSpec(
                    name,
                    type_,
                    tuple(json.loads(ch)),
                    tuple(json.loads(units)),
                    StreamKind(kind),
                    rate,
                    dtype,
                    dev,
                    lat,
                )
                self._stream_ids[name] = sid
                if model:
                    self.clock_models[name] = json.loads(model)
            if self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'latency_floors'"
            ).fetchone():
                by_id = {sid: name for name, sid in self._stream_ids.items()}
                for sid, floor in self._conn.execute("SELECT stream_id, floor FROM latency_floors"):
                    if sid in by_id and floor in get_args(LatencyFloor):
                        name = by_id[sid]
                        self.streams[name] = replace(self.streams[name], latency_floor=floor)
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            # SQLite's own errors, and header rows whose JSON or kinds were damaged.
            self.close()
            raise NotASessionError(f"{self.path}: damaged session file ({exc})") from None
        except NotASessionError:
            self.close()
            raise

    # -- context ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file (and remove the private snapshot it was read from, if any)."""
        self._conn.close()
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            snapshot.cleanup()

    def __enter__(self) -> SessionFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- content ---------------------------------------------------------------------------------
    @property
    def closed_cleanly(self) -> bool:
        """Whether the writer finished (False after a kill, a crash or a write error)."""
        return self.meta["closed_t_ns"] is not None

    @property
    def config(self) -> dict[str, Any]:
        """The validated session config stored in the file."""
        try:
            result = json.loads(self.meta["config_json"])
        except (TypeError, ValueError):
            result = None
        if not isinstance(result, dict):
            raise NotASessionError(f"{self.path}: the stored config is damaged")
        return result

    def blocks(self, stream: str) -> list[Block]:
        """The raw blocks of a stream, in the order they were recorded."""
        spec = self._spec(stream)
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        out = []
        with self._damage():
            rows = self._conn.execute(
                "SELECT first_index, n, t_host_ns, device_counter, device_t_us, t_ns, data "
                "FROM blocks WHERE stream_id = ? ORDER BY id",
                (self._stream_ids[stream],),
            ).fetchall()
        for first, n, t_host, counter, dev_t, t_blob, data in rows:
            try:
                values = np.frombuffer(data, dtype=dtype).reshape(n, spec.channel_count)
                t_ns = None if t_blob is None else np.frombuffer(t_blob, dtype="<i8")
                if t_ns is not None and len(t_ns) != n:
                    raise ValueError("times and values disagree")
                ints = (int(first), int(t_host))
            except (TypeError, ValueError):
                # A block whose bytes were damaged cannot be decoded: skipped and counted, and
                # the blocks around it are read as usual.
                self.damaged_blocks += 1
                continue
            out.append(Block(ints[0], n, ints[1], counter, dev_t, t_ns, values))
        return out

    def stream(self, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """All samples of a stream: (t_ns (n,), values (n, channels)), in recording order."""
        spec = self._spec(name)
        blocks = self.blocks(name)
        if not blocks:
            return np.zeros(0, np.int64), np.zeros((0, spec.channel_count), spec.dtype)
        values = np.concatenate([b.values for b in blocks]).astype(spec.dtype)
        return sample_times(spec, blocks, self.published(name)), values

    def published(self, stream: str) -> Published | None:
        """The clock models an LSL outlet stamped the stream's samples with (None: not published).
        Pieces whose JSON was damaged are left out: those samples keep the fitted times."""
        pieces = []
        with self._damage():
            rows = self._conn.execute(
                "SELECT payload FROM events WHERE kind = 'clock.published' ORDER BY id"
            ).fetchall()
        for (payload,) in rows:
            try:
                piece = ClockPublishedEvent.model_validate_json(payload)
            except ValueError:
                continue
            if piece.stream == stream:
                pieces.append(piece.model_dump())
        return Published.of(pieces)

    def events(self, kind: str | None = None) -> list[Event | UnknownEvent]:
        """Events in id order (optionally of one kind) as typed records."""
        sql = "SELECT id, t_ns, kind, source, payload FROM events"
        out: list[Event | UnknownEvent] = []
        with self._damage():
            rows = (
                self._conn.execute(sql + " WHERE kind = ? ORDER BY id", (kind,))
                if kind
                else self._conn.execute(sql + " ORDER BY id")
            )
            for eid, t_ns, k, source, payload in rows:
                try:
                    data = json.loads(payload)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                except (TypeError, ValueError):
                    # A damaged row is kept, marked, with what is left of it: nothing is dropped.
                    raw = payload if isinstance(payload, str) else repr(payload)
                    out.append(UnknownEvent(eid, t_ns, str(k), str(source), {"damaged": raw[:500]}))
                    continue
                try:
                    out.append(event_from_row(eid, t_ns, k, source, data))
                except (ValidationError, TypeError):
                    out.append(UnknownEvent(eid, t_ns, str(k), str(source), data))
        return out

    @contextlib.contextmanager
    def _damage(self) -> Iterator[None]:
        """SQLite errors while reading: the file is damaged (a `RecordingError`, one line)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise NotASessionError(f"{self.path}: damaged session file ({exc})") from None

    def events_frame(self) -> Any:
        """Events as a pandas DataFrame (columns id, t_ns, t_s, kind, source + payload fields)."""
        return events_frame(self.events())

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (for verify/info and power users)."""
        with self._damage():
            return self._conn.execute(sql, params).fetchall()

    def _spec(self, name: str) -> StreamSpec:
        try:
            return self.streams[name]
        except KeyError:
            raise KeyError(
                f"no stream {name!r} in {self.path}; streams: {sorted(self.streams)}"
            ) from None


def event_row(e: Event | UnknownEvent) -> dict[str, Any]:
    """An event as a flat row: id, t_ns, t_s, kind, source, then its payload fields."""
    payload = e.payload if isinstance(e, UnknownEvent) else e.payload()
    return {"id": e.id, "t_ns": e.t_ns, "t_s": e.t_ns / 1e9, "kind": e.kind, "source": e.source,
            **payload}  # fmt: skip


def event_json(e: Event | UnknownEvent) -> str:
    """An event as one line of JSON: kind, source, id and its payload (exports, LSL markers)."""
    payload = e.payload if isinstance(e, UnknownEvent) else e.payload()
    return json.dumps({"kind": e.kind, "source": e.source, "id": e.id, **payload}, default=str)


def events_frame(events: list[Event | UnknownEvent]) -> Any:
    """Events as a pandas DataFrame of `event_row`s."""
    try:
        import pandas as pd  # type: ignore[import-untyped]  # optional, no stubs needed
    except ImportError:
        raise ImportError("events_frame() needs pandas: pip install pandas") from None
    return pd.DataFrame([event_row(e) for e in events])


def open_session(path: str | Path) -> SessionFile:
    """Open a session file read-only (use it as a context manager)."""
    return SessionFile(path)
