"""Trace preparation for the monitor: peak decimation keeps every extreme, steps hold values."""

from __future__ import annotations

import numpy as np

from needlelab.monitor.traces import ColumnEnvelope, peak_decimate, rms_envelope, step_xy


def test_peak_decimation_keeps_every_columns_extremes_and_spikes() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(20_000) / 2000.0
    y = rng.standard_normal((20_000, 3))
    y[12_345, 1] = 50.0  # a one-sample artefact must survive
    y[777, 2] = -40.0
    x, d = peak_decimate(t, y, 800)
    assert len(x) == len(d) <= 2 * 800 + 25
    assert d[:, 1].max() == 50.0 and d[:, 2].min() == -40.0
    assert np.all(np.diff(x) >= 0)  # still a function of time
    k = -(-20_000 // 800)
    for col in (0, 100, 799):
        block = y[col * k : (col + 1) * k]
        assert np.array_equal(d[2 * col], block.min(axis=0))
        assert np.array_equal(d[2 * col + 1], block.max(axis=0))
    short_x, short_y = peak_decimate(t[:300], y[:300], 800)
    assert np.array_equal(short_y, y[:300]) and np.array_equal(short_x, t[:300])


def test_rms_envelope_and_steps() -> None:
    t = np.arange(1000) / 1000.0
    y = np.where(np.arange(1000) < 500, 1.0, 3.0)[:, None] * np.tile([1.0, -1.0], 500)[:, None]
    centres, rms = rms_envelope(t, y, 0.05)
    assert len(centres) == 20 and np.allclose(rms[:10], 1.0) and np.allclose(rms[10:], 3.0)
    x, v = step_xy(np.array([1.0, 2.0]), np.array([5.0, 7.0]), 3.0)
    assert x.tolist() == [1.0, 2.0, 2.0, 3.0] and v.tolist() == [5.0, 5.0, 7.0, 7.0]


def test_column_envelope_fed_in_blocks_is_each_columns_min_and_max() -> None:
    """Folded in blocks of any size, the columns are each k-sample block's extremes, the
    blocks counted from the stream's first sample (so they stand as samples arrive)."""
    rng = np.random.default_rng(5)
    n, k = 7_000, 7
    y = rng.standard_normal((n, 2))
    y[4_444, 0] = 99.0  # a one-sample artefact
    t = np.arange(n) / 2000.0
    first = 1_234  # the ring no longer holds samples before this one: a partial first column
    envelopes = {kept: ColumnEnvelope(k, kept, 2) for kept in (900, 300)}
    p = first
    for size in rng.integers(1, 3 * k, size=n):
        q = min(n, p + int(size))
        for envelope in envelopes.values():
            envelope.fold(p, t[p:q], y[p:q])
        p = q
        if q == n:
            break

    def truth(since: int) -> tuple[list[float], list[np.ndarray]]:
        """Every column's (first, last) time and (min, max), from the one holding `since`."""
        xs, ds = [], []
        for c in range(since // k, -(-n // k)):
            block = slice(max(c * k, first), min((c + 1) * k, n))
            xs += [t[block][0], t[block][-1]]
            ds += [y[block].min(axis=0), y[block].max(axis=0)]
        return xs, ds

    for since in (0, first, 2_003, n - 1):
        x, d = envelopes[900].points(since)
        xs, ds = truth(max(since, first))
        assert x.tolist() == xs and np.array_equal(d, np.array(ds)), since
    assert envelopes[900].points(0)[1][:, 0].max() == 99.0
    # Only `kept` columns are kept: the newest 300.
    x, d = envelopes[300].points(0)
    xs, ds = truth(n - 1 - 299 * k)
    assert len(x) == 2 * 300 and x.tolist() == xs and np.array_equal(d, np.array(ds))
    # A gap (samples the ring dropped before they were read) starts afresh after it: sample
    # n + 52 is 3 into its column, so 4 samples end that column and 6 begin the next.
    envelope = envelopes[900]
    envelope.fold(n + 52, t[:10] + 10.0, y[:10])
    x, d = envelope.points(0)
    assert x.tolist() == [10.0, t[3] + 10.0, t[4] + 10.0, t[9] + 10.0]
    assert np.array_equal(d, np.array([y[:4].min(0), y[:4].max(0), y[4:10].min(0), y[4:10].max(0)]))
