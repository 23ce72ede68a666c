"""The demo's clinician and patient: the demo protocol, end to end, on the session clock.

`demo_config` makes the demo's session config: its simulated stimulator and caliper are held by
the simulated clinician (`control` in their `[simulator]` tables) and the protocol is
`low-back-l3-demo`, the default template shortened on purpose (its `[protocol] shortened` says
how; the file and the report carry it). `demo_script` walks the session's protocol run with a
simulated patient (`sim.patient`):

- ratings, TPD staircases, LRJ blocks and, during needling with e-stim, localization questions;
- for each TPD trial the clinician sets the caliper to the staircase's distance and presses its
  button (the caliper simulator's own control), and the trial takes the distance of that press
  from the caliper's stream (`distance_source` caliper; the staircase's, `manual`, only if no
  press arrived in time);
- the stimulator's output is switched on at the start of the needling phase and off at its end
  (the stimulator simulator's own control, never the driver's port: needlelab sends only
  reads), and the phase ends once the driver has seen every channel off.

The clinician's pace is quicker than a clinic's (a TPD trial every 0.03 s plus the caliper's
press; the LRJ gap and question interval of the demo template, which shortens them) so the whole
protocol runs in about a minute; the patient's reaction times are waited for, so every time in
the file is real.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np

from needlelab.clinic.localization import EntryRefused
from needlelab.clinic.lrj import block_stimuli
from needlelab.clinic.protocol import load_protocol
from needlelab.clinic.run import ProtocolRun
from needlelab.config import CaliperBleConfig, SessionConfig, StimSerialConfig
from needlelab.devices.base import DeviceState
from needlelab.session import Session
from needlelab.sim.patient import SimulatedPatient
from needlelab.sim.serve import SimulatorControlError

DEMO_PROTOCOL = "low-back-l3-demo"
TPD_TRIAL_S = 0.03  # between trials; each press takes some 40 ms more (caliper to monitor)
RATING_S = 0.4
PACE = 1.0  # the template's LRJ gap and question interval are multiplied by this (tests hurry)
PRESS_WAIT_S = 2.0  # how long the clinician waits for the caliper's press to reach the monitor
OUTPUT_OFF_WAIT_S = 3.0  # ... and for the stimulator to report its output off
DEVICES_WAIT_S = 20.0  # how long the clinician waits for every device to stream before starting


def demo_config(config: SessionConfig) -> SessionConfig:
    """The demo's session config: every simulated stimulator and caliper under the simulated
    clinician's hand (`control`), and the demo's shortened protocol template."""
    devices: list[Any] = []
    for device in config.devices:
        sim = getattr(device, "simulator", None)
        if isinstance(device, StimSerialConfig | CaliperBleConfig) and sim is not None:
            device = device.model_copy(
                update={"simulator": sim.model_copy(update={"control": True})}
            )
        devices.append(device)
    session = config.session.model_copy(update={"protocol": DEMO_PROTOCOL})
    return config.model_copy(update={"devices": devices, "session": session})


def demo_script(session: Session, stop: threading.Event) -> None:
    """Run the session's protocol with a simulated patient until it ends, `stop` is set or the
    recording ends (its entries are refused then: nothing is entered that is not recorded)."""
    try:
        _walk_protocol(session, stop, _Hands(session))
    except EntryRefused:
        return


class _Hands:
    """The clinician's hands on the simulated devices' own controls (`SimulatorSet.control`):
    the stimulators and calipers whose simulator has `control`; nothing for the others."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.stims = [
            d.name
            for d in session.config.devices
            if isinstance(d, StimSerialConfig) and d.simulator is not None and d.simulator.control
        ]
        self.calipers = [
            d.name
            for d in session.config.devices
            if isinstance(d, CaliperBleConfig) and d.simulator is not None and d.simulator.control
        ]

    def stim_output(self, on: bool) -> None:
        sims = self.session.simulators
        for name in self.stims if sims is not None else []:
            assert sims is not None
            sims.control(name, output=on)

    def press(self, distance_mm: float) -> None:
        sims = self.session.simulators
        for name in self.calipers[:1] if sims is not None else []:
            assert sims is not None
            sims.control(name, press_mm=distance_mm)

    def outputs_off(self) -> bool:
        """Whether the driver's latest sample of every controlled stimulator channel is off."""
        hub = self.session.hub
        for spec in hub.streams.values():
            if spec.type == "Stim" and spec.device in self.stims:
                _t, values = hub.ring(spec.name).latest(1)
                if len(values) and np.asarray(values, dtype=np.float64)[-1, -1] > 0.5:
                    return False
        return True


def _walk_protocol(session: Session, stop: threading.Event, hands: _Hands) -> None:
    run = session.protocol_run
    if run is None:  # a config without a protocol: the demo's
        protocol = load_protocol(DEMO_PROTOCOL, session.config.localization)
        run = session.protocol_run = ProtocolRun(session.hub, session.localization, protocol)
    protocol = run.protocol
    patient = SimulatedPatient(seed=1)
    log = session.localization
    # As a clinician checks the devices first: a caliper still connecting would miss the first
    # TPD presses (each trial would then fall back to the staircase's distance).
    deadline = time.monotonic() + DEVICES_WAIT_S
    while not devices_ready(session):
        if stop.wait(0.05):
            return
        if time.monotonic() > deadline:
            break
    log.note("patient prone; sites marked")
    while (phase := run.advance()) is not None:
        when = phase.when
        if phase.kind == "nrs":
            if stop.wait(RATING_S):
                return
            run.nrs(patient.nrs(when))
        elif phase.kind == "rom":
            for movement in phase.movements:
                if stop.wait(RATING_S):
                    return
                run.rom(movement, patient.rom(movement, when))
        elif phase.kind == "tpd":
            while (track := run.current_track()) is not None:
                if stop.wait(TPD_TRIAL_S):
                    return
                trial = track.staircase.next_trial()
                distance = _pressed(run, hands, trial.distance_mm, stop)
                run.tpd_answer(track, patient.tpd(track.site, when, trial), distance)
        elif phase.kind == "lrj":
            for k, stimulus in enumerate(block_stimuli(protocol.lrj, run.index)):
                if stop.wait(protocol.lrj.gap_s * PACE if k else RATING_S):
                    return
                shown = session.clock.now_ns()
                answer, rt_s = patient.lrj(stimulus.side, when)
                if stop.wait(rt_s):
                    return
                run.lrj_trial(
                    stimulus.name, stimulus.body_part, stimulus.side, answer,
                    shown, session.clock.now_ns(),
                )  # fmt: skip
        elif phase.kind == "needling":
            log.note("needle in")
            if phase.estim:
                hands.stim_output(True)
            try:
                for _ in range(protocol.prompts.count):
                    if stop.wait(protocol.prompts.every_s * PACE) or log.site is None:
                        return
                    log.prompt()
                    level, side, words, latency_s = patient.localize(log.site, log.levels)
                    if stop.wait(latency_s):
                        return
                    log.answer(level, side, words)
            finally:
                if phase.estim:  # also when the session stops mid-phase (simulators may be gone)
                    with contextlib.suppress(SimulatorControlError):
                        hands.stim_output(False)
            # The phase ends once the recording has the output off (the unit's change message,
            # or the next poll): stimulation is inside the needling phase in the file too.
            deadline = time.monotonic() + OUTPUT_OFF_WAIT_S
            while not hands.outputs_off() and time.monotonic() < deadline:
                if stop.wait(0.01):
                    return
            log.note("needle out")


def devices_ready(session: Session) -> bool:
    """Whether every device streams; a caliper, silent until pressed, once it has connected
    (its driver records the connection's `device.info`)."""
    connected = {e.source for e in session.hub.recent_events() if e.kind == "device.info"}
    calipers = {d.name for d in session.config.devices if isinstance(d, CaliperBleConfig)}
    return all(
        d.state is DeviceState.STREAMING or (name in calipers and name in connected)
        for name, d in session.devices.items()
    )


def _pressed(
    run: ProtocolRun, hands: _Hands, distance_mm: float, stop: threading.Event
) -> float | None:
    """Set the caliper to `distance_mm` and press it; the distance of the press as the monitor
    received it, or None (the staircase's distance is recorded, `manual`) if none arrived."""
    if not hands.calipers:
        return None
    hands.press(distance_mm)
    deadline = time.monotonic() + PRESS_WAIT_S
    while (press := run.trial_press()) is None and time.monotonic() < deadline:
        if stop.wait(0.002):
            break
    return press
