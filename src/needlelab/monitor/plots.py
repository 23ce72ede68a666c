"""The monitor's plots: EMG traces, the stimulator strip, the caliper lane and event lines.

All on the session clock, in seconds, over a rolling window: the x axis reads seconds before now
(-10 … 0), so it never changes and its drawing is cached. Data items keep their session times
and are slid left each frame (`setPos(-now)`): scrolling costs no new paths, and a trace is only
rebuilt when its stream has new samples. Only the Qt thread touches these: `TracePanel.refresh()`
is called by the window's timer with what the hub holds now.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

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
from needlelab.hub import Hub
from needlelab.monitor.traces import peak_decimate, rms_envelope, step_xy
from needlelab.streams import StreamKind

LANE_UV = {"uV": 1000.0, "mV": 1.0, "au": 200.0}  # default span of one EMG lane per unit
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


@dataclass
class EmgLane:
    """One EMG channel's place in the stacked plot."""

    stream: str
    channel: int
    name: str
    range_uv: float  # the value span of one lane
    gain: float = 1.0
    visible: bool = True


class TracePanel(pg.GraphicsLayoutWidget):  # type: ignore[misc]
    """EMG (stacked lanes), stimulator intensity and frequency, caliper readings, event lines."""

    def __init__(self, hub: Hub, window_s: float = 10.0, rms: bool = False) -> None:
        super().__init__()
        self.hub = hub
        self.window_s = window_s
        self.rms = rms
        self._now_s = 0.0
        self.setBackground("#111")
        self.emg_plot = self.addPlot(row=0, col=0)
        self.stim_plot = self.addPlot(row=1, col=0)
        self.freq_plot = self.addPlot(row=2, col=0)
        self.caliper_plot = self.addPlot(row=3, col=0)
        self.ci.layout.setRowStretchFactor(0, 6)
        for plot, label in (
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
                plot.setMaximumHeight(90)
            if plot is not self.caliper_plot:
                plot.getAxis("bottom").setStyle(showValues=False)
        self.caliper_plot.setLabel("bottom", "seconds before now")
        self.lanes: list[EmgLane] = []
        self._curves: list[pg.PlotCurveItem] = []
        self._rms_curves: list[pg.PlotCurveItem] = []
        self._totals: dict[str, int] = {}
        self.stim_curve = self.stim_plot.plot(
            pen=pg.mkPen("#ffb74d", width=2), fillLevel=0, brush=(255, 183, 77, 70)
        )
        self.stim_set_curve = self.stim_plot.plot(
            pen=pg.mkPen("#ffb74d", width=1, style=QtCore.Qt.PenStyle.DashLine)
        )
        self.freq_curve = self.freq_plot.plot(pen=pg.mkPen("#4fc3f7", width=2))
        self.caliper_points = pg.ScatterPlotItem(size=7, brush="#aed581", pen=None)
        self.caliper_presses = pg.ScatterPlotItem(size=11, brush="#ffd54f", pen=None, symbol="d")
        self.caliper_plot.addItem(self.caliper_points)
        self.caliper_plot.addItem(self.caliper_presses)
        self._caliper_labels: list[pg.TextItem] = []
        self.stim_source: str | None = None  # the stimulator the strip shows
        self.stim_history: list[tuple[float, StimSettings]] = []  # its channel 1
        self._event_lines: deque[tuple[float, list[pg.InfiniteLine]]] = deque()
        self._sliding: list[pg.GraphicsObject] = [
            self.stim_curve, self.stim_set_curve, self.freq_curve, self.caliper_points,
            self.caliper_presses,
        ]  # fmt: skip
        # The EMG curves slide as one: a group moved once a frame, not 2 x channels items; the
        # caliper's value labels likewise.
        self._emg_group = pg.ItemGroup()
        self.emg_plot.addItem(self._emg_group)
        self._caliper_group = pg.ItemGroup()
        self.caliper_plot.addItem(self._caliper_group)
        self._sliding += [self._emg_group, self._caliper_group]
        self._stim_drawn: tuple[int, float] | None = None
        self._hold_until: float | None = None  # where the stimulator's last setting ends
        self._caliper_drawn: tuple[int, ...] | None = None
        self._y_ranges: dict[int, tuple[float, float]] = {}
        self.set_window(window_s)

    def set_hub(self, hub: Hub) -> None:
        """Draw another hub's streams from now on (the preview's, then the recording's): what
        the old one drew is cleared, so nothing of it stands as if it were live."""
        self.hub = hub
        self._totals.clear()
        self._caliper_drawn = None
        self._stim_drawn = None
        self.stim_history = []
        self.stim_source = None
        for curve in (*self._curves, *self._rms_curves, self.stim_curve, self.stim_set_curve,
                      self.freq_curve):  # fmt: skip
            curve.setData([], [])
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
        self._totals.clear()

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
                span = LANE_UV.get(spec.units[c], 100.0)
                self.lanes.append(EmgLane(spec.name, c, name, span))
                colour = COLOURS[(len(self.lanes) - 1) % len(COLOURS)]
                # Bare curve items: PlotDataItem's extra layers cost more than the drawing.
                self._curves.append(pg.PlotCurveItem(pen=pg.mkPen(colour, width=1)))
                self._rms_curves.append(pg.PlotCurveItem(pen=pg.mkPen("#ffffff", width=2)))
                self._curves[-1].setParentItem(self._emg_group)
                self._rms_curves[-1].setParentItem(self._emg_group)
                self._rms_curves[-1].setVisible(self.rms)
            self._relabel()

    def _relabel(self) -> None:
        ticks = [(-i, lane.name) for i, lane in enumerate(self.lanes)]
        self.emg_plot.getAxis("left").setTicks([ticks])
        self._set_y(self.emg_plot, -len(self.lanes) + 0.5, 0.5)

    def set_lane(self, index: int, gain: float | None = None, visible: bool | None = None) -> None:
        """Change a lane's gain or visibility (mute)."""
        lane = self.lanes[index]
        if gain is not None:
            lane.gain = gain
        if visible is not None:
            lane.visible = visible
            self._curves[index].setVisible(visible)
            self._rms_curves[index].setVisible(visible and self.rms)
        self._totals.clear()  # redraw

    def set_rms(self, on: bool) -> None:
        """Show or hide the RMS envelope."""
        self.rms = on
        for lane, curve in zip(self.lanes, self._rms_curves, strict=True):
            curve.setVisible(on and lane.visible)
        self._totals.clear()

    def _columns(self) -> int:
        return max(100, int(self.emg_plot.vb.width()))

    def _refresh_emg(self) -> None:
        columns = self._columns()
        by_stream: dict[str, list[int]] = {}
        for i, lane in enumerate(self.lanes):
            by_stream.setdefault(lane.stream, []).append(i)
        for stream, indices in by_stream.items():
            ring = self.hub.ring(stream)
            rate = ring.spec.nominal_rate_hz
            # Rebuild once a pixel column's worth of samples is new; until then the curves
            # stand and only slide (a partial column would change nothing visible).
            per_column = self.window_s * rate / columns
            if stream in self._totals and ring.total - self._totals[stream] < per_column:
                continue
            self._totals[stream] = ring.total
            t_ns, values = ring.latest(int(self.window_s * rate) + 1)
            if not len(t_ns):
                continue
            t_s = t_ns / 1e9
            x, y = peak_decimate(t_s, values, columns)
            if self.rms:
                xr, yr = rms_envelope(t_s, values, RMS_WINDOW_S)
            for i in indices:
                lane = self.lanes[i]
                if not lane.visible:
                    continue
                # Clipped to the lane, as EEG viewers do: a stimulation artefact thousands of µV
                # high must not paint over the other channels.
                scale = lane.gain / lane.range_uv
                lane_y = np.clip(y[:, lane.channel] * scale, -LANE_HALF, LANE_HALF) - i
                self._curves[i].setData(x, lane_y, skipFiniteCheck=True)
                if self.rms:
                    rms_y = np.clip(yr[:, lane.channel] * scale, 0, LANE_HALF) - i
                    self._rms_curves[i].setData(xr, rms_y, skipFiniteCheck=True)

    # -- stimulator, caliper, events -------------------------------------------------------------
    def add_event(self, event: Event) -> None:
        """Take a new event: stimulator history, or a labelled line across every plot."""
        t_s = event.t_ns / 1e9
        if isinstance(event, StimSettingsEvent):
            # The strip follows channel 1 of the first stimulator heard from.
            self.stim_source = self.stim_source or event.source
            if event.settings.channel == 1 and event.source == self.stim_source:
                self.stim_history.append((t_s, event.settings))
            return
        label = event_label(event)
        if label is None:
            return
        colour = EVENT_COLOURS.get(getattr(event, "kind", ""), "#e0e0e0")
        pen = pg.mkPen(colour, width=1, style=QtCore.Qt.PenStyle.DashLine)
        lines = []
        for plot in (self.emg_plot, self.stim_plot, self.freq_plot, self.caliper_plot):
            line = pg.InfiniteLine(
                pos=t_s - self._now_s,
                angle=90,
                pen=pen,
                label=label if plot is self.emg_plot else None,
                labelOpts={"position": 0.97, "color": colour, "rotateAxis": (1, 0)},
            )
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        self._event_lines.append((t_s, lines))

    def _refresh_stim(self, now_s: float) -> None:
        history = self.stim_history
        if not history or (len(history), history[-1][0]) == self._stim_drawn:
            return  # nothing new: the steps stand and slide
        start = now_s - self.window_s
        first = max(
            0, next((k for k, (t, _s) in enumerate(history) if t >= start), len(history)) - 1
        )
        del history[:first]  # older changes can never be drawn again
        self._stim_drawn = (len(history), history[-1][0])
        t = np.array([t for t, _ in history])
        # The last setting holds until the next change: drawn an hour ahead, so the curve only
        # slides until then instead of being rebuilt every frame.
        hold = now_s + 3600.0 if self._hold_until is None else self._hold_until
        on = np.array([s.intensity_ma if s.output_on else 0.0 for _, s in history])
        self.stim_curve.setData(*step_xy(t, on, hold))
        intensity = np.array([s.intensity_ma for _, s in history])
        self.stim_set_curve.setData(*step_xy(t, intensity, hold))
        frequency = np.array([s.frequency_hz for _, s in history])
        self.freq_curve.setData(*step_xy(t, frequency, hold))
        self._set_y(self.stim_plot, 0, max(1.0, float(intensity.max())) * 1.15)
        self._set_y(self.freq_plot, 0, max(1.0, float(frequency.max())) * 1.15)

    def stim_text(self) -> str:
        """The stimulator's current settings (channel 1), for the large read-out."""
        if not self.stim_history:
            return "stimulator: no settings yet"
        s = self.stim_history[-1][1]
        state = "OUTPUT ON" if s.output_on else "output off"
        return (
            f"{self.stim_source} ch1: {s.intensity_ma:g} mA · {s.frequency_hz:g} Hz · "
            f"{s.pulse_width_us:g} µs · {s.waveform} {s.mode} · {state}"
        )

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
            label = pg.TextItem(f"{y:.1f}", color="#ffd54f", anchor=(0.5, 1.2))
            label.setParentItem(self._caliper_group)
            label.setPos(float(x), float(y))
            self._caliper_labels.append(label)
        if len(values):
            self._set_y(self.caliper_plot, 0, max(10.0, float(values[:, 0].max()) * 1.2))

    def _drop_caliper_labels(self) -> None:
        for label in self._caliper_labels:
            label.setParentItem(None)
            self.caliper_plot.scene().removeItem(label)
        self._caliper_labels = []

    def _drop_old_lines(self, now_s: float) -> None:
        while self._event_lines and self._event_lines[0][0] < now_s - self.window_s:
            _t, lines = self._event_lines.popleft()
            for plot, line in zip(
                (self.emg_plot, self.stim_plot, self.freq_plot, self.caliper_plot),
                lines,
                strict=True,
            ):
                plot.removeItem(line)

    def refresh(self, now_s: float) -> None:
        """Redraw for session time `now_s` (s)."""
        self._now_s = now_s
        lo, hi = self.emg_plot.vb.viewRange()[0]
        if abs(lo + self.window_s) > 1e-6 or abs(hi) > 1e-6:  # a resize or layout moved it
            self.emg_plot.setXRange(-self.window_s, 0, padding=0)
        self._sync_lanes()
        self._refresh_emg()
        self._refresh_stim(now_s)
        self._refresh_caliper(now_s)
        self._drop_old_lines(now_s)
        for item in self._sliding:
            item.setPos(-now_s, 0)
        for t_s, lines in self._event_lines:
            for line in lines:
                line.setValue(t_s - now_s)
