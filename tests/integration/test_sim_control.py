"""The simulators' own controls (the demo clinician's hand), in a separate simulator process.

The stimulator is switched on and off and the caliper pressed through `SimulatorProcess.control`
(a unix socket to `needlelab sim session --control`), never through the driver's port; the
file and the child's own stimulator history are read back afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from needlelab.config import load_config
from needlelab.demo import demo_config, devices_ready
from needlelab.record import open_session
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.sim.serve import SimulatorControlError, SimulatorProcess, SimulatorSet


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_controls_switch_the_stimulator_and_press_the_caliper_in_the_child(tmp_path: Path) -> None:
    config = demo_config(load_config(configs_dir() / "demo.toml"))
    session = Session(config, tmp_path, separate_simulators=True)
    session.start()
    try:
        assert _wait(lambda: devices_ready(session), 20)
        sims = session.simulators
        assert isinstance(sims, SimulatorProcess)
        time.sleep(1.0)  # a second of a unit that is off (it would be ramping by now if free)
        on_ns = session.clock.now_ns()
        sims.control("stim", output=True)
        time.sleep(2.0)
        pressed_ns = session.clock.now_ns()
        sims.control("caliper", press_mm=42.5)
        time.sleep(0.5)
        off_ns = session.clock.now_ns()
        sims.control("stim", output=False)
        time.sleep(0.5)
        with pytest.raises(SimulatorControlError, match="emg"):
            sims.control("emg", output=True)
        with pytest.raises(SimulatorControlError, match="press_mm"):
            sims.control("caliper", press_mm=-3)
    finally:
        session.stop()  # raises if a write reached the child's stimulator
    assert session.error is None and isinstance(session.simulators, SimulatorProcess)
    history = session.simulators.truth()["stim"]  # the child's own record, at its exit
    with open_session(session.path) as f:
        anchor = int(f.meta["anchor_monotonic_ns"])
        stim = [f.stream(f"stim.ch{c}") for c in (1, 2)]
        caliper_t, caliper = f.stream("caliper.distance")
    switched = [(t - anchor, s.output_on) for t, s in history]
    on = [t for t, was_on in switched if was_on]
    assert on and on_ns < min(on) and max(on) < off_ns
    assert not [t for t, was_on in switched if t < on_ns]  # nothing changed before the hand
    slack = 100_000_000  # the driver's poll interval: a sample's time is when it was read
    for t_ns, values in stim:
        lit = t_ns[np.asarray(values, np.float64)[:, 3] > 0.5]
        assert len(lit) and on_ns <= lit.min() and lit.max() <= off_ns + slack
        assert np.asarray(values, np.float64)[-1, 3] == 0  # off at the end
    button = np.asarray(caliper, np.float64)
    presses = caliper_t[button[:, 1] > 0.5]
    assert len(presses) == 1 and presses[0] > pressed_ns
    assert button[button[:, 1] > 0.5, 0].tolist() == [42.5]


def test_a_simulator_without_control_refuses_it(tmp_path: Path) -> None:
    config = load_config(configs_dir() / "demo.toml")  # free-running units, as in `record`
    sims = SimulatorSet(config, tmp_path)
    sims.start()
    try:
        with pytest.raises(SimulatorControlError, match="no output control"):
            sims.control("stim", output=True)
        with pytest.raises(SimulatorControlError, match="no caliper with control"):
            sims.control("caliper", press_mm=40)
    finally:
        sims.stop()
