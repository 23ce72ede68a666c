"""The monitor's main window: traces on the left, controls and health on the right.

One QTimer drives everything: at each tick the window reads the session clock, the hub's ring
buffers, the events recorded since the last tick and each device's live stats, and redraws.
Device threads never call into Qt; Qt never blocks on a device. Keys go to the localization
grammar (`AnswerKeys`) through an application-wide filter (`_KeyFilter`: the focus model).

What the window shows as entered is what the session file holds: the localization log takes
entries only while the file is written (the session opens and closes it), and after a failed
write the window shows the entries read back from the file.

Before Start the devices are connected in a preview (`Preview`: shown, never recorded, said on
screen). When the protocol is done, the window says the session is complete and stops; after
any stop it writes the report (in a child process), offers to open it and shows nothing of the
devices as if still live; with `auto_close` (the demo, `--duration`) it then closes by itself.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.clinic.localization import NOTE_KEY, AnswerKeys
from needlelab.devices.stim_manual import ManualStimulator
from needlelab.events import (
    CorrectionEvent,
    MarkerEvent,
    NeedleSiteEvent,
    PhaseEvent,
    PromptEvent,
    ProtocolEvent,
    ResponseEvent,
    TpdTrialEvent,
    WarningEvent,
)
from needlelab.monitor.health import HealthTracker
from needlelab.monitor.panels import (
    AMBER,
    BLUE,
    RED,
    CompletionPanel,
    DevicePanel,
    LocalizationPanel,
    ManualStimPanel,
    RecordingBar,
    StimReadout,
)
from needlelab.monitor.plots import TracePanel
from needlelab.monitor.preview import Preview
from needlelab.monitor.protocol_panel import ProtocolPanel
from needlelab.session import Session

Qt = QtCore.Qt
WINDOWS_S = (2, 5, 10, 20, 30)
GAINS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HEALTH_EVERY_S = 0.25  # the device panel's refresh period: fast enough for "red within 2 s"
AUTO_CLOSE_S = 5  # how long a window that closes by itself shows how the session ended
STOPPED_STIM = "stimulator: not read (the recording has stopped)"


def _value(enum: Any) -> int:
    return int(getattr(enum, "value", enum))


NAMED_KEYS = {
    "Space": Qt.Key.Key_Space, "Return": Qt.Key.Key_Return, "Enter": Qt.Key.Key_Enter,
    "Escape": Qt.Key.Key_Escape, "Tab": Qt.Key.Key_Tab, "Backtab": Qt.Key.Key_Backtab,
    "PageUp": Qt.Key.Key_PageUp, "PageDown": Qt.Key.Key_PageDown, "Home": Qt.Key.Key_Home,
    "End": Qt.Key.Key_End, "Insert": Qt.Key.Key_Insert, "Pause": Qt.Key.Key_Pause,
}  # fmt: skip
_NAMES = {_value(code): "Return" if name == "Enter" else name for name, code in NAMED_KEYS.items()}


def key_name(event: QtGui.QKeyEvent) -> str | None:
    """A key press as `AnswerKeys` and `[monitor.keys]` name it ("3", "L", "Return", "Ctrl+Z",
    "Alt+E", "F2", "Shift+F13", "PageDown"); None for keys that name nothing here."""
    key = _value(event.key())
    mods = event.modifiers()
    shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
    if _value(Qt.Key.Key_F1) <= key <= _value(Qt.Key.Key_F24):
        name = f"F{key - _value(Qt.Key.Key_F1) + 1}"
    elif key in _NAMES:
        name = _NAMES[key]
        shift = shift and name != "Backtab"
    elif _value(Qt.Key.Key_0) <= key <= _value(Qt.Key.Key_9) or (
        _value(Qt.Key.Key_A) <= key <= _value(Qt.Key.Key_Z)
    ):
        name, shift = chr(key), False  # a capital is the same key
    else:
        return None
    prefix = "Ctrl+" if mods & Qt.KeyboardModifier.ControlModifier else ""
    prefix += "Alt+" if mods & Qt.KeyboardModifier.AltModifier else ""
    prefix += "Shift+" if shift else ""
    return prefix + name


GRAMMAR_IN_FIELDS = ("Ctrl+Z", "Ctrl+Return")
"""Keys the grammar keeps while a text field has the focus (besides F-keys, Alt+ keys and the
configured pedal keys): withdraw and correct never edit the text."""


class _KeyFilter(QtCore.QObject):  # type: ignore[misc]
    """Routes key presses in the window: the focus model.

    The localization grammar has the keys unless a field has been entered on purpose (Tab: the
    answer's free text, N: a note, or a click or tap). In a field, printable keys type; Enter
    commits what the field is for (the answer, the note, the number) and gives the keys back,
    Escape gives them back keeping the text, and Ctrl+Z, Ctrl+Enter, F-keys, Alt+ keys and the
    configured pedal keys still do what they do everywhere: withdraw never undoes text.
    """

    def __init__(self, window: MonitorWindow) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if event.type() != QtCore.QEvent.Type.KeyPress or not isinstance(obj, QtWidgets.QWidget):
            return False
        window = self.window
        if obj.window() is not window:
            return False
        focus = QtWidgets.QApplication.focusWidget()
        if focus is None or focus.window() is not window:
            focus = window
        if obj is not focus:
            return False  # the same press on its way up to the parents: seen already
        window.keys_seen += 1
        name = key_name(event)
        if name is None:
            return False
        return bool(window.route_key(name, focus))


class MonitorWindow(QtWidgets.QMainWindow):  # type: ignore[misc]
    """The clinician's screen for one session."""

    def __init__(
        self,
        session: Session,
        autostart: bool = False,
        duration_s: float | None = None,
        script: Callable[[Session, threading.Event], None] | None = None,
        auto_close: bool | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.duration_s = duration_s
        # Closes by itself once the report is written: a run with a set end (the demo's
        # script, --duration), unless told otherwise.
        self.auto_close = (
            (duration_s is not None or script is not None) if auto_close is None else auto_close
        )
        self.script = script
        self.script_stop = threading.Event()
        self._script_thread: threading.Thread | None = None
        config = session.config
        self.setWindowTitle(f"needlelab · {config.session.patient_id}")
        self.resize(1500, 950)
        pg.setConfigOptions(antialias=False)

        self.localization = session.localization
        self.keys = AnswerKeys(self.localization)
        self.health = HealthTracker(session)
        self._last_event_id = 0
        self._last_health_ns = 0
        self._warnings: dict[str, str] = {}  # the latest operator warning of each code
        self._start_ns: int | None = None
        self._elapsed_s = 0.0
        self._stopped = False
        self._restored = False  # the entries were read back from the file after a failed write
        self.preview: Preview | None = None
        self.report_path: Path | None = None  # the report written after the stop
        self._report_thread: threading.Thread | None = None
        self._report_result: tuple[Path | None, str] | None = None
        self._close_in: int | None = None  # seconds until the window closes by itself
        self._close_timer = QtCore.QTimer(self)
        self._close_timer.timeout.connect(self._count_down)
        self.notes: list[MarkerEvent] = []  # every note recorded, oldest first
        self._shown_phase_kind = ""  # the right panel is scrolled to this phase's controls
        self.keys_seen = 0  # key presses delivered to this window (tests wait on it)
        pedal = config.monitor.keys  # [monitor.keys]: a foot pedal's keys stand for these
        self.pedal: dict[str, str] = {
            **dict.fromkeys(pedal.prompt, "Space"), **dict.fromkeys(pedal.commit, "Return"),
            **dict.fromkeys(pedal.correct, "Ctrl+Return"), **dict.fromkeys(pedal.undo, "Ctrl+Z"),
        }  # fmt: skip
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # where the keys go back to

        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        self.banner = QtWidgets.QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            f"background: {RED}; color: white; font-size: 16pt; font-weight: bold; padding: 6px"
        )
        self.banner.hide()
        outer.addWidget(self.banner)
        self.completion = CompletionPanel(self.keep_open, self.close)
        outer.addWidget(self.completion)
        self.recording_bar = RecordingBar(
            self.start_recording, self.toggle_pause, self.stop_recording
        )
        outer.addWidget(self.recording_bar)

        splitter = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        left = QtWidgets.QWidget()
        left_layout = QtWidgets.QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.traces = TracePanel(session.hub, config.monitor.window_s, config.monitor.rms)
        self.stim_label = StimReadout()  # every channel of every stimulator, a line each
        self.stim_label.setText(self.traces.stim_text())
        left_layout.addWidget(self.stim_label)
        left_layout.addWidget(self.traces, 1)
        left_layout.addWidget(self._trace_controls())
        splitter.addWidget(left)

        right = QtWidgets.QWidget()
        right_layout = QtWidgets.QVBoxLayout(right)
        self.device_caption = QtWidgets.QLabel("")
        self.device_caption.setWordWrap(True)
        right_layout.addWidget(self.device_caption)
        self.device_panel = DevicePanel()
        right_layout.addWidget(self.device_panel)
        self.protocol_panel = ProtocolPanel(session, self.message, self.release_when_done)
        right_layout.addWidget(self.protocol_panel)
        self.localization_panel = LocalizationPanel(self.keys, self.message, self.take_focus)
        self.localization_panel.show_extra_keys(pedal.prompt, pedal.commit)
        right_layout.addWidget(self.localization_panel)
        self.manual_panels: list[ManualStimPanel] = []
        right_layout.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys are the grammar's, not a scroll
        scroll.setWidgetResizable(True)
        # Never sideways: what is in the panel wraps or elides to its width (the layout tests
        # check that everything fits at 1366x768 and 1920x1080); it may scroll down.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(right)
        self.right_scroll = scroll
        self._right_layout = right_layout
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([880, 620])
        self.splitter = splitter
        outer.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage("ready: press Start (recording starts the devices)")

        self._key_filter = _KeyFilter(self)
        QtWidgets.QApplication.instance().installEventFilter(self._key_filter)
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(max(1, round(1000 / config.monitor.refresh_hz)))
        self.frames = 0  # redraws so far (benchmarks and tests read it)
        for spin in self.findChildren(QtWidgets.QAbstractSpinBox):
            self.release_when_done(spin)
        self.traces.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        if autostart:
            QtCore.QTimer.singleShot(0, self.start_recording)
        else:
            QtCore.QTimer.singleShot(0, self.start_preview)

    # -- keys --------------------------------------------------------------------------------------
    def route_key(self, name: str, focus: QtWidgets.QWidget) -> bool:
        """Do what key `name` means while `focus` has the focus; True if it was taken."""
        panel = self.localization_panel
        grammar = self.pedal.get(name)  # a pedal's key stands for a grammar key everywhere
        editable_combo = isinstance(focus, QtWidgets.QComboBox) and focus.isEditable()
        if not (
            isinstance(focus, QtWidgets.QLineEdit | QtWidgets.QAbstractSpinBox) or editable_combo
        ):
            if name in ("Tab", "Backtab"):  # the answer's text, never a walk through widgets
                if panel.text_edit.isEnabled():
                    panel.text_edit.setFocus(Qt.FocusReason.TabFocusReason)
                else:
                    self.message(f"{self.localization.closed}: nothing can be typed")
                return True
            if name == NOTE_KEY and panel.note_edit.isEnabled():
                panel.note_edit.setFocus(Qt.FocusReason.OtherFocusReason)
                return True
            return panel.press(grammar or name) is not None
        # A field has the focus: it types, except for what always means the same.
        answer_text = focus is panel.text_edit
        if grammar is not None or name in ("Ctrl+Z", "Ctrl+Return"):
            taken = panel.press(grammar or name) is not None
            if answer_text and (grammar or name) in ("Return", "Ctrl+Return"):
                self.take_focus()
            return taken or name == "Ctrl+Z"  # Ctrl+Z never undoes text
        if name == "Return":
            if answer_text:
                panel.press("Return")
                self.take_focus()
                return True
            if focus is panel.note_edit:
                panel.save_note()
                self.take_focus()
                return True
            QtCore.QTimer.singleShot(0, self.take_focus)  # a number: the field takes it first
            return False
        if name in ("Escape", "Tab", "Backtab"):
            self.take_focus()
            return True
        if name.startswith("Alt+") or (name.startswith("F") and name[1:].isdigit()):
            return panel.press(name) is not None
        return False

    def take_focus(self) -> None:
        """Give the keys back to the grammar (leave any field)."""
        self.setFocus(Qt.FocusReason.OtherFocusReason)

    def release_when_done(self, spin: QtWidgets.QAbstractSpinBox) -> None:
        """A number field is entered by a click only, and gives the keys back when done."""
        spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        spin.editingFinished.connect(partial(self._done_with, spin))

    def _done_with(self, field: QtWidgets.QWidget) -> None:
        # Later, not now: the Return that finished it is still on its way up to the parents,
        # and must not reach the grammar as a commit once the window has the focus back.
        if field.hasFocus():
            QtCore.QTimer.singleShot(0, self.take_focus)

    # -- controls ----------------------------------------------------------------------------------
    def _trace_controls(self) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(box)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(QtWidgets.QLabel("window"))
        window = QtWidgets.QComboBox()
        window.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        choices = sorted({*WINDOWS_S, int(self.traces.window_s)})
        window.addItems([f"{s} s" for s in choices])
        window.setCurrentText(f"{int(self.traces.window_s)} s")
        window.currentTextChanged.connect(self._set_window)
        row.addWidget(window)
        rms = QtWidgets.QCheckBox("RMS envelope")
        rms.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        rms.setChecked(self.traces.rms)
        rms.toggled.connect(self.traces.set_rms)
        row.addWidget(rms)
        self.channel_table = QtWidgets.QTableWidget(0, 3)
        self.channel_table.setHorizontalHeaderLabels(("show", "channel", "gain"))
        self.channel_table.verticalHeader().setVisible(False)
        self.channel_table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.channel_table.setMaximumHeight(110)
        # The names elide to the room they have (their tooltip has them whole): no row is two
        # lines tall, no horizontal scroll bar.
        self.channel_table.setWordWrap(False)
        self.channel_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.channel_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        header = self.channel_table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        row.addWidget(self.channel_table, 1)
        return box

    def _set_window(self, text: str) -> None:
        self.traces.set_window(min(float(text.split()[0]), self.session.hub.ring_seconds))

    def _sync_channel_table(self) -> None:
        lanes = self.traces.lanes
        for i in range(self.channel_table.rowCount(), len(lanes)):
            self.channel_table.insertRow(i)
            show = QtWidgets.QCheckBox()
            show.setChecked(True)
            show.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            show.toggled.connect(lambda on, i=i: self.traces.set_lane(i, visible=on))
            gain = QtWidgets.QComboBox()
            gain.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            gain.addItems([f"×{g:g}" for g in GAINS])
            gain.setCurrentText("×1")
            gain.currentIndexChanged.connect(lambda k, i=i: self.traces.set_lane(i, gain=GAINS[k]))
            self.channel_table.setCellWidget(i, 0, show)
            name = QtWidgets.QTableWidgetItem(lanes[i].name)
            name.setToolTip(lanes[i].name)
            self.channel_table.setItem(i, 1, name)
            self.channel_table.setCellWidget(i, 2, gain)

    def message(self, text: str) -> None:
        """Show a short message in the status bar."""
        self.statusBar().showMessage(text, 8000)

    # -- preview ---------------------------------------------------------------------------------
    def start_preview(self) -> None:
        """Connect the devices to look at them before anything is recorded."""
        if self.session.recording or self._stopped or self.preview is not None:
            return
        if not any(d.kind != "stim_manual" for d in self.session.config.devices):
            return  # nothing to connect
        self.preview = Preview(self.session)
        self.preview.start()
        self._watch(self.preview.hub)
        self.device_caption.setText(
            "PREVIEW: the devices are connected to check them; nothing is recorded until Start"
        )
        self.device_caption.setStyleSheet("color: white; background: #1565c0; padding: 3px")
        self.statusBar().showMessage("preview: nothing is recorded until you press Start")

    def _watch(self, hub: Any) -> None:
        """Show the devices that write to `hub` (the preview's, then the recording's)."""
        self.traces.set_hub(hub)
        self.health = HealthTracker(self.session, hub)
        self._last_event_id = 0

    def _end_preview(self) -> None:
        preview, self.preview = self.preview, None
        if preview is not None:
            preview.stop()  # the recording connects its own devices to the same links
            self._watch(self.session.hub)
        self.device_caption.setText("")
        self.device_caption.setStyleSheet("")

    # -- recording ---------------------------------------------------------------------------------
    def start_recording(self) -> None:
        """Start the session: the file, the simulators and the devices."""
        if self.session.recording or self._stopped:
            return
        self._end_preview()
        try:
            self.session.start()
        except Exception as exc:  # a config that cannot start: say so, keep the window
            self.show_banner(f"cannot start recording: {exc}")
            return
        self._start_ns = self.session.clock.now_ns()
        for device in self.session.devices.values():
            if isinstance(device, ManualStimulator):
                panel = ManualStimPanel(device, self.message)
                for spin in panel.findChildren(QtWidgets.QAbstractSpinBox):
                    self.release_when_done(spin)
                self.manual_panels.append(panel)
                self._right_layout.insertWidget(self._right_layout.count() - 1, panel)
        if self.script is not None:
            self._script_thread = threading.Thread(
                target=self.script, args=(self.session, self.script_stop), daemon=True,
                name="monitor-script",
            )  # fmt: skip
            self._script_thread.start()
        if self.duration_s is not None:
            QtCore.QTimer.singleShot(round(self.duration_s * 1000), self.stop_recording)
        self.message(f"recording to {self.session.path}")
        self._entry_changed()
        self._refresh_health()

    def toggle_pause(self) -> None:
        """Pause or resume (recorded as events; data keep being written)."""
        if self.session.paused:
            self.session.resume()
        else:
            self.session.pause()

    def stop_recording(self, reason: str = "stopped from the monitor", report: bool = True) -> None:
        """Stop the devices and close the file cleanly, then say so and (with `report`) write
        the report; the window stays open to look at unless it closes by itself."""
        if not self.session.recording:
            return
        self.script_stop.set()
        script = self._script_thread
        if script is not None:  # what it is entering goes in before the file closes
            script.join(timeout=5.0)
        self.session.stop(reason)
        self._stopped = True
        self.traces.end_at(self.session.clock.now_ns() / 1e9)
        self.refresh()
        self._entry_changed()
        from needlelab.record import verify_report

        try:
            ok = verify_report(self.session.path)["ok"]
        except Exception as exc:  # report it; the file is what it is
            self.show_banner(f"saved {self.session.path}, but it does not verify: {exc}")
            ok = None
        verdict = {True: "it verifies", False: "it does NOT verify: run needlelab verify on it",
                   None: "it could not be checked"}[ok]  # fmt: skip
        self.message(f"saved {self.session.path}; {verdict}")
        run = self.session.protocol_run
        done = run is not None and run.finished
        title = "Session complete" if done else "Recording stopped"
        if self.session.error:
            title = "Recording stopped by a fault"
        self.completion.show_end(
            f"{title}: {self.session.config.session.patient_id}",
            f"saved {self.session.path} ({verdict})" + ("; writing the report…" if report else ""),
        )
        if report:
            self._write_report()

    def _write_report(self) -> None:
        """The session's report, written by `needlelab report` in a child process (matplotlib
        and the scoring stay out of the GUI's process and thread)."""
        path = self.session.path

        def write() -> None:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "needlelab.cli", "report", str(path)],
                    capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._report_result = (None, f"no report: {exc}")
                return
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines and lines[-1].startswith("report: "):
                self._report_result = (Path(lines[-1].removeprefix("report: ")), "")
            else:
                why = (done.stderr.strip().splitlines() or ["it failed"])[-1]
                self._report_result = (None, f"no report: {why}")

        self._report_thread = threading.Thread(target=write, name="monitor-report", daemon=True)
        self._report_thread.start()

    def _report_done(self) -> None:
        """The report's child is done: offer the report, and close if this window does."""
        assert self._report_result is not None
        self._report_thread = None
        report, problem = self._report_result
        self.report_path = report
        saved = f"saved {self.session.path}"
        if report is not None:
            self.completion.show_report(str(report), f"{saved}; report: {report}")
            self.message(f"report: {report}")
        else:
            self.completion.show_report(None, f"{saved}; {problem}")
        if self.auto_close:
            self._close_in = AUTO_CLOSE_S
            self.completion.show_countdown(self._close_in)
            self._close_timer.start(1000)

    def _count_down(self) -> None:
        if self._close_in is None:
            return
        self._close_in -= 1
        if self._close_in <= 0:
            self._close_timer.stop()
            self.close()
        else:
            self.completion.show_countdown(self._close_in)

    def keep_open(self) -> None:
        """Do not close by itself after all."""
        self._close_timer.stop()
        self._close_in = None
        self.completion.show_countdown(None)

    def _entry_changed(self) -> None:
        """Recording started or ended: entry goes on or off, and says so."""
        self.localization_panel.show_state()
        self.protocol_panel.setEnabled(self.session.recording)
        for panel in self.manual_panels:
            panel.setEnabled(self.session.recording)
        if not self.session.recording:
            self.take_focus()  # out of any field: there is nothing to type into now

    def _restore_from_file(self) -> None:
        """After a failed write: show the entries the file holds, read back from it (the last
        ones taken may not have reached it)."""
        from needlelab.record import open_session

        self._restored = True
        try:
            with open_session(self.session.path) as recorded:
                events = recorded.events()
        except Exception as exc:  # the file may be unreadable too: say so, show nothing
            self.message(f"cannot read back {self.session.path}: {exc}")
            events = []
        self.localization.restore(events)
        self.notes = [e for e in events if isinstance(e, MarkerEvent)]
        self.localization_panel.show_notes(self.notes)
        self._entry_changed()

    def _report_done_quietly(self) -> None:
        assert self._report_result is not None
        self.report_path = self._report_result[0]
        self._report_thread = None

    def show_banner(self, text: str) -> None:
        """A red banner across the top; empty text hides it."""
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        """Shown: the keys start with the grammar."""
        super().showEvent(event)
        self.take_focus()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        """Closing the window mid-recording stops and closes the session file cleanly (a
        report under way is waited for)."""
        self.timer.stop()
        self._close_timer.stop()
        self._end_preview()
        self.stop_recording("monitor closed", report=False)
        if not self._stopped:
            self.session.stop()  # never recorded: the preview's simulators
        if self._report_thread is not None:
            self._report_thread.join(120.0)
            if self._report_result is not None:
                self._report_done_quietly()
        QtWidgets.QApplication.instance().removeEventFilter(self._key_filter)
        event.accept()

    # -- the tick ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pull what is new from the hub and redraw."""
        session = self.session
        now_ns = session.clock.now_ns()
        touched_localization = touched_protocol = False
        hub = self.preview.hub if self.preview is not None else session.hub
        for event in hub.recent_events(after_id=self._last_event_id):
            self._last_event_id = event.id
            self.traces.add_event(event)
            self.health.take_event(event)
            if isinstance(event, WarningEvent):  # a deliberate choice is told, not flagged red
                if event.details.get("cleared"):  # over (the disk caught up): off the banner
                    self._warnings.pop(event.code, None)
                    self.message(event.message)
                elif event.details.get("deliberate"):
                    self.message(event.message)
                else:
                    self._warnings[event.code] = event.message
            if isinstance(event, NeedleSiteEvent | PromptEvent | ResponseEvent | CorrectionEvent):
                touched_localization = True
            if isinstance(event, MarkerEvent) and not self._restored:
                self.notes.append(event)
                self.localization_panel.show_notes(self.notes)
            touched_protocol |= isinstance(event, PhaseEvent | TpdTrialEvent | ProtocolEvent)
        if touched_localization:
            self.localization_panel.show_state()
        if touched_protocol:
            self.protocol_panel.show_state()
            self._show_the_phase()
        self.traces.refresh(now_ns / 1e9)
        if self._stopped:
            # The last setting read is not the stimulator's now.
            self.stim_label.setText(STOPPED_STIM)
        else:
            lines = self.traces.stim_lines() or [(self.traces.stim_text(), AMBER)]
            if self.preview is not None:
                lines.insert(0, ("PREVIEW (not recorded)", BLUE))
            self.stim_label.show_lines(lines)
        self._sync_channel_table()
        script = self._script_thread
        run = session.protocol_run
        if session.recording and run is not None and run.finished:
            self.stop_recording("protocol complete")  # the last phase is done: so is the session
        elif script is not None and not script.is_alive() and self.duration_s is None:
            self._script_thread = None  # the script ran to its end: so does the recording
            self.stop_recording("the script ended")
        if self._report_thread is not None and not self._report_thread.is_alive():
            self._report_done()
        if now_ns - self._last_health_ns >= HEALTH_EVERY_S * 1e9:
            self._last_health_ns = now_ns
            self._refresh_health()
            self.protocol_panel.tick()
        self.frames += 1

    def _show_the_phase(self) -> None:
        """Scroll the right panel to what the phase is done with: on a short screen (1366x768)
        the panel is taller than the window, and the answer's buttons are below the protocol's."""
        run = self.session.protocol_run
        phase = run.phase if run is not None else None
        kind = phase.kind if phase is not None else ""
        if kind == self._shown_phase_kind:
            return
        self._shown_phase_kind = kind
        # Once the panels have their new sizes (the protocol's page changed): a posted call.
        if kind == "needling":  # prompt to commit in view (the protocol's line may scroll off)
            commit = self.localization_panel.commit_button
            # 32 px to spare: the protocol's lines above may wrap to one more line later.
            QtCore.QTimer.singleShot(
                0, lambda: self.right_scroll.ensureWidgetVisible(commit, 0, 32)
            )
        else:
            QtCore.QTimer.singleShot(0, lambda: self.right_scroll.verticalScrollBar().setValue(0))

    def _refresh_health(self) -> None:
        session = self.session
        state = "ready"
        if session.recording:
            state = "paused" if session.paused else "recording"
        elif self._stopped:
            state = "stopped"
        if session.recording and self._start_ns is not None:
            self._elapsed_s = (session.clock.now_ns() - self._start_ns) / 1e9
        if self.preview is not None:
            state = "preview"
        file = session.path.name if self._start_ns is not None else ""
        self.recording_bar.show_state(state, self._elapsed_s, file)
        if self.preview is not None:
            self._show_health(list(self.preview.devices.values()), self.preview.error)
            return
        if self._stopped:
            self.device_panel.show_stopped()
        if session.error and not self._restored:
            self._restore_from_file()
        if not session.recording:  # no device is read: no live warning stands either
            self.show_banner(f"recording stopped: {session.error}" if session.error else "")
            return
        self._show_health(list(session.devices.values()), session.error)

    def _show_health(self, devices: list[Any], error: str | None) -> None:
        health = [self.health.health(d) for d in devices]
        self.device_panel.show_health(health)
        problems = [h.problem for h in health if not h.healthy] + list(self._warnings.values())
        if error:
            problems.insert(0, error if self.preview is not None else f"recording stopped: {error}")
        self.show_banner("\n".join(problems))
