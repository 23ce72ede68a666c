"""Preparing live traces for drawing: peak decimation and RMS envelopes (numpy only).

A 10 s window of 16 channels at 2 kHz is 320,000 points, far more than the few hundred pixel
columns a trace has. Drawing each column's minimum and maximum, in time order, shows exactly
what drawing every point would (every spike and artefact stays visible) for a fraction of the
points; pyqtgraph's own downsampling does the same, but per curve and on the whole array every
frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def peak_decimate(t_s: F64, y: np.ndarray, columns: int) -> tuple[F64, F64]:
    """(x, y) to draw `y` (n samples × channels) at about `columns` columns.

    Each column of k = ceil(n / columns) samples becomes two points, its minimum and maximum, at
    the column's first and last sample times. Fewer samples than 2 × columns are returned as they
    are. The tail that does not fill a column is kept as it is.
    """
    n = len(t_s)
    y = np.asarray(y, dtype=np.float64).reshape(n, -1)
    if n <= 2 * columns or columns < 1:
        return np.asarray(t_s, dtype=np.float64), y
    k = -(-n // columns)
    full = (n // k) * k
    blocks = y[:full].reshape(-1, k, y.shape[1])
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    ys = np.empty((2 * len(lo), y.shape[1]))
    ys[0::2], ys[1::2] = lo, hi
    tb = np.asarray(t_s[:full], dtype=np.float64).reshape(-1, k)
    xs = np.empty(2 * len(tb))
    xs[0::2], xs[1::2] = tb[:, 0], tb[:, -1]
    if full < n:
        xs = np.concatenate([xs, t_s[full:]])
        ys = np.concatenate([ys, y[full:]])
    return xs, ys


def rms_envelope(t_s: F64, y: np.ndarray, window_s: float) -> tuple[F64, F64]:
    """RMS of `y` (n × channels) over consecutive windows of `window_s`: (centre times, rms)."""
    n = len(t_s)
    y = np.asarray(y, dtype=np.float64).reshape(n, -1)
    if n < 2:
        return np.asarray(t_s, dtype=np.float64), np.abs(y)
    period = (t_s[-1] - t_s[0]) / (n - 1) or 1.0
    k = max(1, round(window_s / period))
    full = (n // k) * k
    if full == 0:
        return np.asarray(t_s[:1], dtype=np.float64), np.sqrt((y**2).mean(axis=0, keepdims=True))
    blocks = y[:full].reshape(-1, k, y.shape[1])
    rms = np.sqrt((blocks**2).mean(axis=1))
    centres = np.asarray(t_s[:full], dtype=np.float64).reshape(-1, k).mean(axis=1)
    return centres, rms


def step_xy(t_s: F64, values: F64, end_s: float) -> tuple[F64, F64]:
    """A step plot's vertices: each value held from its time to the next one (the last to
    `end_s`)."""
    if not len(t_s):
        return np.empty(0), np.empty(0)
    x = np.repeat(np.append(t_s, end_s), 2)[1:-1]
    y = np.repeat(values, 2)
    return x, y


class ColumnEnvelope:
    """A stream's running peak decimation: each column's minimum and maximum, kept as samples
    arrive, so a frame folds in only what is new instead of decimating the whole window again.

    Columns are fixed blocks of the stream: sample number p (its place in the stream, counted
    from the first sample the ring ever held) is in column p // k, so new samples change only the
    newest column or add columns, and the older ones stand. Each column is two points, as in
    `peak_decimate`: (its first sample's time, its minimum), (its last sample's time, its
    maximum); the newest column holds the samples it has so far. At most `columns` columns are
    kept (the oldest go first).
    """

    def __init__(self, k: int, columns: int, channels: int) -> None:
        self.k = max(1, k)
        self.columns = max(1, columns)
        # Points for twice the kept columns: when full, the kept ones move to the front (one
        # copy every `columns` columns, not one per column).
        self.x = np.empty(4 * self.columns)
        self.y = np.empty((4 * self.columns, channels))
        self.first_column = 0  # the stream column in slot 0
        self.start = 0  # first kept slot
        self.end = 0  # slots used (the last may be a partial column)
        self.next_sample: int | None = None  # the stream sample number after the last folded

    def fold(self, first: int, t_s: F64, values: np.ndarray) -> None:
        """Take samples `first`, `first` + 1, … (their times in s and values, n × channels). A
        gap after the last ones folded (or none folded yet) starts afresh at `first`."""
        n = len(t_s)
        if n == 0:
            return
        y = np.asarray(values).reshape(n, -1)
        k = self.k
        if self.next_sample != first:
            self.first_column, self.start, self.end = first // k, 0, 0
        i = 0
        offset = first % k
        if offset and self.end and first // k == self.first_column + self.end - 1:
            # The newest column is partial: these samples complete (some of) it.
            m = min(n, k - offset)
            s = 2 * (self.end - 1)
            np.minimum(self.y[s], y[:m].min(axis=0), out=self.y[s])
            np.maximum(self.y[s + 1], y[:m].max(axis=0), out=self.y[s + 1])
            self.x[s + 1] = t_s[m - 1]
            i = m
        elif offset:  # the first column kept starts inside it (older samples are gone)
            m = min(n, k - offset)
            self._append(y[:m].min(axis=0)[None], y[:m].max(axis=0)[None], t_s[:1], t_s[m - 1 : m])
            i = m
        full = (n - i) // k
        if full:
            blocks = y[i : i + full * k].reshape(full, k, -1)
            tb = t_s[i : i + full * k].reshape(full, k)
            self._append(blocks.min(axis=1), blocks.max(axis=1), tb[:, 0], tb[:, -1])
            i += full * k
        if i < n:  # a new partial column
            self._append(y[i:].min(axis=0)[None], y[i:].max(axis=0)[None], t_s[i : i + 1], t_s[-1:])
        self.next_sample = first + n

    def _append(self, lo: np.ndarray, hi: np.ndarray, t_first: F64, t_last: F64) -> None:
        m = len(lo)
        if m > self.columns:  # only the newest can be kept
            self.first_column += self.end + m - self.columns
            self.start = self.end = 0
            lo, hi, t_first, t_last = (a[m - self.columns :] for a in (lo, hi, t_first, t_last))
            m = self.columns
        if 2 * (self.end + m) > len(self.x):
            keep = self.end - self.start  # at most `columns`: room for m more
            src = slice(2 * (self.end - keep), 2 * self.end)
            self.x[: 2 * keep] = self.x[src]
            self.y[: 2 * keep] = self.y[src]
            self.first_column += self.end - keep
            self.start, self.end = 0, keep
        s = 2 * self.end
        self.x[s : s + 2 * m : 2], self.x[s + 1 : s + 2 * m : 2] = t_first, t_last
        self.y[s : s + 2 * m : 2], self.y[s + 1 : s + 2 * m : 2] = lo, hi
        self.end += m
        self.start = max(self.start, self.end - self.columns)

    def points(self, since: int = 0) -> tuple[F64, F64]:
        """(x, y) of the kept columns from the one holding stream sample `since` on: views,
        valid until the next fold."""
        first = min(max(self.start, since // self.k - self.first_column), self.end)
        return self.x[2 * first : 2 * self.end], self.y[2 * first : 2 * self.end]
