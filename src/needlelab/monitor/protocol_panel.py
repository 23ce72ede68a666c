"""The protocol panel: which phase the session is in, what comes next, and what the phase asks
for (a pain rating, range of motion, the next TPD trial and its answer, an LRJ block, the
localization prompt schedule). Everything it records goes through the session's `ProtocolRun`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from pyqtgraph.Qt import QtCore, QtWidgets

from needlelab.clinic.lrj import block_stimuli
from needlelab.clinic.run import ProtocolRun
from needlelab.clinic.tpd import Answer
from needlelab.monitor.lrj import LrjTask
from needlelab.monitor.panels import CurrentPageStack, big_label, button
from needlelab.session import Session

Qt = QtCore.Qt
ANSWERS: tuple[Answer, ...] = ("one", "two", "unsure")


class ProtocolPanel(QtWidgets.QGroupBox):  # type: ignore[misc]
    """Phase guidance and the controls of the phase in progress."""

    def __init__(
        self,
        session: Session,
        on_message: Callable[[str], None],
        on_field: Callable[[QtWidgets.QAbstractSpinBox], None] = lambda _field: None,
    ) -> None:
        super().__init__("Protocol")
        self.session = session
        self.on_message = on_message
        self.on_field = on_field  # told of each number field made later (the focus model)
        self.lrj_task: LrjTask | None = None
        self._shown_index = -2
        layout = QtWidgets.QVBoxLayout(self)
        top = QtWidgets.QHBoxLayout()
        self.phase_label = big_label("", 15)
        top.addWidget(self.phase_label, 1)
        self.next_button = button("Next phase ▶", self.advance)
        top.addWidget(self.next_button)
        layout.addLayout(top)
        self.next_label = QtWidgets.QLabel("")
        self.next_label.setWordWrap(True)
        layout.addWidget(self.next_label)
        self.pages = CurrentPageStack()  # as tall as the page shown, not the tallest one
        layout.addWidget(self.pages)
        self.page: dict[str, QtWidgets.QWidget] = {}
        self._build_pages()
        self.show_state()

    @property
    def run(self) -> ProtocolRun | None:
        """The session's protocol run (None until recording starts, or without a protocol)."""
        return self.session.protocol_run

    # -- pages ------------------------------------------------------------------------------------
    def _build_pages(self) -> None:
        blank = QtWidgets.QLabel("")
        self.page[""] = blank
        # NRS
        nrs = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(nrs)
        row.addWidget(QtWidgets.QLabel("pain now (0–10)"))
        self.nrs_spin = QtWidgets.QSpinBox()
        self.nrs_spin.setRange(0, 10)
        row.addWidget(self.nrs_spin)
        row.addWidget(button("Record NRS", self.record_nrs))
        self.page["nrs"] = nrs
        # ROM
        rom = QtWidgets.QWidget()
        self.rom_form = QtWidgets.QFormLayout(rom)
        self.rom_spins: dict[str, QtWidgets.QDoubleSpinBox] = {}
        self.rom_button = button("Record ROM", self.record_rom)
        self.page["rom"] = rom
        # TPD
        tpd = QtWidgets.QWidget()
        grid = QtWidgets.QVBoxLayout(tpd)
        self.tpd_label = big_label("", 14)
        self.tpd_label.setWordWrap(True)  # "…ONE point (catch trial) at 12.0 mm" was cut
        grid.addWidget(self.tpd_label)
        self.caliper_label = QtWidgets.QLabel("caliper: no reading")
        self.caliper_label.setWordWrap(True)
        grid.addWidget(self.caliper_label)
        self.use_caliper = QtWidgets.QCheckBox("distance from this trial's caliper press")
        self.use_caliper.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.use_caliper.setChecked(True)
        grid.addWidget(self.use_caliper)
        answers = QtWidgets.QHBoxLayout()
        for answer in ANSWERS:
            answers.addWidget(button(f"patient: {answer}", partial(self.tpd_answer, answer)))
        grid.addLayout(answers)
        self.tpd_status = QtWidgets.QLabel("")
        grid.addWidget(self.tpd_status)
        self.page["tpd"] = tpd
        # LRJ
        lrj = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(lrj)
        self.lrj_button = button("Start the LRJ block (full screen)", self.start_lrj)
        row.addWidget(self.lrj_button)
        self.lrj_status = QtWidgets.QLabel("")
        self.lrj_status.setWordWrap(True)
        row.addWidget(self.lrj_status, 1)
        self.page["lrj"] = lrj
        # needling
        self.needling_label = QtWidgets.QLabel("")
        self.needling_label.setWordWrap(True)
        self.page["needling"] = self.needling_label
        self.note_label = QtWidgets.QLabel("")
        self.note_label.setWordWrap(True)
        self.page["note"] = self.note_label
        for widget in self.page.values():
            self.pages.addWidget(widget)

    # -- actions ----------------------------------------------------------------------------------
    def advance(self) -> None:
        """End this phase and start the next."""
        if self.run is None:
            return
        phase = self.run.advance()
        self.on_message(f"phase: {phase.name}" if phase else "protocol done")
        self.show_state()

    def record_nrs(self) -> None:
        """Record the pain rating shown."""
        if self.run is not None:
            event = self.run.nrs(self.nrs_spin.value())
            self.on_message(f"NRS {event.value} recorded")

    def record_rom(self) -> None:
        """Record every movement's degrees."""
        if self.run is not None:
            for movement, spin in self.rom_spins.items():
                self.run.rom(movement, spin.value())
            self.on_message(f"ROM recorded: {', '.join(self.rom_spins)}")

    def caliper_reading(self) -> tuple[float, float] | None:
        """The caliper's last button press: (mm, seconds ago), or None."""
        hub = self.session.hub
        now = self.session.clock.now_ns()
        best: tuple[float, float] | None = None
        for spec in hub.streams.values():
            if spec.type != "Caliper":
                continue
            t_ns, raw = hub.ring(spec.name).latest()
            values = raw.astype(np.float64)
            pressed = np.flatnonzero(values[:, 1] > 0.5)
            if len(pressed):
                k = pressed[-1]
                age = (now - int(t_ns[k])) / 1e9
                if best is None or age < best[1]:
                    best = (float(values[k, 0]), age)
        return best

    def tpd_answer(self, answer: Answer) -> None:
        """The patient's answer to the trial shown."""
        run = self.run
        track = run.current_track() if run else None
        if run is None or track is None:
            return
        # The press made for this trial (since it was put up), never one made for the last.
        distance = run.trial_press() if self.use_caliper.isChecked() else None
        event = run.tpd_answer(track, answer, distance)
        verdict = "right" if event.correct else "wrong"
        self.on_message(f"TPD {track.name} trial {event.trial}: {answer} ({verdict})")
        self.show_state()

    def start_lrj(self) -> None:
        """Show the LRJ block full screen."""
        run = self.run
        if run is None or run.phase is None or self.lrj_task is not None:
            return
        stimuli = block_stimuli(run.protocol.lrj, seed=run.index)
        task = LrjTask(
            run, self.session.clock, stimuli, run.protocol.lrj.timeout_s, run.protocol.lrj.gap_s
        )
        task.finished.connect(self._lrj_done)
        self.lrj_task = task
        task.showFullScreen()
        task.start()

    def _lrj_done(self) -> None:
        task, self.lrj_task = self.lrj_task, None
        if task is not None:
            task.close()
            task.deleteLater()
            self.on_message(f"LRJ block done: {task.index} pictures")
        self.show_state()

    # -- display ----------------------------------------------------------------------------------
    def show_state(self) -> None:
        """Show the phase, the next one, and the phase's page."""
        run = self.run
        self.setVisible(self.session.protocol is not None)
        if run is None:
            self.phase_label.setText("protocol starts with the recording")
            self.next_button.setEnabled(False)
            return
        phases = run.protocol.phases
        phase = run.phase
        self.next_button.setEnabled(not run.finished)
        self.next_button.setText("Start protocol ▶" if run.index < 0 else "Next phase ▶")
        if phase is None:
            self.phase_label.setText("protocol done" if run.finished else "ready")
        else:
            self.phase_label.setText(f"{run.index + 1}/{len(phases)}: {phase.name}")
        upcoming = run.next_phase
        self.next_label.setText(f"next: {upcoming.name}" if upcoming else "next: the end")
        kind = phase.kind if phase else ""
        if run.index != self._shown_index:
            self._shown_index = run.index
            self._enter_page(kind)
        self.tick()

    def _enter_page(self, kind: str) -> None:
        run = self.run
        phase = run.phase if run else None
        if kind == "rom" and phase is not None:
            while self.rom_form.rowCount():
                self.rom_form.removeRow(0)
            self.rom_spins = {}
            for movement in phase.movements:
                spin = QtWidgets.QDoubleSpinBox()
                spin.setRange(0, 360)
                spin.setSuffix(" °")
                self.on_field(spin)
                self.rom_spins[movement] = spin
                self.rom_form.addRow(movement, spin)
            self.rom_button = button("Record ROM", self.record_rom)
            self.rom_form.addRow(self.rom_button)
        if kind == "note" and phase is not None:
            self.note_label.setText(phase.text)
        self.pages.setCurrentWidget(self.page.get(kind, self.page[""]))

    def tick(self) -> None:
        """Refresh what changes with time (the caliper reading, the prompt schedule)."""
        run = self.run
        phase = run.phase if run else None
        if run is None or phase is None:
            return
        if phase.kind == "tpd":
            track = run.current_track()
            if track is None:
                self.tpd_label.setText("all staircases done: next phase")
            else:
                trial = track.staircase.next_trial()
                what = "TWO points" if trial.points == 2 else "ONE point (catch trial)"
                self.tpd_label.setText(
                    f"{track.name}, trial {trial.number}: {what} at {trial.distance_mm:.1f} mm"
                )
                self.tpd_status.setText(
                    f"reversals {len(track.staircase.reversal_mm)}/{run.protocol.tpd.reversals}"
                )
            reading = self.caliper_reading()
            self.caliper_label.setText(
                "caliper: no reading"
                if reading is None
                else f"caliper: {reading[0]:.1f} mm, pressed {reading[1]:.0f} s ago"
            )
        elif phase.kind == "needling":
            schedule = run.protocol.prompts
            log = self.session.localization
            asked = len(log.responses)
            self.needling_label.setText(
                f"needling {phase.site}{' with e-stim' if phase.estim else ''}: ask where they "
                f"feel it every {schedule.every_s:g} s ({asked} of {schedule.count} answered); "
                "Space prompts"
            )
        elif phase.kind == "lrj":
            self.lrj_button.setEnabled(self.lrj_task is None)
            self.lrj_status.setText(
                f"{run.protocol.lrj.trials} pictures; the patient answers with ← / →"
            )
