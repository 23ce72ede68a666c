"""The monitor's layout at the two screen sizes it must hold at (1366x768 and 1920x1080).

Each test opens the real window on the demo config (simulated devices, the protocol) or on one
with two stimulators of two channels each, at exactly that size, and judges it with Qt's own
measures: the font's advance of every label's and button's text against the room the widget
has, every widget's place against the window and the viewport it is in, the scroll bars. The
stimulator strip is judged against the config: a curve, with data, for every channel it names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyqtgraph.Qt import QtCore, QtWidgets

from needlelab.config import SessionConfig, parse_config, read_toml
from needlelab.events import MarkerEvent
from needlelab.hub import Hub
from needlelab.monitor.plots import TracePanel
from needlelab.monitor.window import MonitorWindow
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

Qt = QtCore.Qt
QStyle = QtWidgets.QStyle
SIZES = [(1366, 768), (1920, 1080)]
SECOND_STIM = {
    "kind": "stim_serial", "name": "stim_b", "profile": "needlelab-stim-frame",
    "channels": [1, 2], "simulator": {"transport": "tcp", "pattern": "clinical", "seed": 2},
}  # fmt: skip


def config_for(tmp_path: Path, two_stimulators: bool) -> SessionConfig:
    data = read_toml(configs_dir() / "demo.toml")
    data["session"]["out_dir"] = str(tmp_path)
    if two_stimulators:
        data["devices"].insert(1, SECOND_STIM)
    return parse_config(data)


def stim_channels(config: SessionConfig) -> set[tuple[str, int]]:
    """Every (stimulator, channel) the config names: what the strip must show."""
    found = set()
    for device in config.devices:
        if device.kind.startswith("stim"):
            channels = getattr(device, "channels", [1])
            channels = range(1, channels + 1) if isinstance(channels, int) else channels
            found |= {(device.name, int(c)) for c in channels}
    return found


@pytest.fixture(params=[False, True], ids=["demo", "two-stimulators"])
def configured(request: pytest.FixtureRequest, tmp_path: Path) -> SessionConfig:
    return config_for(tmp_path, bool(request.param))


def open_window(qtbot: Any, config: SessionConfig, tmp_path: Path, size: tuple[int, int]) -> Any:
    session = Session(config, tmp_path)
    window = MonitorWindow(session, autostart=True)
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitUntil(lambda: session.recording, timeout=15_000)
    return window


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def window(
    request: pytest.FixtureRequest, qtbot: Any, configured: SessionConfig, tmp_path: Path
) -> Iterator[MonitorWindow]:
    win = open_window(qtbot, configured, tmp_path, request.param)
    expected = stim_channels(configured)
    # Live: every stimulator channel heard from, EMG drawn, the devices' table filled.
    qtbot.waitUntil(lambda: set(win.traces.stim_channels) >= expected, timeout=20_000)
    qtbot.waitUntil(lambda: len(win.device_panel.rows) == len(configured.devices), timeout=20_000)
    qtbot.waitUntil(lambda: win.session.devices["emg"].stats.samples > 4000, timeout=20_000)
    qtbot.wait(300)
    assert (win.width(), win.height()) == request.param
    yield win
    win.close()


# -- the measures ------------------------------------------------------------------------------
def shown_widgets(window: QtWidgets.QWidget) -> list[QtWidgets.QWidget]:
    return [w for w in window.findChildren(QtWidgets.QWidget) if w.isVisible() and w.width() > 0]


def text_room(widget: QtWidgets.QWidget) -> int:
    """The width a widget's text has: its contents less what the style draws besides it."""
    style = widget.style()
    if isinstance(widget, QtWidgets.QCheckBox | QtWidgets.QRadioButton):
        metric = (
            (QStyle.PixelMetric.PM_IndicatorWidth, QStyle.PixelMetric.PM_CheckBoxLabelSpacing)
            if isinstance(widget, QtWidgets.QCheckBox)
            else (
                QStyle.PixelMetric.PM_ExclusiveIndicatorWidth,
                QStyle.PixelMetric.PM_RadioButtonLabelSpacing,
            )
        )
        return int(widget.width() - sum(style.pixelMetric(m, None, widget) for m in metric))
    if isinstance(widget, QtWidgets.QAbstractButton):
        margin = style.pixelMetric(QStyle.PixelMetric.PM_ButtonMargin, None, widget)
        frame = style.pixelMetric(QStyle.PixelMetric.PM_DefaultFrameWidth, None, widget)
        return int(widget.width() - 2 * margin - 2 * frame)
    assert isinstance(widget, QtWidgets.QLabel)
    return int(widget.contentsRect().width() - 2 * widget.margin() - max(widget.indent(), 0))


def clipped_text(widget: QtWidgets.QWidget) -> str | None:
    """Why a label's or button's text does not fit it (None: it fits)."""
    text = widget.text()
    if not text or (isinstance(widget, QtWidgets.QLabel) and widget.pixmap() is not None):
        return None
    if widget.property("elides"):  # drawn elided on purpose: all of it must be in the tooltip
        return None if widget.toolTip() == text else f"elided without a tooltip: {text!r}"
    metrics = widget.fontMetrics()
    room = text_room(widget)
    if isinstance(widget, QtWidgets.QLabel) and widget.wordWrap():
        for word in text.split():
            if metrics.horizontalAdvance(word) > room:
                return f"the word {word!r} is wider ({metrics.horizontalAdvance(word)}) than {room}"
        flags = int(Qt.TextFlag.TextWordWrap) | int(widget.alignment())
        needed = metrics.boundingRect(QtCore.QRect(0, 0, room, 100_000), flags, text).height()
        if needed > widget.contentsRect().height() + 1:
            return (
                f"wrapped it needs {needed} px of height, it has {widget.contentsRect().height()}"
            )
        return None
    lines = text.replace("&&", "&").split("\n")
    widest = max(metrics.horizontalAdvance(line) for line in lines)
    if widest > room:
        return f"{widest} px of text in {room} px"
    if isinstance(widget, QtWidgets.QLabel):
        needed = len(lines) * metrics.height()
        if needed > widget.contentsRect().height() + 1:
            return f"{len(lines)} lines need {needed} px, it has {widget.contentsRect().height()}"
    return None


def window_rect(widget: QtWidgets.QWidget, window: QtWidgets.QWidget) -> QtCore.QRect:
    return QtCore.QRect(widget.mapTo(window, QtCore.QPoint(0, 0)), widget.size())


def scroll_ancestor(widget: QtWidgets.QWidget) -> QtWidgets.QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QtWidgets.QAbstractScrollArea) and (
            parent.viewport() is not widget and parent.viewport().isAncestorOf(widget)
        ):
            return parent
        parent = parent.parentWidget()
    return None


def layout_problems(window: MonitorWindow) -> list[str]:
    """Everything that does not hold in the window as it is now."""
    problems = []
    frame = window.rect()
    for widget in shown_widgets(window):
        name = f"{type(widget).__name__} {getattr(widget, 'text', lambda: '')()!r}"
        if isinstance(widget, QtWidgets.QLabel | QtWidgets.QAbstractButton):
            why = clipped_text(widget)
            if why:
                problems.append(f"{name}: clipped: {why}")
        where = window_rect(widget, window)
        area = scroll_ancestor(widget)
        if area is None:
            if not frame.contains(where):
                problems.append(f"{name}: at {where} outside the window {frame}")
            continue
        # In a scroll area: it may lie below (scrolled to), never beside the viewport.
        port = window_rect(area.viewport(), window)
        if where.left() < port.left() - 1 or where.right() > port.right() + 1:
            problems.append(f"{name}: {where} sideways out of its scroll area's view {port}")
    for area in window.findChildren(QtWidgets.QAbstractScrollArea):
        if area.isVisible() and area.horizontalScrollBar().isVisible():
            problems.append(f"{type(area).__name__}: a horizontal scroll bar")
        if area is window.right_scroll:
            content = area.widget()
            if content.width() > area.viewport().width():
                problems.append(
                    f"right panel {content.width()} px wide in a {area.viewport().width()} px view"
                )
    return problems


def settle(qtbot: Any, window: MonitorWindow) -> None:
    """Let a few frames and a health refresh pass, and the layout follow."""
    frames = window.frames
    qtbot.waitUntil(lambda: window.frames >= frames + 3, timeout=10_000)
    qtbot.wait(300)
    QtWidgets.QApplication.processEvents()


# -- the tests ---------------------------------------------------------------------------------
def test_every_text_fits_and_nothing_lies_outside_in_every_phase(
    qtbot: Any, window: MonitorWindow
) -> None:
    settle(qtbot, window)
    problems = {"start": layout_problems(window)}
    panel = window.protocol_panel
    run = window.session.protocol_run
    assert run is not None
    while not run.finished and run.next_phase is not None:
        panel.advance()  # every phase's page: NRS, TPD (its trial prompt), LRJ, ROM, needling
        settle(qtbot, window)
        phase = run.phase
        assert phase is not None
        problems[phase.name] = layout_problems(window)
        if phase.kind == "needling":  # prompt to commit in view, without scrolling by hand
            entry = window.localization_panel
            view = window_rect(window.right_scroll.viewport(), window)
            for control in (entry.prompt_button, *entry.level_buttons, entry.commit_button):
                where = window_rect(control, window)
                if not view.contains(where):
                    problems[phase.name].append(f"{control.text()!r} at {where} not in {view}")
    bad = {phase: found for phase, found in problems.items() if found}
    assert not bad, "\n".join(f"{p}: {line}" for p, found in bad.items() for line in found)


def test_the_toolbar_does_not_move_between_recording_and_paused(
    qtbot: Any, window: MonitorWindow
) -> None:
    bar = window.recording_bar
    widgets = (bar.indicator, bar.elapsed, bar.start_button, bar.pause_button, bar.stop_button)

    def places() -> list[QtCore.QRect]:
        settle(qtbot, window)
        return [window_rect(w, window) for w in widgets]

    qtbot.waitUntil(lambda: bar.indicator.text() == "● RECORDING", timeout=5_000)
    recording = places()
    window.toggle_pause()
    qtbot.waitUntil(lambda: bar.indicator.text() == "● PAUSED", timeout=5_000)
    assert bar.pause_button.text() == "Resume"
    paused = places()
    window.toggle_pause()
    qtbot.waitUntil(lambda: bar.indicator.text() == "● RECORDING", timeout=5_000)
    assert paused == recording
    assert places() == recording


def test_the_strip_and_read_out_show_every_channel_of_every_stimulator(
    qtbot: Any, window: MonitorWindow, configured: SessionConfig
) -> None:
    expected = stim_channels(configured)
    settle(qtbot, window)
    traces = window.traces
    assert set(traces._stim_curves) == expected
    for key, (on, setting, frequency) in traces._stim_curves.items():
        for curve in (on, setting, frequency):
            x, _y = curve.getData()
            assert x is not None and len(x) >= 2, key
    # The read-out: one line per channel, each naming its stimulator and channel.
    lines = window.stim_label.text().split("\n")
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        f"{name} ch{c}" for name, c in expected
    )


# -- the traces' own parts, on a hub fed by the test (conftest's `panel`) ----------------------


def scene_rect(item: Any) -> QtCore.QRectF:
    return item.mapRectToScene(item.boundingRect())


def test_dense_event_labels_never_overlap_and_every_line_is_drawn(
    qtbot: Any, panel: tuple[TracePanel, Hub]
) -> None:
    traces, _hub = panel
    now_s = 20.0
    # 40 notes 0.1 s apart in the last 4 s (far denser than labels can be written), then 3
    # far apart: those must all be written.
    texts = [f"note {k} with a long text" for k in range(40)] + ["alone A", "alone B", "alone C"]
    times = [now_s - 9.0 + 0.1 * k for k in range(40)] + [now_s - 3.0, now_s - 2.0, now_s - 1.0]
    traces.refresh(now_s)
    for k, (text, t) in enumerate(zip(texts, times, strict=True)):
        traces.add_event(MarkerEvent(id=k + 1, t_ns=round(t * 1e9), text=text))
    traces.refresh(now_s)
    qtbot.wait(50)
    labels = traces._event_lines
    assert [e.text for e in labels] == texts
    # A line in every plot for every event, at its time.
    for entry in labels:
        assert len(entry.lines) == len(traces.plots)
        assert all(math.isclose(line.value(), entry.t_s - now_s) for line in entry.lines)
    drawn = [e for e in labels if e.item.isVisible()]
    assert {e.text for e in drawn} >= {"alone A", "alone B", "alone C", texts[0]}
    assert len(drawn) < len(labels)  # no room for all: some are left unwritten
    box = scene_rect(traces.event_plot.vb)
    rects = [scene_rect(e.item) for e in drawn]
    for entry, rect in zip(drawn, rects, strict=True):
        assert box.contains(rect), (entry.text, rect, box)
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert not a.intersects(b), (a, b)
    # None is written over the traces: the labels' lane is above the EMG plot.
    emg = scene_rect(traces.emg_plot.vb)
    assert all(rect.bottom() <= emg.top() for rect in rects)


def test_each_lane_has_a_scale_bar_that_measures_its_trace(
    qtbot: Any, panel: tuple[TracePanel, Hub]
) -> None:
    """A ±400 µV square wave drawn in a lane is as tall as the lane's scale bar says."""
    traces, hub = panel
    rate, n, amplitude_uv = 1000.0, 5000, 400.0
    spec = StreamSpec(
        "emg.emg", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, rate, device="emg"
    )
    hub.add_stream(spec)
    square = np.where((np.arange(n) // 100) % 2 == 0, amplitude_uv, -amplitude_uv)
    values = np.stack([square, square / 2], axis=1).astype(np.float32)
    t_ns = np.arange(n, dtype=np.int64) * 1_000_000
    hub.push(Chunk("emg.emg", values, int(t_ns[-1]), 0, t_ns=t_ns))
    traces.refresh(n / rate)  # the stream's lanes appear
    assert [lane.name for lane in traces.lanes] == ["a", "b"]
    for gain in (1.0, 2.0):  # (at ×4 the ±400 µV is clipped to its lane, as it should be)
        for lane in range(2):
            traces.set_lane(lane, gain=gain)
        traces.refresh(n / rate)
        for lane, peak_uv in ((0, amplitude_uv), (1, amplitude_uv / 2)):
            _x, y = traces._curves[lane].getData()
            drawn = float(np.max(y) - np.min(y))  # lane heights
            length, label = traces.scale_bar(lane)
            value, unit = label.split()
            assert unit == "µV"
            # The trace spans 2 x peak µV; the bar `value` µV: in the same proportion.
            assert drawn / length == pytest.approx(2 * peak_uv / float(value), rel=1e-3)
    # The default gain leaves room: a ±400 µV burst takes less than half a lane at ×1.
    traces.set_lane(0, gain=1.0)
    traces.refresh(n / rate)
    _x, y = traces._curves[0].getData()
    assert float(np.max(y) - np.min(y)) < 0.5


def test_the_caliper_labels_lie_inside_their_plot(qtbot: Any, tmp_path: Path) -> None:
    config = config_for(tmp_path, two_stimulators=False)
    window = open_window(qtbot, config, tmp_path, SIZES[0])
    try:
        traces = window.traces
        qtbot.waitUntil(lambda: len(traces._caliper_labels) >= 3, timeout=20_000)
        # Just after a new press: the newest label is at "now", the right edge.
        newest = traces._caliper_labels[-1].pos().x()
        qtbot.waitUntil(lambda: traces._caliper_labels[-1].pos().x() > newest, timeout=10_000)
        QtWidgets.QApplication.processEvents()
        box = scene_rect(window.traces.caliper_plot.vb)
        oldest = window.traces.caliper_plot.vb.mapViewToScene(QtCore.QPointF(-9.5, 0)).x()
        for label in window.traces._caliper_labels:
            rect = scene_rect(label)
            if rect.left() < oldest:  # sliding out of the window at its left: cut there
                continue
            assert box.contains(rect), (label.toPlainText(), rect, box)
    finally:
        window.close()
