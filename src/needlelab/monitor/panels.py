"""The monitor's side panels: recording controls, device health, needling and localization, and
manual stimulator entry. Widgets only; what they do goes through the session, the localization
log and the manual stimulator, which record it as events.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.clinic.localization import (
    ANSWER_SIDE_KEYS,
    LEVEL_KEYS,
    SITE_SIDE_KEYS,
    AnswerKeys,
    format_accuracy,
)
from needlelab.devices.stim_manual import MODES, WAVEFORMS, ManualStimulator
from needlelab.events import ResponseEvent
from needlelab.monitor.health import DeviceHealth

Qt = QtCore.Qt
RED, GREEN, AMBER, GREY = "#c62828", "#2e7d32", "#ef6c00", "#616161"


def button(text: str, on_click: Callable[[], object], tip: str = "") -> QtWidgets.QPushButton:
    """A button that never takes keyboard focus: keys belong to the localization grammar."""
    widget = QtWidgets.QPushButton(text)
    widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    widget.clicked.connect(lambda _checked=False: on_click())
    if tip:
        widget.setToolTip(tip)
    return widget


def big_label(text: str = "", size: int = 16) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel(text)
    font = label.font()
    font.setPointSize(size)
    font.setBold(True)
    label.setFont(font)
    return label


class RecordingBar(QtWidgets.QWidget):  # type: ignore[misc]
    """Start, pause/resume and stop; elapsed time; the file; a recording indicator."""

    def __init__(
        self,
        on_start: Callable[[], None],
        on_pause: Callable[[], None],
        on_stop: Callable[[], None],
    ) -> None:
        super().__init__()
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.indicator = big_label("● READY", 14)
        self.elapsed = big_label("00:00", 14)
        self.file = QtWidgets.QLabel("")
        self.file.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.start_button = button("Start", on_start, "start recording")
        self.pause_button = button("Pause", on_pause, "mark a pause (data keep being written)")
        self.stop_button = button("Stop", on_stop, "stop and close the session file")
        for widget in (self.indicator, self.elapsed, self.start_button, self.pause_button):
            layout.addWidget(widget)
        layout.addWidget(self.stop_button)
        layout.addWidget(self.file, 1)
        self.show_state("ready", 0.0, "")

    def show_state(self, state: str, elapsed_s: float, file: str) -> None:
        """state: ready, recording, paused or stopped."""
        colour = {"recording": RED, "paused": AMBER, "stopped": GREY}.get(state, GREY)
        self.indicator.setText(f"● {state.upper()}")
        self.indicator.setStyleSheet(f"color: {colour}")
        minutes, seconds = divmod(int(elapsed_s), 60)
        self.elapsed.setText(f"{minutes:02d}:{seconds:02d}")
        self.file.setText(file)
        self.start_button.setEnabled(state == "ready")
        self.pause_button.setEnabled(state in ("recording", "paused"))
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.stop_button.setEnabled(state in ("recording", "paused"))


class DevicePanel(QtWidgets.QTableWidget):  # type: ignore[misc]
    """One row per device: state, rate, losses, battery, clock, last seen; red when unhealthy."""

    COLUMNS = ("device", "state", "rate / nominal", "lost", "battery", "clock ±", "last seen")

    def __init__(self) -> None:
        super().__init__(0, len(self.COLUMNS))
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.horizontalHeader().setSectionResizeMode(
            QtWidgets.QHeaderView.ResizeMode.ResizeToContents
        )
        self.rows: dict[str, int] = {}

    def show_health(self, health: list[DeviceHealth]) -> None:
        """Update every row."""
        for h in health:
            if h.name not in self.rows:
                self.rows[h.name] = self.rowCount()
                self.insertRow(self.rowCount())
            row = self.rows[h.name]
            rate = "—"
            if h.nominal_hz:
                shown = "…" if h.rate_hz is None else f"{h.rate_hz:.0f}"
                rate = f"{shown} / {h.nominal_hz:g} Hz"
            cells = (
                h.name,
                h.state,
                rate,
                str(h.lost),
                "—" if h.battery_pct is None else f"{h.battery_pct:.0f} %",
                "—" if h.clock_ms is None else f"{h.clock_ms:.2f} ms",
                "—" if h.last_seen_s is None else f"{h.last_seen_s:.1f} s",
            )
            colour = QtGui.QColor(RED if not h.healthy else "#1b1b1b")
            for col, text in enumerate(cells):
                item = self.item(row, col)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.setItem(row, col, item)
                item.setText(text)
                item.setBackground(colour)
                item.setForeground(QtGui.QColor("#ffffff"))

    def row_is_red(self, name: str) -> bool:
        """Whether a device's row shows it as unhealthy (for tests and screenshots)."""
        item = self.item(self.rows[name], 0)
        return item is not None and item.background().color().name() == QtGui.QColor(RED).name()


class LocalizationPanel(QtWidgets.QWidget):  # type: ignore[misc]
    """The needle site, the prompt, and the answer: level, side and descriptor buttons (each
    the same as its key), free text, commit/correct/undo, the running accuracy and the last
    answers."""

    def __init__(self, keys: AnswerKeys, on_message: Callable[[str], None]) -> None:
        super().__init__()
        self.keys = keys
        self.on_message = on_message
        log = keys.log
        layout = QtWidgets.QVBoxLayout(self)

        site_box = QtWidgets.QGroupBox("Needle site  (Alt+1…0 level, Alt+L/R/M side, Alt+E e-stim)")
        site = QtWidgets.QGridLayout(site_box)
        self.site_label = big_label("no site set", 15)
        site.addWidget(self.site_label, 0, 0, 1, 5)
        self.region_combo = QtWidgets.QComboBox()
        self.region_combo.addItems(list(log.config.regions))
        self.region_combo.setCurrentText(log.region)
        self.region_combo.setVisible(len(log.config.regions) > 1)
        self.level_combo = QtWidgets.QComboBox()
        self.level_combo.addItems(log.levels)
        self.side_combo = QtWidgets.QComboBox()
        self.side_combo.addItems(list(SITE_SIDE_KEYS.values()))
        self.muscle_combo = QtWidgets.QComboBox()
        self.muscle_combo.setEditable(True)
        self.muscle_combo.addItems(log.config.muscles)
        self.estim_check = QtWidgets.QCheckBox("e-stim on")
        self.site_widgets = (
            self.region_combo, self.level_combo, self.side_combo, self.muscle_combo,
            self.estim_check,
        )  # fmt: skip
        for col, widget in enumerate(self.site_widgets):
            site.addWidget(widget, 1, col)
        # Every change of the site is a `needle.site` event at once: no "apply" step to forget.
        self.region_combo.currentTextChanged.connect(self._region_changed)
        self.level_combo.currentTextChanged.connect(self._apply_site)
        self.side_combo.currentTextChanged.connect(self._apply_site)
        self.muscle_combo.activated.connect(self._apply_site)
        line = self.muscle_combo.lineEdit()
        if line is not None:
            line.editingFinished.connect(self._apply_site)
        self.estim_check.toggled.connect(self._apply_site)
        layout.addWidget(site_box)

        answer_box = QtWidgets.QGroupBox(
            "Answer  (Space prompt · level key · L/R/B/U · Enter; Ctrl+Enter correct, Ctrl+Z undo)"
        )
        answer = QtWidgets.QVBoxLayout(answer_box)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(button("Prompt  [Space]", partial(self.press, "Space")))
        self.draft_label = big_label("", 14)
        top.addWidget(self.draft_label, 1)
        answer.addLayout(top)
        self.level_grid = QtWidgets.QGridLayout()
        self.level_buttons: list[QtWidgets.QPushButton] = []
        self._level_buttons()
        answer.addLayout(self.level_grid)
        sides = QtWidgets.QHBoxLayout()
        for key, side in ANSWER_SIDE_KEYS.items():
            sides.addWidget(button(f"{key}  {side}", partial(self.press, key)))
        answer.addLayout(sides)
        words = QtWidgets.QGridLayout()
        for i, word in enumerate(log.config.descriptors):
            key = f"F{i + 1}"
            words.addWidget(button(f"{key} {word}", partial(self.press, key)), i // 4, i % 4)
        answer.addLayout(words)
        self.text_edit = QtWidgets.QLineEdit()
        self.text_edit.setPlaceholderText("free text (optional); Enter commits")
        self.text_edit.textEdited.connect(self._text_edited)
        self.text_edit.returnPressed.connect(partial(self.press, "Return"))
        answer.addWidget(self.text_edit)
        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(button("Commit  [Enter]", partial(self.press, "Return")))
        actions.addWidget(button("Correct last  [Ctrl+Enter]", partial(self.press, "Ctrl+Return")))
        actions.addWidget(button("Undo last  [Ctrl+Z]", partial(self.press, "Ctrl+Z")))
        answer.addLayout(actions)
        self.accuracy_label = QtWidgets.QLabel("no answers yet")
        answer.addWidget(self.accuracy_label)
        self.answers = QtWidgets.QListWidget()
        self.answers.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.answers.setMaximumHeight(140)
        answer.addWidget(self.answers)
        layout.addWidget(answer_box)
        self.show_state()

    def press(self, key: str) -> str | None:
        """Feed one key (or button) to the grammar and show the result."""
        message = self.keys.press(key)
        if message is not None:
            self.on_message(message)
            if key in ("Return", "Enter", "Ctrl+Return", "Ctrl+Enter", "Escape"):
                self.text_edit.clear()
            self.show_state()
        return message

    def _text_edited(self, text: str) -> None:
        self.keys.draft.text = text
        self.show_state()

    def _level_buttons(self) -> None:
        """One button per level of the region in use (they change with the region)."""
        for old in self.level_buttons:
            self.level_grid.removeWidget(old)
            old.deleteLater()
        self.level_buttons = [
            button(f"{key}  {level}", partial(self.press, key))
            for key, level in zip(LEVEL_KEYS, self.keys.log.levels, strict=False)
        ]
        for i, level_button in enumerate(self.level_buttons):
            self.level_grid.addWidget(level_button, i // 5, i % 5)

    def _region_changed(self, region: str) -> None:
        self.keys.log.region = region
        self.level_combo.blockSignals(True)
        self.level_combo.clear()
        self.level_combo.addItems(self.keys.log.levels)
        self.level_combo.blockSignals(False)
        self._level_buttons()
        self._apply_site()

    def _apply_site(self, *_args: object) -> None:
        """The site the widgets show becomes the site in force."""
        site = self.keys.log.set_site(
            region=self.region_combo.currentText(),
            level=self.level_combo.currentText(),
            side=SITE_SIDE_KEYS[self.side_combo.currentText()[0].upper()],
            muscle=self.muscle_combo.currentText(),
            estim_on=self.estim_check.isChecked(),
        )
        self.on_message(f"site {site.region} {site.level} {site.side}")
        self.show_state()

    def show_state(self) -> None:
        """Show the site in force, the draft, the accuracy and the last answers."""
        log = self.keys.log
        site = log.site
        if site is not None:
            estim = " · e-stim ON" if site.estim_on else ""
            self.site_label.setText(f"{site.level} {site.side} {site.muscle}{estim}")
            for widget in self.site_widgets:
                widget.blockSignals(True)
            self.region_combo.setCurrentText(site.region)
            shown = [self.level_combo.itemText(i) for i in range(self.level_combo.count())]
            if shown != log.levels:  # the region changed elsewhere (a key, a script)
                self.level_combo.clear()
                self.level_combo.addItems(log.levels)
                self._level_buttons()
            self.level_combo.setCurrentText(site.level)
            self.side_combo.setCurrentText(site.side)
            self.muscle_combo.setCurrentText(site.muscle)
            self.estim_check.setChecked(site.estim_on)
            for widget in self.site_widgets:
                widget.blockSignals(False)
        draft = self.keys.draft
        prompt = "● asked" if log.pending_prompt is not None else ""
        words = ", ".join(w for w in log.config.descriptors if w in draft.descriptors)
        self.draft_label.setText(
            f"{prompt}  level {draft.level or '–'} · side {draft.side or '–'}"
            + (f" · {words}" if words else "")
        )
        self.accuracy_label.setText(format_accuracy(log.accuracy()))
        self.answers.clear()
        for response in reversed(log.responses[-8:]):
            self.answers.addItem(_answer_line(response))


def _answer_line(r: ResponseEvent) -> str:
    score = []
    if r.level_error is not None:
        score.append(f"level {r.level_error:+d}")
    if r.side_correct is not None:
        score.append("side ✓" if r.side_correct else "side ✗")
    latency = "" if r.latency_ms is None else f" in {r.latency_ms / 1000:.1f} s"
    words = f" · {', '.join(r.descriptors)}" if r.descriptors else ""
    return f"#{r.id} {r.level or '?'} {r.side or '?'}{latency} ({', '.join(score)}){words}"


class ManualStimPanel(QtWidgets.QGroupBox):  # type: ignore[misc]
    """Settings of a stimulator with no port, entered by hand; each change is recorded at once."""

    WAVEFORMS = WAVEFORMS  # the names manual entry takes, wherever it is typed
    MODES = MODES

    def __init__(self, device: ManualStimulator, on_message: Callable[[str], None]) -> None:
        super().__init__(f"Stimulator {device.name} (manual entry)")
        self.device = device
        self.on_message = on_message
        form = QtWidgets.QFormLayout(self)
        current = device.current()
        self.intensity = self._spin(0, 200, 0.5, current.intensity_ma, " mA")
        self.frequency = self._spin(0, 10_000, 1, current.frequency_hz, " Hz")
        self.pulse_width = self._spin(0, 10_000, 10, current.pulse_width_us, " µs")
        self.waveform = QtWidgets.QComboBox()
        self.waveform.addItems(self.WAVEFORMS)
        self.waveform.setCurrentText(current.waveform)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(self.MODES)
        self.mode.setCurrentText(current.mode)
        self.output = QtWidgets.QCheckBox("output on")
        self.output.setChecked(current.output_on)
        form.addRow("intensity", self.intensity)
        form.addRow("frequency", self.frequency)
        form.addRow("pulse width", self.pulse_width)
        form.addRow("waveform", self.waveform)
        form.addRow("mode", self.mode)
        form.addRow(self.output)
        self.intensity.editingFinished.connect(
            lambda: self._set(intensity_ma=self.intensity.value())
        )
        self.frequency.editingFinished.connect(
            lambda: self._set(frequency_hz=self.frequency.value())
        )
        self.pulse_width.editingFinished.connect(
            lambda: self._set(pulse_width_us=self.pulse_width.value())
        )
        self.waveform.currentTextChanged.connect(lambda text: self._set(waveform=text))
        self.mode.currentTextChanged.connect(lambda text: self._set(mode=text))
        self.output.toggled.connect(lambda on: self._set(output_on=on))

    @staticmethod
    def _spin(lo: float, hi: float, step: float, value: float, suffix: str) -> QtWidgets.QWidget:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setDecimals(1)
        spin.setValue(value)
        spin.setSuffix(suffix)
        spin.setKeyboardTracking(False)
        return spin

    def _set(self, **change: Any) -> None:
        if self.device.current().model_dump().items() >= change.items():
            return  # nothing changed (focus left a spin box without an edit)
        settings = self.device.set(**change)
        self.on_message(
            f"{self.device.name}: {settings.intensity_ma:g} mA, {settings.frequency_hz:g} Hz, "
            f"{settings.pulse_width_us:g} µs, output {'on' if settings.output_on else 'off'}"
        )
