"""One stream of a session file, read block by block: what streaming exports read.

`SessionFile.stream` returns a whole stream at once (a 2 h, 16 ch x 2 kHz stream is 1.8 GB as
float32 with its times); exports need it a few MB at a time, with the very same values and
times. `StreamSource` reads the blocks in pages through `SessionFile.execute`, skips the blocks
`SessionFile.blocks` skips (damaged bytes), and times the samples as `sample_times` does: each
block's own times where every block has them, else the `StreamClock` fitted from every block's
(last index, arrival) pair, which is all it keeps in memory (16 bytes a block), with the times
an LSL outlet published.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from needlelab.clock import StreamClock
from needlelab.record.reader import SessionFile, open_session
from needlelab.streams import StreamKind, StreamSpec

PAGE_BLOCKS = 20_000
"""Block rows fetched per query: bounded memory however long the stream."""
CHUNK_SAMPLES = 16_384


class StreamSource:
    """A stream of a session file, for reading in chunks (`chunks`) with its sample count and
    the earliest and latest sample time."""

    def __init__(self, path: Path, name: str, opened: SessionFile | None = None) -> None:
        self.path = path
        self.name = name
        # A file already open (verify's) is read through that connection: a killed file is
        # then not copied to a private snapshot once more.
        self._opened = opened
        self.damaged = 0  # blocks skipped because their bytes were damaged
        with self._session() as s:
            self.spec: StreamSpec = s.streams[name]
            rows = s.execute("SELECT id FROM streams WHERE name = ?", (name,))
            self._stream_id = int(rows[0][0])
            self._scan(s)
            published = s.published(name)
        self._clock: StreamClock | None = None
        per_sample = self.spec.kind is StreamKind.IRREGULAR or bool(self._has_t.all())
        if not per_sample:
            clock = StreamClock(
                self.spec.nominal_rate_hz,
                min_latency_ns=self.spec.latency_ns,
                floor=self.spec.latency_floor,
                published=published,
            )
            for first, n, host in zip(self._first, self._n, self._host, strict=True):
                if n:
                    clock.add(int(first + n - 1), int(host))
            clock.fit()
            self._clock = clock
        self.count = int(self._n.sum())
        self.min_t_ns, self.max_t_ns = self._extremes()

    def _session(self) -> contextlib.AbstractContextManager[SessionFile]:
        """The file: the one given, left open, or opened here for the while."""
        if self._opened is not None:
            return contextlib.nullcontext(self._opened)
        return open_session(self.path)

    def _scan(self, s: Any) -> None:
        """Every block's id, first index, length, arrival and whether it has its own times,
        keeping only the blocks `SessionFile.blocks` decodes."""
        width = np.dtype(self.spec.dtype).itemsize * self.spec.channel_count
        # Per page, numpy arrays (40 bytes a block; Python ints in lists took 180): a 2 h
        # recording of 10-sample notifications has 1.4 M blocks.
        pages: list[npt.NDArray[np.int64]] = []
        last = -1
        while True:
            page = s.execute(
                "SELECT id, first_index, n, t_host_ns, typeof(n), typeof(data), length(data), "
                "typeof(t_ns), length(t_ns) FROM blocks WHERE stream_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (self._stream_id, last, PAGE_BLOCKS),
            )
            if not page:
                break
            kept = np.zeros((len(page), 5), dtype=np.int64)
            rows = 0
            for bid, first, n, host, n_type, d_type, d_len, t_type, t_len in page:
                last = bid
                try:
                    ints = (int(first), int(host))
                except (TypeError, ValueError):
                    continue
                ok = n_type == "integer" and n >= 0 and d_type == "blob" and d_len == n * width
                ok = ok and (t_type == "null" or (t_type == "blob" and t_len == 8 * n))
                if ok:
                    kept[rows] = (bid, ints[0], n, ints[1], t_type == "blob")
                    rows += 1
            pages.append(kept[:rows].copy())
            self.damaged += len(page) - rows
            del page
        table = np.concatenate(pages) if pages else np.zeros((0, 5), dtype=np.int64)
        self._ids, self._first, self._n, self._host = (table[:, k].copy() for k in range(4))
        self._has_t = table[:, 4].astype(bool)

    def _extremes(self) -> tuple[int | None, int | None]:
        lo: int | None = None
        hi: int | None = None
        for t, _ in self._pages(values=False):
            if len(t):
                lo = int(t.min()) if lo is None else min(lo, int(t.min()))
                hi = int(t.max()) if hi is None else max(hi, int(t.max()))
        return lo, hi

    def chunks(
        self, samples: int = CHUNK_SAMPLES
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[Any]]]:
        """(times ns, values (n, channels)) in recording order, at least `samples` at a time
        (whole blocks), the same as `SessionFile.stream` gives all at once."""
        times: list[npt.NDArray[np.int64]] = []
        values: list[npt.NDArray[Any]] = []
        have = 0
        for t, v in self._pages(values=True, samples=samples):
            times.append(t)
            values.append(v)
            have += len(t)
            if have >= samples:
                yield np.concatenate(times), np.concatenate(values)
                times, values, have = [], [], 0
        if times:
            yield np.concatenate(times), np.concatenate(values)

    def _pages(
        self, values: bool, samples: int = CHUNK_SAMPLES
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[Any]]]:
        """Pages of blocks: their sample times, and their values when asked."""
        spec = self.spec
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        empty = np.zeros((0, spec.channel_count), spec.dtype)
        if not len(self._ids):
            return  # a stream that has no block (a device that never sent)
        need_rows = values or self._clock is None
        per_page = max(1, min(PAGE_BLOCKS, samples // max(1, int(np.median(self._n)) or 1)))
        with self._session() as s:
            for start in range(0, len(self._ids), per_page):
                stop = min(start + per_page, len(self._ids))
                firsts, ns = self._first[start:stop], self._n[start:stop]
                if not need_rows:
                    yield self._clock_times(firsts, ns), empty
                    continue
                columns = "id, t_ns, data" if values else "id, t_ns, NULL"
                rows = s.execute(
                    f"SELECT {columns} FROM blocks WHERE stream_id = ? AND id >= ? AND id <= ? "
                    "ORDER BY id",
                    (self._stream_id, int(self._ids[start]), int(self._ids[stop - 1])),
                )
                keep = set(self._ids[start:stop].tolist())
                rows = [r for r in rows if r[0] in keep]
                if self._clock is not None:
                    t = self._clock_times(firsts, ns)
                else:
                    t = np.concatenate(
                        [np.frombuffer(r[1], dtype="<i8") if r[1] is not None
                         else np.full(int(n), int(h), np.int64)
                         for r, n, h in zip(rows, ns, self._host[start:stop], strict=True)]
                    ).astype(np.int64)  # fmt: skip
                if values:
                    v = np.concatenate(
                        [np.frombuffer(r[2], dtype=dtype).reshape(int(n), spec.channel_count)
                         for r, n in zip(rows, ns, strict=True)]
                    ).astype(spec.dtype)  # fmt: skip
                else:
                    v = empty
                yield t, v

    def _clock_times(
        self, firsts: npt.NDArray[np.int64], ns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        assert self._clock is not None
        total = int(ns.sum())
        if not total:
            return np.zeros(0, np.int64)
        # Each block's indices first .. first + n - 1, built without a Python loop.
        starts = np.repeat(firsts - np.r_[0, np.cumsum(ns)[:-1]], ns)
        indices = starts + np.arange(total)
        return np.asarray(self._clock.times(indices), dtype=np.int64)
