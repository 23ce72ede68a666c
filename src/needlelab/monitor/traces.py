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
