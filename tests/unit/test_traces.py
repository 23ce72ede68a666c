"""Trace preparation for the monitor: peak decimation keeps every extreme, steps hold values."""

from __future__ import annotations

import numpy as np

from needlelab.monitor.traces import peak_decimate, rms_envelope, step_xy


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
