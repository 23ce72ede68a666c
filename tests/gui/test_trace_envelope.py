"""The EMG traces as drawn show every pixel column's true envelope of the data.

The truth is the samples the test pushed, mapped to pixels through the view's own transform
(session time relative to now across, each lane's gain and band down): for every pixel column,
the rows between its samples' lowest and highest value. The traces are judged on the pixels of
the rendered widget, in each lane's own colour: a column's painted rows must reach its samples'
extremes, in it or the column beside it (a one-sample artefact is never hidden; a decimated
column's two points are its first and last sample's times, so its line may cross into the next
pixel), and must not reach beyond what the samples
of the columns beside it span (the trace is the data, not something else). The samples arrive in
blocks of odd sizes with a redraw after each few, as from a device, so the traces are built the
way a live session builds them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from pyqtgraph.Qt import QtCore, QtGui

from needlelab.hub import Hub
from needlelab.monitor.plots import COLOURS, TracePanel
from needlelab.streams import Chunk, StreamKind, StreamSpec

RATE = 2000.0
LANE_UV = 2000.0  # a µV lane's span at gain 1 (±1 mV)
HALF = 0.48  # a trace keeps within ± this of its lane's centre


def rgb(image: QtGui.QImage) -> np.ndarray:
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return pg.functions.ndarray_from_qimage(image)[:, :, :3].astype(np.int16)


def signal(n: int) -> np.ndarray:
    """Four channels: noise, noise with a one-sample +3 mV artefact (beyond its lane: drawn at
    the lane's edge), a slow sine with a one-sample -700 µV spike, bursts."""
    rng = np.random.default_rng(7)
    t = np.arange(n) / RATE
    values = rng.standard_normal((n, 4)) * 60.0
    values[n - 9_001, 1] = 3000.0
    values[:, 2] = 300.0 * np.sin(2 * np.pi * 0.7 * t)
    values[n - 4_321, 2] = -700.0
    values[:, 3] *= np.where((t % 2.0) > 1.3, 6.0, 1.0)
    return values.astype(np.float32)


@pytest.fixture
def drawn(
    qtbot: Any, panel: tuple[TracePanel, Hub]
) -> tuple[TracePanel, np.ndarray, np.ndarray, float]:
    """A panel fed 12 s of the signal in blocks, redrawn as they came: (panel, t_s, values, now)."""
    traces, hub = panel
    n = int(12 * RATE)
    values = signal(n)
    t_ns = 5_000_000_000 + np.arange(n, dtype=np.int64) * 500_000
    hub.add_stream(
        StreamSpec("emg.emg", "EMG", ("a", "b", "c", "d"), ("uV",) * 4, StreamKind.REGULAR, RATE)
    )
    sizes = np.random.default_rng(3).integers(1, 97, size=n)
    start, pushes = 0, 0
    for size in sizes:
        end = min(n, start + int(size))
        hub.push(
            Chunk("emg.emg", values[start:end], int(t_ns[end - 1]), start, t_ns=t_ns[start:end])
        )
        start, pushes = end, pushes + 1
        if pushes % 5 == 0 or end == n:
            traces.refresh(t_ns[end - 1] / 1e9)
        if end == n:
            break
    now_s = t_ns[-1] / 1e9 + 0.004
    traces.refresh(now_s)
    qtbot.wait(20)
    return traces, t_ns / 1e9, values, now_s


def check_envelope(
    traces: TracePanel, t_s: np.ndarray, values: np.ndarray, now_s: float, gains: list[float]
) -> None:
    vb = traces.emg_plot.vb
    image = rgb(traces.grab().toImage())
    offset = traces.viewport().pos()

    def device(x: float, y: float) -> tuple[float, float]:  # the widget's pixels, unrounded
        p = traces.viewportTransform().map(vb.mapViewToScene(QtCore.QPointF(x, y)))
        return p.x() + offset.x(), p.y() + offset.y()

    (x0, y0), (x1, y1) = device(0.0, 0.0), device(1.0, 1.0)
    ax, ay = x1 - x0, y1 - y0  # pixels per second, per lane height (negative: y is down)
    left, right = device(-traces.window_s, 0.0)[0], x0
    # The picture is of now to the nearest pixel column (it slides by whole pixels).
    shown = round(now_s * ax) / ax
    columns = np.floor(x0 + ax * (t_s - shown)).astype(int)
    # Clear of the scale bars and their labels (left), the newest column (right).
    judged = range(int(left + 0.2 * (right - left)), int(right) - 3)
    for lane in range(4):
        scale = gains[lane] / LANE_UV
        rows = y0 + ay * (np.clip(values[:, lane] * scale, -HALF, HALF) - lane)
        colour = np.array(QtGui.QColor(COLOURS[lane]).getRgb()[:3])
        band_top, band_bottom = int(y0 + ay * (-lane + 0.5)), int(y0 + ay * (-lane - 0.5))
        band = image[band_top : band_bottom + 1]
        # The lane's colour, within what the grid's faint lines over it make of it.
        painted = np.abs(band - colour).max(axis=2) <= 40
        truth_top = np.full(image.shape[1] + 2, np.inf)
        truth_bottom = np.full(image.shape[1] + 2, -np.inf)
        np.minimum.at(truth_top, columns, np.floor(rows))
        np.maximum.at(truth_bottom, columns, np.floor(rows))
        rows_lit = np.where(painted, np.arange(band.shape[0])[:, None] + band_top, np.nan)
        top = np.nanmin(np.where(painted.any(axis=0), rows_lit, np.inf), axis=0)
        bottom = np.nanmax(np.where(painted.any(axis=0), rows_lit, -np.inf), axis=0)
        # Nothing drawn after the newest sample (the time since is not data).
        assert not painted[:, columns[-1] + 2 : int(right) - 1].any(), lane
        for c in judged:
            if c > columns[-1] - 2:
                break
            # Every sample's row in the column is reached (to a pixel's rounding), in it or
            # the column beside it: a column's extremes are drawn at its first and last
            # sample's time, so the line between them may cross into the next pixel.
            assert top[c - 1 : c + 2].min() <= truth_top[c] + 1, (lane, c, truth_top[c])
            assert bottom[c - 1 : c + 2].max() >= truth_bottom[c] - 1, (lane, c, truth_bottom[c])
            # And nothing beyond what the samples of the columns beside it span.
            near = slice(c - 2, c + 3)
            if np.isfinite(top[c]):
                assert top[c] >= truth_top[near].min() - 1, (lane, c, top[c])
                assert bottom[c] <= truth_bottom[near].max() + 1, (lane, c, bottom[c])


def test_every_pixel_column_shows_its_samples_min_and_max(
    drawn: tuple[TracePanel, np.ndarray, np.ndarray, float],
) -> None:
    traces, t_s, values, now_s = drawn
    check_envelope(traces, t_s, values, now_s, [1.0] * 4)
    # The artefact and the spike, named: each reaches its row, in its column or the next.
    vb = traces.emg_plot.vb
    image = rgb(traces.grab().toImage())
    offset = traces.viewport().pos()
    for lane, k, level in ((1, len(t_s) - 9_001, HALF), (2, len(t_s) - 4_321, -700 / LANE_UV)):
        p = traces.viewportTransform().map(
            vb.mapViewToScene(QtCore.QPointF(t_s[k] - now_s, level - lane))
        )
        x, row = int(p.x()) + offset.x(), p.y() + offset.y()
        colour = np.array(QtGui.QColor(COLOURS[lane]).getRgb()[:3])
        lit = np.flatnonzero((np.abs(image[:, x - 1 : x + 2] - colour).max(axis=2) <= 40).any(1))
        assert len(lit) and np.abs(lit - row).min() <= 1.5, (lane, row, lit)


def test_the_envelope_holds_at_another_gain_and_after_more_data(
    qtbot: Any, drawn: tuple[TracePanel, np.ndarray, np.ndarray, float]
) -> None:
    traces, t_s, values, now_s = drawn
    traces.set_lane(0, gain=4.0)
    traces.set_lane(3, gain=0.5)
    traces.refresh(now_s)
    qtbot.wait(20)
    check_envelope(traces, t_s, values, now_s, [4.0, 1.0, 1.0, 0.5])
    # Later, with nothing new: the traces slide left with time and still match.
    traces.refresh(now_s + 0.5)
    qtbot.wait(20)
    check_envelope(traces, t_s, values, now_s + 0.5, [4.0, 1.0, 1.0, 0.5])


class Stroke(pg.GraphicsObject):  # type: ignore[misc]
    """The reference: a polyline through points, stroked whole by Qt at every paint."""

    def __init__(self, x: np.ndarray, y: np.ndarray, pen: QtGui.QPen) -> None:
        super().__init__()
        self.polygon = QtGui.QPolygonF([QtCore.QPointF(a, b) for a, b in zip(x, y, strict=True)])
        self.pen = pen

    def boundingRect(self) -> QtCore.QRectF:
        return self.polygon.boundingRect().adjusted(-1, -1, 1, 1)

    def paint(self, painter: QtGui.QPainter, *_args: object) -> None:
        painter.setPen(self.pen)
        painter.drawPolyline(self.polygon)


def test_the_scrolled_lanes_are_the_pixels_a_whole_stroke_makes(
    qtbot: Any, panel: tuple[TracePanel, Hub]
) -> None:
    """Each lane is kept in an image that scrolls and is stroked only where new samples came:
    over 40 s of a live feed (wrapping that image several times), a gap in the sample count, a
    gain change, another window and a resize, the picture is pixel for pixel what stroking each
    lane's whole polyline at that frame makes."""
    traces, hub = panel
    n = int(40 * RATE)
    values = signal(n)
    t_ns = 5_000_000_000 + np.arange(n, dtype=np.int64) * 500_000
    hub.add_stream(
        StreamSpec("emg.emg", "EMG", ("a", "b", "c", "d"), ("uV",) * 4, StreamKind.REGULAR, RATE)
    )
    sizes = np.random.default_rng(11).integers(1, 97, size=n)
    start, compared = 0, 0
    # At these seconds of data (the last, at the end), after what is done there.
    marks = [(6, ""), (13, "gap"), (19, "gain"), (26, "window"), (31, "resize"), (35, ""), (40, "")]
    checks = {int(s * RATE): what for s, what in marks}
    number = 0  # the stream's sample number (jumps at the gap)
    for size in sizes:
        end = min(n, start + int(size))
        hub.push(
            Chunk("emg.emg", values[start:end], int(t_ns[end - 1]), number, t_ns=t_ns[start:end])
        )
        number += end - start
        now_s = t_ns[end - 1] / 1e9 + 0.0037
        traces.refresh(now_s)
        for mark, what in checks.items():
            if start < mark <= end:
                if what == "gap":
                    number += 5_000
                elif what == "gain":
                    traces.set_lane(1, gain=3.0)
                elif what == "window":
                    traces.set_window(6.0)
                elif what == "resize":
                    traces.resize(1100, 650)
                    qtbot.wait(50)
                traces.refresh(now_s)
                qtbot.wait(10)
                compare_with_whole_strokes(traces)
                compared += 1
        start = end
        if end == n:
            break
    assert compared == len(checks)


def compare_with_whole_strokes(traces: TracePanel) -> None:
    lanes = traces._curves
    shown = rgb(traces.grab().toImage())
    references = []
    for lane in lanes:
        x, y = lane.getData()
        assert len(x) > 100
        reference = Stroke(x, y, lane._pen)
        reference.setParentItem(lane.parentItem())
        references.append(reference)
        lane.setVisible(False)
    try:
        whole = rgb(traces.grab().toImage())
    finally:
        for lane, reference in zip(lanes, references, strict=True):
            lane.setVisible(True)
            reference.setParentItem(None)
            traces.emg_plot.scene().removeItem(reference)
    differ = np.abs(shown - whole).max(axis=2) > 0
    assert not differ.any(), (differ.sum(), np.argwhere(differ)[:5])
