"""The monitor's side panels: recording controls, device health, needling and localization, and
manual stimulator entry. Widgets only; what they do goes through the session, the localization
log and the manual stimulator, which record it as events.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.clinic.localization import (
    ANSWER_SIDE_KEYS,
    SITE_SIDE_KEYS,
    AnswerKeys,
    EntryRefused,
    format_accuracy,
)
from needlelab.devices.stim_manual import MODES, WAVEFORMS, ManualStimulator
from needlelab.events import MarkerEvent, ResponseEvent
from needlelab.monitor.health import DeviceHealth

Qt = QtCore.Qt
RED, GREEN, AMBER, GREY, BLUE = "#c62828", "#2e7d32", "#ef6c00", "#616161", "#1565c0"
TOUCH_PX = 48  # the least height of a control an assistant taps (about 9 mm at 96 dpi)
BIG_TOUCH_PX = 64  # prompt and commit: the two taps of every answer


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


def wrapped(text: str = "") -> QtWidgets.QLabel:
    """A label that wraps its words to the width it is given (it never widens the panel)."""
    label = QtWidgets.QLabel(text)
    label.setWordWrap(True)
    return label


class ElidedLabel(QtWidgets.QLabel):  # type: ignore[misc]
    """A one-line label that shows as much of its text as fits, with "…" in the middle, and the
    whole text as its tooltip: a long file name or device line never widens the window.

    Its `elides` property says so (the layout tests take its clipping as by design)."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setProperty("elides", True)
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.setText(text)

    def setText(self, text: str) -> None:
        """Show `text` (elided to the width), all of it in the tooltip."""
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(
            self.fontMetrics().horizontalAdvance("…") * 4, super().sizeHint().height()
        )

    def shown_text(self) -> str:
        """The text as drawn (elided to the width)."""
        return str(
            self.fontMetrics().elidedText(
                self.text(), Qt.TextElideMode.ElideMiddle, self.contentsRect().width()
            )
        )

    def paintEvent(self, _event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.setPen(self.palette().color(QtGui.QPalette.ColorRole.WindowText))
        painter.setFont(self.font())
        painter.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())
        painter.end()


class CurrentPageStack(QtWidgets.QWidget):  # type: ignore[misc]
    """Pages of which one is shown, taking the size of that page only (`addWidget`,
    `setCurrentWidget`, `currentWidget` as QStackedWidget's). Qt's QStackedWidget is as tall
    as its tallest page's wrapped text, whichever is shown: that left the protocol panel
    mostly blank and pushed the answer panel off a 768-pixel screen. Here the pages not shown
    are hidden in a plain layout, which leaves them out of its size."""

    def __init__(self) -> None:
        super().__init__()
        self._layout = QtWidgets.QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._pages: list[QtWidgets.QWidget] = []
        self._current: QtWidgets.QWidget | None = None

    def addWidget(self, page: QtWidgets.QWidget) -> None:
        """Add a page (the first is shown until another is)."""
        self._pages.append(page)
        self._layout.addWidget(page)
        page.setVisible(self._current is None)
        self._current = self._current or page

    def setCurrentWidget(self, page: QtWidgets.QWidget) -> None:
        """Show `page` (one added before) and hide the others."""
        self._current = page
        for other in self._pages:
            other.setVisible(other is page)

    def currentWidget(self) -> QtWidgets.QWidget | None:
        """The page shown."""
        return self._current


class StimReadout(QtWidgets.QWidget):  # type: ignore[misc]
    """The stimulators' settings in large type: one line per channel of every stimulator, in
    the colour of its curves (two columns and smaller type beyond two channels). Each line
    starts with its output state, so the line elided at a narrow width keeps what matters."""

    def __init__(self) -> None:
        super().__init__()
        self._grid = QtWidgets.QGridLayout(self)
        self._grid.setContentsMargins(4, 0, 4, 0)
        self._grid.setVerticalSpacing(0)
        self.labels: list[ElidedLabel] = []
        self._shown: list[tuple[str, str]] = []
        self.setText("")

    def text(self) -> str:
        """What the read-out says, a line per channel."""
        return "\n".join(label.text() for label in self.labels)

    def setText(self, text: str) -> None:
        """Show `text` (lines) in the read-out's colour."""
        self.show_lines([(line, AMBER) for line in text.split("\n")])

    def show_lines(self, lines: list[tuple[str, str]]) -> None:
        """Show (line, colour) pairs."""
        if lines == self._shown:
            return
        self._shown = list(lines)
        while len(self.labels) > len(lines):
            old = self.labels.pop()
            self._grid.removeWidget(old)
            old.deleteLater()
        columns = 1 if len(lines) <= 2 else 2
        size = 15 if columns == 1 else 12
        for i, (line, colour) in enumerate(lines):
            if i == len(self.labels):
                self.labels.append(ElidedLabel())
            label = self.labels[i]
            font = label.font()
            font.setPointSize(size)
            font.setBold(True)
            label.setFont(font)
            label.setStyleSheet(f"color: {colour}")
            label.setText(line)
            self._grid.addWidget(label, i // columns, i % columns)


class RecordingBar(QtWidgets.QWidget):  # type: ignore[misc]
    """Start, pause/resume and stop; elapsed time; the file; a recording indicator."""

    STATES: ClassVar[dict[str, str]] = {
        "ready": "READY", "preview": "PREVIEW · NOT RECORDING", "recording": "RECORDING",
        "paused": "PAUSED", "stopped": "STOPPED",
    }  # fmt: skip

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
        self.file = ElidedLabel("")
        self.start_button = button("Start", on_start, "start recording")
        self.pause_button = button("Pause", on_pause, "mark a pause (data keep being written)")
        self.stop_button = button("Stop", on_stop, "stop and close the session file")
        # Fixed slots, as wide as their widest text: nothing moves when the state changes (a
        # tap aimed at Pause must not land on Stop).
        metrics = self.indicator.fontMetrics()
        widest = max(metrics.horizontalAdvance(f"● {t}") for t in self.STATES.values())
        self.indicator.setFixedWidth(widest + 12)
        self.elapsed.setFixedWidth(self.elapsed.fontMetrics().horizontalAdvance("000:00") + 12)
        metrics = self.pause_button.fontMetrics()
        text_px = max(metrics.horizontalAdvance(t) for t in ("Start", "Pause", "Resume", "Stop"))
        for control in (self.start_button, self.pause_button, self.stop_button):
            control.setFixedSize(max(TOUCH_PX * 2, text_px + 32), TOUCH_PX)
        for widget in (self.indicator, self.elapsed, self.start_button, self.pause_button):
            layout.addWidget(widget)
        layout.addWidget(self.stop_button)
        layout.addWidget(self.file, 1)
        self.show_state("ready", 0.0, "")

    def show_state(self, state: str, elapsed_s: float, file: str) -> None:
        """state: ready, preview (devices connected, nothing recorded), recording, paused or
        stopped."""
        colour = {"recording": RED, "paused": AMBER, "preview": BLUE}.get(state, GREY)
        shown = self.STATES.get(state, state.upper())
        self.indicator.setText(f"● {shown}")
        self.indicator.setStyleSheet(f"color: {colour}")
        minutes, seconds = divmod(int(elapsed_s), 60)
        self.elapsed.setText(f"{minutes:02d}:{seconds:02d}")
        self.file.setText(file)
        self.start_button.setEnabled(state in ("ready", "preview"))
        self.pause_button.setEnabled(state in ("recording", "paused"))
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.stop_button.setEnabled(state in ("recording", "paused"))


class DevicePanel(QtWidgets.QTableWidget):  # type: ignore[misc]
    """One row per device: state, rate, losses, battery, clock, last seen; red when unhealthy."""

    COLUMNS = ("device", "state", "rate / nominal", "lost", "battery", "clock ±", "last seen")
    TIPS = (
        "", "", "samples that arrived over the last 5 s, per second / the sensor's nominal rate",
        "samples lost so far", "", "the clock model's uncertainty", "since its last data",
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(0, len(self.COLUMNS))
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        for col, tip in enumerate(self.TIPS):
            if tip:
                self.horizontalHeaderItem(col).setToolTip(tip)
        # As tall as its rows (no empty space, no scroll bar); never a horizontal scroll bar.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Fixed
        )
        self.rows: dict[str, int] = {}
        self._fit_height()

    def _fit_height(self) -> None:
        rows = max(1, self.rowCount())
        self.setFixedHeight(
            self.horizontalHeader().sizeHint().height()
            + rows * self.verticalHeader().defaultSectionSize()
            + 2 * self.frameWidth()
        )

    def show_health(self, health: list[DeviceHealth]) -> None:
        """Update every row."""
        for h in health:
            if h.name not in self.rows:
                self.rows[h.name] = self.rowCount()
                self.insertRow(self.rowCount())
                self._fit_height()
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

    def show_stopped(self) -> None:
        """The recording stopped: every device disconnected, no figure left standing as if live."""
        for name, row in self.rows.items():
            cells = (name, "disconnected", *["—"] * (len(self.COLUMNS) - 2))
            for col, text in enumerate(cells):
                item = self.item(row, col)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.setItem(row, col, item)
                item.setText(text)
                item.setBackground(QtGui.QColor(GREY))
                item.setForeground(QtGui.QColor("#ffffff"))

    def row_texts(self, name: str) -> list[str]:
        """A device's row as shown (for tests and screenshots)."""
        row = self.rows[name]
        return [self.item(row, col).text() for col in range(self.columnCount())]

    def row_is_red(self, name: str) -> bool:
        """Whether a device's row shows it as unhealthy (for tests and screenshots)."""
        item = self.item(self.rows[name], 0)
        return item is not None and item.background().color().name() == QtGui.QColor(RED).name()


class CompletionPanel(QtWidgets.QFrame):  # type: ignore[misc]
    """What the end of a recording says: complete or stopped, the file and whether it verifies,
    the report being written, then an offer to open it (and, when the window closes by itself,
    how long until it does and a way to keep it open)."""

    def __init__(self, on_keep_open: Callable[[], None], on_close: Callable[[], None]) -> None:
        super().__init__()
        self.setStyleSheet(f"background: {GREEN}; color: white")
        layout = QtWidgets.QHBoxLayout(self)
        self.title = big_label("", 16)
        self.detail = QtWidgets.QLabel("")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        text = QtWidgets.QVBoxLayout()
        text.addWidget(self.title)
        text.addWidget(self.detail)
        layout.addLayout(text, 1)
        self.open_button = button("Open report", lambda: None)
        self.keep_button = button("Keep this window open", on_keep_open)
        self.close_button = button("Close", on_close)
        for control in (self.open_button, self.keep_button, self.close_button):
            control.setMinimumSize(TOUCH_PX * 3, TOUCH_PX)
            control.setStyleSheet("color: black")
            layout.addWidget(control)
        self.report: str | None = None
        self.open_button.clicked.connect(self._open)
        self.open_button.setEnabled(False)
        self.keep_button.hide()
        self.hide()

    def _open(self) -> None:
        if self.report is not None:
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(self.report))

    def show_end(self, title: str, detail: str) -> None:
        """Say how the recording ended."""
        self.title.setText(title)
        self.detail.setText(detail)
        self.show()

    def show_report(self, report: str | None, detail: str) -> None:
        """The report is written (`report`: its path) or could not be (None)."""
        self.report = report
        self.open_button.setEnabled(report is not None)
        self.detail.setText(detail)

    def show_countdown(self, seconds: int | None) -> None:
        """The window closes by itself in `seconds` (None: it stays)."""
        self.keep_button.setVisible(seconds is not None)
        self.close_button.setText("Close" if seconds is None else f"Close now ({seconds} s)")


class LocalizationPanel(QtWidgets.QWidget):  # type: ignore[misc]
    """The needle site, the prompt, the answer and notes.

    Every key of the grammar has a button (large enough to tap: an assistant can enter what a
    gloved clinician cannot). The site widgets always show the site a site key records (muscle
    included). The answer's free text and the note are the only text fields: Tab and N reach
    them, Enter commits from them and gives the keys back, Escape leaves them. While nothing
    records, every entry is off and says so; the lists show what the file holds.
    """

    def __init__(
        self,
        keys: AnswerKeys,
        on_message: Callable[[str], None],
        give_back_focus: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.on_message = on_message
        self.give_back_focus = give_back_focus
        log = keys.log
        layout = QtWidgets.QVBoxLayout(self)

        self.entry_label = QtWidgets.QLabel("")
        self.entry_label.setWordWrap(True)
        self.entry_label.setStyleSheet(
            f"background: {AMBER}; color: black; font-weight: bold; padding: 4px"
        )
        layout.addWidget(self.entry_label)

        # Short titles, the keys in a line that wraps: a group box is at least as wide as its
        # title, and long titles pushed the panel past the window's edge.
        site_box = QtWidgets.QGroupBox("Needle site")
        site = QtWidgets.QGridLayout(site_box)
        site.addWidget(
            wrapped("Alt + the level's keys · Alt+L/R/M side · Alt+E e-stim"), 0, 0, 1, 5
        )
        self.site_label = big_label("no site set", 15)
        self.site_label.setWordWrap(True)
        site.addWidget(self.site_label, 1, 0, 1, 5)
        self.region_combo = QtWidgets.QComboBox()
        self.region_combo.addItems(list(log.config.regions))
        self.region_combo.setVisible(len(log.config.regions) > 1)
        self.level_combo = QtWidgets.QComboBox()
        self.side_combo = QtWidgets.QComboBox()
        self.side_combo.addItems(list(SITE_SIDE_KEYS.values()))
        self.muscle_combo = QtWidgets.QComboBox()  # the configured muscles: picked, not typed
        self.muscle_combo.addItems(log.config.muscles or [""])
        self.estim_check = QtWidgets.QCheckBox("e-stim on")
        self.site_widgets = (
            self.region_combo, self.level_combo, self.side_combo, self.muscle_combo,
            self.estim_check,
        )  # fmt: skip
        for col, widget in enumerate(self.site_widgets):
            widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # clicked or tapped, never typed in
            widget.setMinimumHeight(TOUCH_PX)
            if isinstance(widget, QtWidgets.QComboBox):  # as wide as the panel lets it be
                widget.setSizeAdjustPolicy(
                    QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
                )
                widget.setMinimumContentsLength(3)
            site.addWidget(widget, 2, col)
        # Every change of the site is a `needle.site` event at once: no "apply" step to forget.
        self.region_combo.activated.connect(self._region_picked)
        for combo in (self.level_combo, self.side_combo, self.muscle_combo):
            combo.activated.connect(self._apply_site)
        self.estim_check.clicked.connect(self._apply_site)
        layout.addWidget(site_box)

        answer_box = QtWidgets.QGroupBox("Answer")
        answer = QtWidgets.QVBoxLayout(answer_box)
        answer.addWidget(
            wrapped(
                "Space prompt · level keys · L/R/B/U · Enter; Ctrl+Enter correct, Ctrl+Z withdraw"
            )
        )
        top = QtWidgets.QHBoxLayout()
        self.prompt_button = button("Prompt  [Space]", partial(self.press, "Space"))
        self.prompt_button.setMinimumSize(BIG_TOUCH_PX * 3, BIG_TOUCH_PX)
        top.addWidget(self.prompt_button)
        self.draft_label = big_label("", 13)
        self.draft_label.setWordWrap(True)
        top.addWidget(self.draft_label, 1)
        answer.addLayout(top)
        self.level_grid = QtWidgets.QGridLayout()
        self.level_buttons: list[QtWidgets.QPushButton] = []
        self._shown_levels: list[str] = []
        answer.addLayout(self.level_grid)
        sides = QtWidgets.QHBoxLayout()
        self.side_buttons = [
            button(f"{key}  {side}", partial(self.press, key))
            for key, side in ANSWER_SIDE_KEYS.items()
        ]
        for side_button in self.side_buttons:
            side_button.setMinimumHeight(TOUCH_PX)
            sides.addWidget(side_button)
        answer.addLayout(sides)
        words = QtWidgets.QGridLayout()
        self.word_buttons = []
        for i, word in enumerate(log.config.descriptors):
            key = f"F{i + 1}"
            word_button = button(f"{key} {word}", partial(self.press, key))
            word_button.setMinimumHeight(TOUCH_PX)
            self.word_buttons.append(word_button)
            words.addWidget(word_button, i // 4, i % 4)
        answer.addLayout(words)
        self.text_edit = QtWidgets.QLineEdit()
        self.text_edit.setMaxLength(2000)
        self.text_edit.setMinimumHeight(TOUCH_PX)
        self.text_edit.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.text_edit.setPlaceholderText(
            "Tab: free text of this answer · Enter commits the answer · Esc leaves"
        )
        self.text_edit.textEdited.connect(self._text_edited)
        answer.addWidget(self.text_edit)
        actions = QtWidgets.QHBoxLayout()
        self.commit_button = button("Commit  [Enter]", partial(self.press, "Return"))
        self.commit_button.setMinimumSize(BIG_TOUCH_PX * 3, BIG_TOUCH_PX)
        # Two lines each: three action buttons side by side fit a narrow panel.
        self.correct_button = button(
            "Correct last\n[Ctrl+Enter]", partial(self.press, "Ctrl+Return")
        )
        self.undo_button = button("Withdraw last\n[Ctrl+Z]", partial(self.press, "Ctrl+Z"))
        for action in (self.correct_button, self.undo_button):
            action.setMinimumHeight(TOUCH_PX)
        actions.addWidget(self.commit_button, 2)
        actions.addWidget(self.correct_button, 1)
        actions.addWidget(self.undo_button, 1)
        answer.addLayout(actions)
        self.accuracy_label = wrapped("no answers yet")
        answer.addWidget(self.accuracy_label)
        self.answers = QtWidgets.QListWidget()  # the standing answers, newest first
        self.answers.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.answers.setMaximumHeight(140)
        answer.addWidget(self.answers)
        layout.addWidget(answer_box)

        note_box = QtWidgets.QGroupBox("Notes")
        notes = QtWidgets.QVBoxLayout(note_box)
        notes.addWidget(wrapped("N: a note, not an answer; Enter saves it"))
        row = QtWidgets.QHBoxLayout()
        self.note_edit = QtWidgets.QLineEdit()
        self.note_edit.setMaxLength(2000)
        self.note_edit.setMinimumHeight(TOUCH_PX)
        self.note_edit.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.note_edit.setPlaceholderText("N: a note · Enter saves it · Esc leaves")
        self.note_edit.textChanged.connect(self._note_edited)
        row.addWidget(self.note_edit, 1)
        self.note_button = button("Save note", self.save_note)
        self.note_button.setMinimumHeight(TOUCH_PX)
        row.addWidget(self.note_button)
        notes.addLayout(row)
        self.note_state = wrapped("")
        notes.addWidget(self.note_state)
        self.notes = QtWidgets.QListWidget()  # the notes in the file, newest first
        self.notes.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.notes.setMaximumHeight(90)
        notes.addWidget(self.notes)
        layout.addWidget(note_box)
        self._shown_answers: list[str] = []
        self._shown_notes: list[str] = []
        self.show_state()

    def show_extra_keys(self, prompt: list[str], commit: list[str]) -> None:
        """Name the configured (pedal) keys on the prompt and commit buttons."""
        self.prompt_button.setText(f"Prompt  [{' · '.join(['Space', *prompt])}]")
        self.commit_button.setText(f"Commit  [{' · '.join(['Enter', *commit])}]")

    # -- entry -------------------------------------------------------------------------------------
    def press(self, key: str) -> str | None:
        """Feed one key (or button) to the grammar and show the result."""
        message = self.keys.press(key)
        if message is not None:
            self.on_message(message)
            self.show_state()
        return message

    def save_note(self) -> None:
        """Record the note field's text as a `marker` (kept in the field if it was refused)."""
        text = self.note_edit.text()
        try:
            note = self.keys.log.note(text)
        except EntryRefused as exc:
            self.on_message(f"{exc}: the note was NOT saved")
        except ValueError as exc:
            self.on_message(str(exc))
        else:
            self.note_edit.clear()
            self.on_message(f"note #{note.id} saved")
        self.show_state()

    def _text_edited(self, text: str) -> None:
        self.keys.draft.text = text
        self.show_state()

    def _note_edited(self, text: str) -> None:
        self.note_state.setText("✎ not saved yet: Enter saves it" if text.strip() else "")

    def _region_picked(self, _index: int) -> None:
        self._record_site(region=self.region_combo.currentText(), level=None)

    def _apply_site(self, *_args: object) -> None:
        """The site the widgets show becomes the site in force."""
        self._record_site(
            region=self.region_combo.currentText(), level=self.level_combo.currentText()
        )

    def _record_site(self, region: str, level: str | None) -> None:
        try:
            site = self.keys.log.set_site(
                region=region,
                level=level,
                side=SITE_SIDE_KEYS[self.side_combo.currentText()[0].upper()],
                muscle=self.muscle_combo.currentText(),
                estim_on=self.estim_check.isChecked(),
            )
        except EntryRefused as exc:
            self.on_message(f"{exc}: the site was NOT changed")
        else:
            self.on_message(f"site {site.level} {site.side} {site.muscle}".rstrip())
        self.show_state()  # the widgets show the site in force either way

    def _sync_level_buttons(self) -> None:
        """One button per level of the region in use, labelled with its keys."""
        keys = self.keys.level_keys
        if keys.levels == self._shown_levels:
            return
        self._shown_levels = list(keys.levels)
        for old in self.level_buttons:
            self.level_grid.removeWidget(old)
            old.deleteLater()
        self.level_buttons = []
        for i, level in enumerate(keys.levels):
            typed = " ".join(keys.keys(level))
            level_button = button(f"{level}  [{typed}]", partial(self.press_keys, keys.keys(level)))
            level_button.setMinimumHeight(TOUCH_PX)
            self.level_buttons.append(level_button)
            self.level_grid.addWidget(level_button, i // 5, i % 5)
        self.level_combo.clear()
        self.level_combo.addItems(keys.levels)

    def press_keys(self, typed: str) -> None:
        """A level button: its keys, as if typed (a level half-typed before is replaced)."""
        self.keys.typed = ""
        for key in typed:
            self.press(key)

    # -- display -----------------------------------------------------------------------------------
    def show_state(self) -> None:
        """Show whether entry is on, the site, the draft, the accuracy and the standing answers."""
        log = self.keys.log
        closed = log.closed
        self.entry_label.setText(
            f"Entry is OFF: {closed}. Nothing entered here is saved." if closed else ""
        )
        self.entry_label.setVisible(closed is not None)
        for widget in self.inputs():
            widget.setEnabled(closed is None)
        self._sync_level_buttons()
        fields = log.site_fields()
        for widget in self.site_widgets:
            widget.blockSignals(True)
        self.region_combo.setCurrentText(fields.region)
        self.level_combo.setCurrentText(fields.level)
        self.side_combo.setCurrentText(fields.side)
        if self.muscle_combo.findText(fields.muscle) < 0:  # a template's muscle not in the list
            self.muscle_combo.addItem(fields.muscle)
        self.muscle_combo.setCurrentText(fields.muscle)
        self.estim_check.setChecked(fields.estim_on)
        for widget in self.site_widgets:
            widget.blockSignals(False)
        site = log.site
        estim = " · e-stim ON" if fields.estim_on else ""
        shown = f"{fields.level} {fields.side} {fields.muscle}{estim}".replace("  ", " ")
        self.site_label.setText(shown if site is not None else f"no site set (next: {shown})")
        draft, keys = self.keys.draft, self.keys
        prompt = "● asked · " if log.pending_prompt is not None and closed is None else ""
        words = ", ".join(w for w in log.config.descriptors if w in draft.descriptors)
        level = f"{keys.typed}…" if keys.typed else (draft.level or "–")
        parts = [f"level {level}", f"side {draft.side or '–'}"]
        parts += [words] if words else []
        parts += [f"“{draft.text}”"] if draft.text else []
        state = "not saved" if not draft.empty() or keys.typed else "empty"
        self.draft_label.setText(f"{prompt}draft ({state}): " + " · ".join(parts))
        if self.text_edit.text() != draft.text:
            self.text_edit.setText(draft.text)
        self.accuracy_label.setText(format_accuracy(log.accuracy()))
        answers = [_answer_line(r) for r in reversed(log.responses)]
        if answers != self._shown_answers:
            self._shown_answers = answers
            self.answers.clear()
            self.answers.addItems(answers)

    def show_notes(self, notes: list[MarkerEvent]) -> None:
        """The notes recorded so far, newest first."""
        lines = [f"#{n.id} {n.text}" for n in reversed(notes)]
        if lines != self._shown_notes:
            self._shown_notes = lines
            self.notes.clear()
            self.notes.addItems(lines)

    def inputs(self) -> list[QtWidgets.QWidget]:
        """Every widget that enters something (off while nothing records)."""
        return [
            *self.site_widgets, self.prompt_button, *self.level_buttons, *self.side_buttons,
            *self.word_buttons, self.text_edit, self.commit_button, self.correct_button,
            self.undo_button, self.note_edit, self.note_button,
        ]  # fmt: skip

    def shown_answers(self) -> list[str]:
        """The standing answers as listed, newest first (for tests and screenshots)."""
        return [self.answers.item(i).text() for i in range(self.answers.count())]

    def shown_notes(self) -> list[str]:
        """The notes as listed, newest first."""
        return [self.notes.item(i).text() for i in range(self.notes.count())]


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
        for choice in (self.waveform, self.mode, self.output):
            choice.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # clicked, never typed into
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
