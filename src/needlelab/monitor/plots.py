"""The monitor's plots: EMG traces, the stimulator strip, the caliper lane and event lines.

All on the session clock, in seconds, over a rolling window: the x axis reads seconds before now
(-10 … 0), so it never changes and its drawing is cached. Data items keep their session times
and are slid left each frame by whole pixels (`setPos(-now)`, now to the nearest pixel column):
scrolling costs no new paths, a trace is only rebuilt when its stream has new samples, and an
EMG lane is kept rasterised in an image of its own that is stroked only where samples came.
Only the Qt thread touches these: `TracePanel.refresh()` is called by the window's timer with
what the hub holds now.

Every channel of every stimulator has its own curve in the strip (intensity and frequency), in
its own colour, and its line in the read-out above the plots. Event labels have a lane of their
own above the EMG: up to `EVENT_ROWS` rows, a label is drawn only where it has room (its line is
always drawn), so dense events never pile up over the traces. Each EMG lane has a scale bar that
says how many µV its height is at the lane's gain.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.events import (
    CorrectionEvent,
    Event,
    MarkerEvent,
    NeedleSiteEvent,
    PhaseEvent,
    PromptEvent,
    RecordingEvent,
    ResponseEvent,
    StimSettings,
    StimSettingsEvent,
)
from needlelab.hub import Hub, RingBuffer
from needlelab.monitor.traces import ColumnEnvelope, rms_envelope, step_xy
from needlelab.streams import StreamKind

# The default span of one EMG lane per unit, at gain ×1: ±1 mV, so that surface EMG bursts of a
# few hundred µV take part of a lane (at ±0.5 mV they filled it as solid blocks).
LANE_UV = {"uV": 2000.0, "mV": 2.0, "au": 400.0}
UNIT_TEXT = {"uV": "µV"}
STIM_COLOURS = ["#ffb74d", "#e57373", "#81c784", "#64b5f6", "#ba68c8", "#fff176", "#4dd0e1"]
EVENT_ROWS = 3  # rows of event labels in the event lane
EVENT_LABEL_PX = 150  # the widest an event label is drawn (longer ones are elided)
EVENT_FONT_PT = 8
CALIPER_LABEL_PX = 48  # room a caliper value's label needs right of its press
COLOURS = ["#4fc3f7", "#aed581", "#ffb74d", "#f06292", "#ba68c8", "#4db6ac", "#fff176", "#90a4ae"]
EVENT_COLOURS = {
    "needle.site": "#ffd54f",
    "prompt": "#81d4fa",
    "response": "#a5d6a7",
    "correction": "#ef9a9a",
    "marker": "#e0e0e0",
    "phase": "#ce93d8",
    "recording": "#ff8a65",
}
RMS_WINDOW_S = 0.05
LEFT_AXIS_PX = 150
CACHE = QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache
LANE_HALF = 0.48  # a trace stays within ± this of its lane's centre (lanes are 1 apart)


def event_label(event: Event) -> str | None:
    """The short label of an event on the event lane, or None if it has no line."""
    if isinstance(event, NeedleSiteEvent):
        return f"site {event.level} {event.side}{' e-stim' if event.estim_on else ''}"
    if isinstance(event, PromptEvent):
        return f"prompt #{event.id}"
    if isinstance(event, ResponseEvent):
        said = f"{event.level or '?'} {event.side or '?'}"
        return f"answer {said}" + (
            f" ({event.level_error:+d})" if event.level_error is not None else ""
        )
    if isinstance(event, CorrectionEvent):
        return f"{event.reason} #{event.replaces}"
    if isinstance(event, MarkerEvent):
        return event.text[:40]
    if isinstance(event, PhaseEvent):
        return f"{event.name} {event.boundary}"
    if isinstance(event, RecordingEvent):
        return f"recording {event.action}"
    return None


def nice_scale(span: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above `span` (a scale bar's length)."""
    if span <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(span))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= span * (1 + 1e-9))


@dataclass
class EmgLane:
    """One EMG channel's place in the stacked plot."""

    stream: str
    channel: int
    name: str
    range_uv: float  # the value span of one lane at gain 1
    unit: str = "uV"
    gain: float = 1.0
    visible: bool = True

    def scale(self) -> tuple[float, str]:
        """The lane's scale bar: its length in lane heights and its label ("500 µV")."""
        value = nice_scale(0.5 * self.range_uv / self.gain)
        return value * self.gain / self.range_uv, f"{value:g} {UNIT_TEXT.get(self.unit, self.unit)}"


class LaneCurve(pg.GraphicsObject):  # type: ignore[misc]
    """One EMG lane's trace: a polyline through its points, kept rasterised in a scrolling image.

    A lane's picture changes only at its newest end: each frame the window slides, and a pixel
    column's worth of new samples changes its last column or two. So the polyline is stroked
    into a ring of pixel columns (a QImage a window wide, holding device pixel column u of the
    lane's own coordinates at u modulo its width) only where its points changed, and a frame
    copies the ring onto the view in at most two pieces, instead of stroking every lane's whole
    window again (that was most of a frame's drawing). The pixels are those a direct stroke
    would make as long as the lane moves by whole device pixels (`TracePanel` slides by whole
    pixels); a new scale or sub-pixel phase (a resize, another window) strokes it afresh. Bounds
    are the first and last x and the lane's band (a lane's points are in time order and within
    it).
    """

    def __init__(self, pen: QtGui.QPen) -> None:
        super().__init__()
        self._pen = pen
        self._points = np.empty((0, 2))
        self._rect = QtCore.QRectF()
        self._band = (0.0, 0.0)
        self._span_s = 0.0
        # The ring and what it holds: the points stroked into it, and how they map to its
        # pixels (px per x and per y, the sub-pixel phase across and down, the pixel ratio).
        self._image: QtGui.QImage | None = None
        self._drawn = np.empty((0, 2))
        self._raster = (0.0, 0.0, 0.0, 0.0, 1.0)
        self._top = 0  # the device row of the ring's first row, less the lane's whole offset

    def set_points(
        self,
        x: np.ndarray,
        y: np.ndarray,
        y_lo: float,
        y_hi: float,
        pad_x: float = 0.0,
        span_s: float = 0.0,
    ) -> None:
        """Draw through (x, y) from now on; x ascending, y within [y_lo, y_hi]. The bounds are
        `pad_x` wider each side (room for the pen's width past the first and last point);
        `span_s` is the time the view shows (the ring holds that much, more if x spans more)."""
        points = np.empty((len(x), 2))
        points[:, 0], points[:, 1] = x, y
        rect = QtCore.QRectF()
        if len(x):
            width = max(float(x[-1] - x[0]), 0.0) + 2 * pad_x
            rect = QtCore.QRectF(float(x[0]) - pad_x, y_lo, max(width, 1e-9), y_hi - y_lo)
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        if (y_lo, y_hi) != self._band or span_s != self._span_s:
            self._image = None  # stroked afresh for the new band or window
        self._points, self._band, self._span_s = points, (y_lo, y_hi), span_s
        self.update()

    def clear(self) -> None:
        """Draw nothing."""
        self.set_points(np.empty(0), np.empty(0), 0.0, 0.0)
        self._image, self._drawn = None, np.empty((0, 2))

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        """The points drawn: (x, y) copies."""
        return self._points[:, 0].copy(), self._points[:, 1].copy()

    def boundingRect(self) -> QtCore.QRectF:
        return self._rect

    def paint(self, painter: QtGui.QPainter, *_args: object) -> None:
        if len(self._points) < 2:
            return
        device = painter.deviceTransform()
        if not device.isAffine() or device.isRotating() or device.m11() <= 0 or device.m22() >= 0:
            # Rotated, mirrored or y down (the ring is laid out for pyqtgraph's y up): stroke all.
            self._stroke(painter, self._points)
            return
        dx, dy = round(device.dx()), round(device.dy())
        raster = (
            device.m11(), device.m22(), device.dx() - dx, device.dy() - dy,
            painter.device().devicePixelRatioF(),
        )  # fmt: skip
        if self._image is None or not self._same_raster(raster) or not self._update_ring():
            self._fill_ring(raster)
        assert self._image is not None
        image, ratio = self._image, raster[4]
        first, last = self._columns(self._points)
        first = max(first, last - image.width())
        painter.save()
        painter.resetTransform()
        u = first
        while u < last:  # device column u + dx shows ring column u % width
            c = u % image.width()
            n = min(last - u, image.width() - c)
            target = QtCore.QPointF((u + dx) / ratio, (self._top + dy) / ratio)
            painter.drawImage(target, image, QtCore.QRectF(c, 0, n, image.height()))
            u += n
        painter.restore()

    def _same_raster(self, raster: tuple[float, ...]) -> bool:
        sx, sy, px, py, ratio = self._raster
        # (The phases are the same up to rounding: a whole-pixel slide leaves them as they were.)
        return (sx, sy, ratio) == (raster[0], raster[1], raster[4]) and (
            abs(px - raster[2]) < 1e-6 and abs(py - raster[3]) < 1e-6
        )

    def _columns(self, points: np.ndarray) -> tuple[int, int]:
        """The ring columns the points' stroke may touch, a pixel of pen to spare: [first, last)."""
        sx, _sy, px, _py, _ratio = self._raster
        return math.floor(sx * points[0, 0] + px) - 2, math.floor(sx * points[-1, 0] + px) + 3

    def _fill_ring(self, raster: tuple[float, float, float, float, float]) -> None:
        """Stroke all points into a new ring, rasterised as `raster` says."""
        sx, sy, _px, py, _ratio = raster
        self._raster = raster
        first, last = self._columns(self._points)
        width = max(math.ceil(sx * self._span_s), last - first) + 32
        y_lo, y_hi = self._band
        # sy < 0 (y up): the band's top is y_hi.
        self._top = math.floor(sy * y_hi + py) - 1
        height = math.ceil(sy * y_lo + py) - self._top + 2
        image = QtGui.QImage(width, max(height, 1), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(0)
        self._image = image
        self._repaint(max(first, last - width), last, self._points)
        self._drawn = self._points

    def _update_ring(self) -> bool:
        """Stroke into the ring only what changed since it was drawn: False if that is not a
        tail (other points, not only new ones and the last few changed), so it is filled anew."""
        old, new = self._drawn, self._points
        if old is new:
            return True
        if len(old) < 3:
            return False
        a = int(np.searchsorted(old[:, 0], new[0, 0]))
        same = len(old) - a - 2  # all but the last column's two points are final
        if same < 1 or len(new) <= same or not np.array_equal(old[a : a + same], new[:same]):
            return False
        assert self._image is not None
        sx, px = self._raster[0], self._raster[2]
        # The columns the changed segments (from the last point kept) touch, and a pixel of pen.
        start = math.floor(sx * new[same - 1, 0] + px) - 1
        end = max(self._columns(old)[1], self._columns(new)[1])
        if end - self._columns(new)[0] > self._image.width():
            return False  # the points span more than the ring: a wider one
        # From a point far enough back that every segment touching column `start` is redrawn.
        j = max(int(np.searchsorted(new[:, 0], (start - 3 - px) / sx)) - 1, 0)
        self._repaint(start, end, new[j:])
        self._drawn = new
        return True

    def _repaint(self, start: int, end: int, points: np.ndarray) -> None:
        """Clear the ring's columns [start, end) (modulo its width) and stroke `points` there."""
        assert self._image is not None
        width, height = self._image.width(), self._image.height()
        sx, sy, px, py, ratio = self._raster
        # Stroked in the ring's own pixels (a painter on an image scales by its pixel ratio),
        # copied to the view at its pixel ratio (one ring pixel a device pixel).
        self._image.setDevicePixelRatio(1.0)
        painter = QtGui.QPainter(self._image)
        try:
            u = start
            while u < end:
                c = u % width
                n = min(end - u, width - c)
                clip = QtCore.QRect(c, 0, n, height)
                painter.resetTransform()  # (the clip and the fill are in the ring's pixels)
                painter.setClipRect(clip)
                painter.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_Source)
                painter.fillRect(clip, QtCore.Qt.GlobalColor.transparent)
                painter.setCompositionMode(
                    QtGui.QPainter.CompositionMode.CompositionMode_SourceOver
                )
                # Ring pixel of (x, y): sx * x + px - (u - c) across, sy * y + py - top down.
                painter.setTransform(QtGui.QTransform(sx, 0, 0, sy, px + c - u, py - self._top))
                self._stroke(painter, points)
                u += n
        finally:
            painter.end()
            self._image.setDevicePixelRatio(ratio)

    def _stroke(self, painter: QtGui.QPainter, points: np.ndarray) -> None:
        if len(points) < 2:  # (nothing to draw; an empty polygon has no memory to write to)
            return
        polygon = fn.create_qpolygonf(len(points))
        fn.ndarray_from_qpolygonf(polygon)[:] = points
        painter.setRenderHint(
            QtGui.QPainter.RenderHint.Antialiasing, bool(pg.getConfigOption("antialias"))
        )
        painter.setPen(self._pen)
        painter.drawPolyline(polygon)


@dataclass
class EventLabel:
    """One event's label in the event lane."""

    t_s: float
    text: str
    item: pg.TextItem
    lines: list[pg.InfiniteLine] = field(default_factory=list)
    row: int | None = None  # None: no room, not drawn (its line is)


class TracePanel(pg.GraphicsLayoutWidget):  # type: ignore[misc]
    """EMG (stacked lanes), stimulator intensity and frequency, caliper readings, event lines."""

    def __init__(self, hub: Hub, window_s: float = 10.0, rms: bool = False) -> None:
        super().__init__()
        self.hub = hub
        self.window_s = window_s
        self.rms = rms
        self._now_s = 0.0
        self.setBackground("#111")
        self.event_plot = self.addPlot(row=0, col=0)
        self.emg_plot = self.addPlot(row=1, col=0)
        self.stim_plot = self.addPlot(row=2, col=0)
        self.freq_plot = self.addPlot(row=3, col=0)
        self.caliper_plot = self.addPlot(row=4, col=0)
        self.plots = (
            self.event_plot, self.emg_plot, self.stim_plot, self.freq_plot, self.caliper_plot
        )  # fmt: skip
        self.ci.layout.setRowStretchFactor(1, 6)
        self.ci.layout.setVerticalSpacing(2)
        self._event_font = QtGui.QFont()
        self._event_font.setPointSize(EVENT_FONT_PT)
        self._event_metrics = QtGui.QFontMetrics(self._event_font)
        row_px = self._event_metrics.height() + 2
        for plot, label in (
            (self.event_plot, "events"),
            (self.emg_plot, "EMG"),
            (self.stim_plot, "mA"),
            (self.freq_plot, "Hz"),
            (self.caliper_plot, "mm"),
        ):
            plot.setLabel("left", label)
            plot.showGrid(x=True, y=False, alpha=0.2)
            # One left-axis width for all, so the linked x axes span the same seconds.
            plot.getAxis("left").setWidth(LEFT_AXIS_PX)
            for side in ("left", "bottom"):
                # Axes only change with the window length or a y range: cache them as pixmaps.
                plot.getAxis(side).setCacheMode(CACHE)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.setMenuEnabled(False)
            plot.enableAutoRange(x=False, y=False)
            if plot is not self.emg_plot:
                plot.setXLink(self.emg_plot)
                plot.setMaximumHeight(80)
            if plot is not self.caliper_plot:
                plot.getAxis("bottom").setStyle(showValues=False)
        self.event_plot.getAxis("left").setStyle(showValues=False)
        self.event_plot.getAxis("bottom").hide()
        # The plot's own margins (its view box is about 12 px shorter than it) and the rows.
        self.event_plot.setFixedHeight(EVENT_ROWS * row_px + 16)
        self.event_plot.setYRange(0, EVENT_ROWS, padding=0)
        self.caliper_plot.setLabel("bottom", "seconds before now")
        self.lanes: list[EmgLane] = []
        self._curves: list[LaneCurve] = []
        self._rms_curves: list[pg.PlotCurveItem] = []
        self._scale_bars: list[tuple[pg.PlotCurveItem, pg.TextItem]] = []
        # Per EMG stream: its running peak decimation (the columns drawn), and the ring's total
        # when the curves (and the RMS curves) were last redrawn from it.
        self._envelopes: dict[str, ColumnEnvelope] = {}
        self._totals: dict[str, int] = {}
        self._rms_totals: dict[str, int] = {}
        # Each stimulator channel's history and curves, in the order first heard from.
        self.stim_channels: dict[tuple[str, int], list[tuple[float, StimSettings]]] = {}
        self._stim_curves: dict[tuple[str, int], tuple[pg.PlotDataItem, ...]] = {}
        self.caliper_points = pg.ScatterPlotItem(size=7, brush="#aed581", pen=None)
        self.caliper_presses = pg.ScatterPlotItem(size=11, brush="#ffd54f", pen=None, symbol="d")
        self.caliper_plot.addItem(self.caliper_points)
        self.caliper_plot.addItem(self.caliper_presses)
        self._caliper_labels: list[pg.TextItem] = []
        self._event_lines: deque[EventLabel] = deque()
        self._sliding: list[pg.GraphicsObject] = [self.caliper_points, self.caliper_presses]
        # The EMG curves slide as one: a group moved once a frame, not 2 x channels items; the
        # caliper's value labels and the event labels likewise.
        self._emg_group = pg.ItemGroup()
        self.emg_plot.addItem(self._emg_group)
        self._caliper_group = pg.ItemGroup()
        self.caliper_plot.addItem(self._caliper_group)
        self._event_group = pg.ItemGroup()
        self.event_plot.addItem(self._event_group)
        self._sliding += [self._emg_group, self._caliper_group, self._event_group]
        self._stim_drawn: tuple[int, float] | None = None
        self._hold_until: float | None = None  # where the stimulator's last setting ends
        self._caliper_drawn: tuple[int, ...] | None = None
        self._y_ranges: dict[int, tuple[float, float]] = {}
        self._px_per_s = 0.0  # the event labels' layout was made for this scale
        self.set_window(window_s)

    @property
    def stim_history(self) -> list[tuple[float, StimSettings]]:
        """Every stimulator setting heard (within the window), all channels, oldest first."""
        merged = [entry for history in self.stim_channels.values() for entry in history]
        return sorted(merged, key=lambda entry: entry[0])

    def stim_curves(self) -> list[pg.PlotDataItem]:
        """Every stimulator channel's curves (output, setting, frequency), as drawn."""
        return [curve for curves in self._stim_curves.values() for curve in curves]

    def stim_colour(self, source: str, channel: int) -> str:
        """The colour of a stimulator channel's curves and read-out."""
        keys = list(self.stim_channels)
        k = keys.index((source, channel)) if (source, channel) in keys else len(keys)
        return STIM_COLOURS[k % len(STIM_COLOURS)]

    def set_hub(self, hub: Hub) -> None:
        """Draw another hub's streams from now on (the preview's, then the recording's): what
        the old one drew is cleared, so nothing of it stands as if it were live."""
        self.hub = hub
        self._redraw_emg(rebuild=True)
        self._caliper_drawn = None
        self._stim_drawn = None
        self.stim_channels = {}
        for curves in self._stim_curves.values():
            for curve in curves:
                curve.setData([], [])
        for curve in self._curves:
            curve.clear()
        for rms_curve in self._rms_curves:
            rms_curve.setData([], [])
        self.caliper_points.setData([], [])
        self.caliper_presses.setData([], [])
        self._drop_caliper_labels()

    def end_at(self, t_s: float) -> None:
        """The streams ended at session time `t_s` (the recording stopped): the stimulator's
        last setting is drawn up to then, not on into the future as if still read."""
        self._hold_until = t_s
        self._stim_drawn = None

    def set_window(self, window_s: float) -> None:
        """Show the last `window_s` seconds."""
        self.window_s = window_s
        self.emg_plot.setXRange(-window_s, 0, padding=0)
        self._redraw_emg(rebuild=True)
        self._place_scale_bars()

    def _set_y(self, plot: pg.PlotItem, lo: float, hi: float) -> None:
        """Set a y range only when it changes (a change redraws the axis)."""
        if self._y_ranges.get(id(plot)) != (lo, hi):
            self._y_ranges[id(plot)] = (lo, hi)
            plot.setYRange(lo, hi, padding=0)

    # -- EMG -------------------------------------------------------------------------------------
    def _sync_lanes(self) -> None:
        """Add lanes for EMG streams declared since the last call."""
        known = {lane.stream for lane in self.lanes}
        for spec in self.hub.streams.values():
            if spec.type != "EMG" or spec.kind is not StreamKind.REGULAR or spec.name in known:
                continue
            for c, name in enumerate(spec.channels):
                unit = spec.units[c]
                self.lanes.append(EmgLane(spec.name, c, name, LANE_UV.get(unit, 100.0), unit))
                colour = COLOURS[(len(self.lanes) - 1) % len(COLOURS)]
                self._curves.append(LaneCurve(pg.mkPen(colour, width=1)))
                self._rms_curves.append(pg.PlotCurveItem(pen=pg.mkPen("#ffffff", width=2)))
                self._curves[-1].setParentItem(self._emg_group)
                self._rms_curves[-1].setParentItem(self._emg_group)
                self._rms_curves[-1].setVisible(self.rms)
                bar = pg.PlotCurveItem(pen=pg.mkPen("#e0e0e0", width=2))
                text = pg.TextItem("", color="#e0e0e0", anchor=(0, 0.5), fill=(17, 17, 17, 200))
                self.emg_plot.addItem(bar, ignoreBounds=True)
                self.emg_plot.addItem(text, ignoreBounds=True)
                # They change only with a gain or the window: drawn from pixmaps, not each frame
                # (16 bars and labels cost as much as a third of the traces' drawing).
                for item in (bar, text, text.textItem):
                    item.setCacheMode(CACHE)
                self._scale_bars.append((bar, text))
            self._relabel()
            self._place_scale_bars()

    def _relabel(self) -> None:
        ticks = [(-i, lane.name) for i, lane in enumerate(self.lanes)]
        self.emg_plot.getAxis("left").setTicks([ticks])
        self._set_y(self.emg_plot, -len(self.lanes) + 0.5, 0.5)

    def _place_scale_bars(self) -> None:
        """Each lane's scale bar at the left of its lane (the oldest data, not the newest)."""
        x = -self.window_s * 0.985
        for i, (lane, (bar, text)) in enumerate(zip(self.lanes, self._scale_bars, strict=True)):
            length, label = lane.scale()
            bar.setData([x, x], [-i - length / 2, -i + length / 2])
            text.setText(label)
            text.setPos(x + self.window_s * 0.005, -i)
            bar.setVisible(lane.visible)
            text.setVisible(lane.visible)

    def scale_bar(self, index: int) -> tuple[float, str]:
        """Lane `index`'s scale bar as drawn: (its length in lane heights, its label)."""
        bar, text = self._scale_bars[index]
        _x, y = bar.getData()
        return float(y[1] - y[0]), text.toPlainText()

    def set_lane(self, index: int, gain: float | None = None, visible: bool | None = None) -> None:
        """Change a lane's gain or visibility (mute)."""
        lane = self.lanes[index]
        if gain is not None:
            lane.gain = gain
        if visible is not None:
            lane.visible = visible
            self._curves[index].setVisible(visible)
            self._rms_curves[index].setVisible(visible and self.rms)
        self._place_scale_bars()
        self._redraw_emg()

    def set_rms(self, on: bool) -> None:
        """Show or hide the RMS envelope."""
        self.rms = on
        for lane, curve in zip(self.lanes, self._rms_curves, strict=True):
            curve.setVisible(on and lane.visible)
        self._redraw_emg()

    def _columns(self) -> int:
        return max(100, int(self.emg_plot.vb.width()))

    def _redraw_emg(self, rebuild: bool = False) -> None:
        """Redraw every lane at the next refresh (a gain, visibility or RMS change); with
        `rebuild`, decimate the ring afresh (another window or hub)."""
        self._totals.clear()
        self._rms_totals.clear()
        if rebuild:
            self._envelopes.clear()

    @staticmethod
    def _read_since(ring: RingBuffer, since: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """The ring's samples from stream sample number `since` on (fewer if it no longer holds
        them), read whole: (number of the first read, t_ns, values). None if a write came
        between every try (the numbers would be unknown)."""
        for _ in range(3):
            total = ring.total
            t_ns, values = ring.latest(total - since)
            if ring.total == total:  # no write during the read: these end at sample `total`
                return total - len(t_ns), t_ns, values
        return None

    def _refresh_emg(self) -> None:
        columns = self._columns()
        by_stream: dict[str, list[int]] = {}
        for i, lane in enumerate(self.lanes):
            by_stream.setdefault(lane.stream, []).append(i)
        for stream, indices in by_stream.items():
            ring = self.hub.ring(stream)
            rate = ring.spec.nominal_rate_hz
            shown = int(self.window_s * rate) + 1  # samples in the window
            k = -(-shown // columns)  # samples per pixel column
            envelope = self._envelopes.get(stream)
            if envelope is None or envelope.k != k:  # first, or the plot's width changed
                envelope = ColumnEnvelope(k, shown // k + 3, ring.spec.channel_count)
                self._envelopes[stream] = envelope
            # Redraw once a pixel column's worth of samples is new; until then the curves
            # stand and only slide (a partial column would change nothing visible).
            total = ring.total
            if stream in self._totals and total - self._totals[stream] < k:
                continue
            # Only what is new since the last fold is read and decimated; all of the window
            # (from its oldest column's first sample) the first time or after a gap.
            since = max(0, (total - shown) // k * k)
            if envelope.next_sample is not None and since <= envelope.next_sample <= total:
                since = envelope.next_sample
            read = self._read_since(ring, since)
            if read is None:
                continue  # the next frame will
            first, t_ns, values = read
            self._totals[stream] = end = first + len(t_ns)
            envelope.fold(first, t_ns / 1e9, values)
            x, y = envelope.points(end - shown)
            for i in indices:
                lane = self.lanes[i]
                if not lane.visible:
                    continue
                # Clipped to the lane, as EEG viewers do: a stimulation artefact thousands of µV
                # high must not paint over the other channels.
                scale = lane.gain / lane.range_uv
                lane_y = np.clip(y[:, lane.channel] * scale, -LANE_HALF, LANE_HALF) - i
                # Bounds: the lane's band, and a column's time past each end (the pen's width).
                self._curves[i].set_points(x, lane_y, -i - 0.5, -i + 0.5, k / rate, self.window_s)
            if self.rms:
                self._refresh_rms(stream, indices, shown, k)

    def _refresh_rms(self, stream: str, indices: list[int], shown: int, k: int) -> None:
        """The RMS curves of a stream's lanes, from the whole window (when a column is new)."""
        ring = self.hub.ring(stream)
        if stream in self._rms_totals and ring.total - self._rms_totals[stream] < k:
            return
        self._rms_totals[stream] = ring.total
        t_ns, values = ring.latest(shown)
        if not len(t_ns):
            return
        xr, yr = rms_envelope(t_ns / 1e9, values, RMS_WINDOW_S)
        for i in indices:
            lane = self.lanes[i]
            if lane.visible:
                scale = lane.gain / lane.range_uv
                rms_y = np.clip(yr[:, lane.channel] * scale, 0, LANE_HALF) - i
                self._rms_curves[i].setData(xr, rms_y, skipFiniteCheck=True)

    # -- stimulator, caliper, events -------------------------------------------------------------
    def add_event(self, event: Event) -> None:
        """Take a new event: stimulator history, or a line across every plot and a label."""
        t_s = event.t_ns / 1e9
        if isinstance(event, StimSettingsEvent):
            key = (event.source, event.settings.channel)
            if key not in self.stim_channels:
                self._add_stim_channel(key)
            self.stim_channels[key].append((t_s, event.settings))
            return
        label = event_label(event)
        if label is None:
            return
        colour = EVENT_COLOURS.get(getattr(event, "kind", ""), "#e0e0e0")
        pen = pg.mkPen(colour, width=1, style=QtCore.Qt.PenStyle.DashLine)
        lines = []
        for plot in self.plots:
            line = pg.InfiniteLine(pos=t_s - self._now_s, angle=90, pen=pen)
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        shown = self._event_metrics.elidedText(
            label, QtCore.Qt.TextElideMode.ElideRight, EVENT_LABEL_PX
        )
        item = pg.TextItem(shown, color=colour, anchor=(0, 0))
        item.setFont(self._event_font)
        item.textItem.document().setDocumentMargin(0)  # one row is one line of text
        item.setParentItem(self._event_group)
        entry = EventLabel(t_s, label, item, lines)
        self._event_lines.append(entry)
        self._place_label(entry, self._row_ends())

    def _row_ends(self) -> list[float]:
        """Where each label row's last drawn label ends (session seconds)."""
        ends = [-math.inf] * EVENT_ROWS
        for entry in self._event_lines:
            if entry.row is not None:
                ends[entry.row] = max(ends[entry.row], self._label_end(entry))
        return ends

    def _label_end(self, entry: EventLabel) -> float:
        px = float(self._event_metrics.horizontalAdvance(entry.item.toPlainText())) + 8
        return entry.t_s + px / max(self._px_per_s, 1e-9)

    def _place_label(self, entry: EventLabel, ends: list[float]) -> None:
        """Put a label in the first row where it does not overlap the one before; in none if
        there is no room (then only its line is drawn)."""
        entry.row = next((r for r in range(EVENT_ROWS) if ends[r] <= entry.t_s), None)
        if entry.row is not None:
            ends[entry.row] = self._label_end(entry)
            entry.item.setPos(entry.t_s, EVENT_ROWS - entry.row)
        entry.item.setVisible(entry.row is not None)
        entry.item.setToolTip(entry.text)

    def _layout_labels(self) -> None:
        """Lay out every label again (the pixels per second changed)."""
        ends = [-math.inf] * EVENT_ROWS
        for entry in self._event_lines:
            entry.row = None
            self._place_label(entry, ends)

    def event_labels(self) -> list[tuple[str, bool]]:
        """The event labels in the window: (text, drawn), oldest first."""
        return [(e.text, e.row is not None) for e in self._event_lines]

    def _add_stim_channel(self, key: tuple[str, int]) -> None:
        colour = self.stim_colour(*key)
        self.stim_channels[key] = []
        fill = QtGui.QColor(colour)
        fill.setAlpha(50)
        on = self.stim_plot.plot(pen=pg.mkPen(colour, width=2), fillLevel=0, brush=fill)
        setting = self.stim_plot.plot(
            pen=pg.mkPen(colour, width=1, style=QtCore.Qt.PenStyle.DashLine)
        )
        frequency = self.freq_plot.plot(pen=pg.mkPen(colour, width=2))
        self._stim_curves[key] = (on, setting, frequency)
        self._sliding += [on, setting, frequency]
        for curve in (on, setting, frequency):
            curve.setPos(-self._now_s, 0)

    def _refresh_stim(self, now_s: float) -> None:
        total = sum(len(h) for h in self.stim_channels.values())
        last = max((h[-1][0] for h in self.stim_channels.values() if h), default=None)
        if last is None or (total, last) == self._stim_drawn:
            return  # nothing new: the steps stand and slide
        start = now_s - self.window_s
        # The last setting holds until the next change: drawn an hour ahead, so the curve only
        # slides until then instead of being rebuilt every frame.
        hold = now_s + 3600.0 if self._hold_until is None else self._hold_until
        top_ma, top_hz = 1.0, 1.0
        for key, history in self.stim_channels.items():
            if not history:
                continue
            first = max(0, next((k for k, (t, _s) in enumerate(history) if t >= start),
                                len(history)) - 1)  # fmt: skip
            del history[:first]  # older changes can never be drawn again
            t = np.array([t for t, _ in history])
            on_curve, set_curve, freq_curve = self._stim_curves[key]
            on = np.array([s.intensity_ma if s.output_on else 0.0 for _, s in history])
            on_curve.setData(*step_xy(t, on, hold))
            intensity = np.array([s.intensity_ma for _, s in history])
            set_curve.setData(*step_xy(t, intensity, hold))
            frequency = np.array([s.frequency_hz for _, s in history])
            freq_curve.setData(*step_xy(t, frequency, hold))
            top_ma = max(top_ma, float(intensity.max()))
            top_hz = max(top_hz, float(frequency.max()))
        self._stim_drawn = (sum(len(h) for h in self.stim_channels.values()), last)
        self._set_y(self.stim_plot, 0, top_ma * 1.15)
        self._set_y(self.freq_plot, 0, top_hz * 1.15)

    def stim_lines(self) -> list[tuple[str, str]]:
        """Every stimulator channel's current settings: (line of text, its colour)."""
        lines = []
        for (source, channel), history in self.stim_channels.items():
            if not history:
                continue
            s = history[-1][1]
            state = "OUTPUT ON" if s.output_on else "output off"
            text = (
                f"{source} ch{channel}: {s.intensity_ma:g} mA · {s.frequency_hz:g} Hz · "
                f"{s.pulse_width_us:g} µs · {s.waveform} {s.mode} · {state}"
            )
            lines.append((text, self.stim_colour(source, channel)))
        return lines

    def stim_text(self) -> str:
        """Every stimulator channel's current settings, a line each, for the large read-out."""
        lines = self.stim_lines()
        return "\n".join(t for t, _c in lines) if lines else "stimulator: no settings yet"

    def _refresh_caliper(self, now_s: float) -> None:
        streams = [s for s in self.hub.streams.values() if s.type == "Caliper"]
        totals = tuple(self.hub.ring(s.name).total for s in streams)
        if not streams or totals == self._caliper_drawn:
            return  # no new reading: the points stand and slide
        self._caliper_drawn = totals
        t_parts, v_parts = [], []
        for spec in streams:
            t_ns, raw = self.hub.ring(spec.name).latest()
            inside = t_ns >= (now_s - self.window_s) * 1e9
            t_parts.append(t_ns[inside] / 1e9)
            v_parts.append(raw[inside].astype(np.float64))
        t_s, values = np.concatenate(t_parts), np.concatenate(v_parts)
        pressed = values[:, 1] > 0.5
        self.caliper_points.setData(t_s[~pressed], values[~pressed, 0])
        self.caliper_presses.setData(t_s[pressed], values[pressed, 0])
        self._drop_caliper_labels()
        for x, y in zip(t_s[pressed][-12:], values[pressed, 0][-12:], strict=True):
            # Beside the press, at its height: inside the plot (above it, the top cut it). Right
            # of it (clear of the readings before the press) unless that runs past "now".
            room_px = (now_s - float(x)) * self._px_per_s
            anchor = (-0.15, 0.5) if room_px > CALIPER_LABEL_PX else (1.15, 0.5)
            label = pg.TextItem(f"{y:.1f}", color="#ffd54f", anchor=anchor)
            label.textItem.document().setDocumentMargin(0)  # as tall as its line, no more
            label.setParentItem(self._caliper_group)
            label.setPos(float(x), float(y))
            self._caliper_labels.append(label)
        if len(values):
            self._set_y(self.caliper_plot, 0, max(10.0, float(values[:, 0].max()) * 1.5))

    def _drop_caliper_labels(self) -> None:
        for label in self._caliper_labels:
            label.setParentItem(None)
            self.caliper_plot.scene().removeItem(label)
        self._caliper_labels = []

    def _drop_old_lines(self, now_s: float) -> None:
        while self._event_lines and self._event_lines[0].t_s < now_s - self.window_s:
            entry = self._event_lines.popleft()
            for plot, line in zip(self.plots, entry.lines, strict=True):
                plot.removeItem(line)
            entry.item.setParentItem(None)
            self.event_plot.scene().removeItem(entry.item)

    def refresh(self, now_s: float) -> None:
        """Redraw for session time `now_s` (s)."""
        self._now_s = now_s
        lo, hi = self.emg_plot.vb.viewRange()[0]
        if abs(lo + self.window_s) > 1e-6 or abs(hi) > 1e-6:  # a resize or layout moved it
            self.emg_plot.setXRange(-self.window_s, 0, padding=0)
        px_per_s = self.emg_plot.vb.width() / self.window_s
        if abs(px_per_s - self._px_per_s) > 0.5:
            self._px_per_s = px_per_s
            self._layout_labels()
        self._sync_lanes()
        self._refresh_emg()
        self._refresh_stim(now_s)
        self._refresh_caliper(now_s)
        self._drop_old_lines(now_s)
        # Everything slides by whole pixels (now to the nearest pixel column): a lane that moved
        # by whole pixels rasterises as it did, so it is copied from its ring, not stroked again.
        px = px_per_s * self.devicePixelRatioF()
        slid = round(now_s * px) / px if px > 0 else now_s
        for item in self._sliding:
            item.setPos(-slid, 0)
        for scatter in (self.caliper_points, self.caliper_presses):
            # pyqtgraph culls points outside the view rect it cached for the view's last change,
            # not the item's own move: without this the newest presses were not drawn.
            scatter.viewTransformChanged()
        for entry in self._event_lines:
            for line in entry.lines:
                line.setValue(entry.t_s - slid)
