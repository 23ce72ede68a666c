"""The demo's protocol end to end: simulated devices and patient, through to the report.

The session is read back from its file and checked against what lies outside the code under
test: the stimulator simulator's own settings history, the caliper simulator's own log of the
presses it sent, and the protocol templates as TOML files.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest

import needlelab.demo as demo
from needlelab.clinic.report import write_report
from needlelab.clinic.scoring import score_session
from needlelab.config import load_config
from needlelab.events import (
    LrjTrialEvent,
    PhaseEvent,
    ProtocolEvent,
    StimSettingsEvent,
    TpdTrialEvent,
)
from needlelab.record import open_session, verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.sim.caliper import SimulatedCaliper
from needlelab.sim.serve import SimulatorSet

NEEDLING = "needling with e-stim"


@pytest.fixture(scope="module")
def demo_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One demo run, in-process (the simulators' own logs are at hand), the clinician hurried
    (the patient's own reaction times are still waited for)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(demo, "TPD_TRIAL_S", 0.002)
    mp.setattr(demo, "PACE", 0.05)
    mp.setattr(demo, "RATING_S", 0.01)
    config = demo.demo_config(load_config(configs_dir() / "demo.toml"))
    session = Session(config, tmp_path_factory.mktemp("demo"))
    session.start()
    try:
        demo.demo_script(session, threading.Event())
    finally:
        session.stop()
        mp.undo()
    return session


def _needling(path: Path) -> tuple[int, int]:
    with open_session(path) as f:
        phases = [e for e in f.events("phase") if isinstance(e, PhaseEvent)]
    (start,) = [p.t_ns for p in phases if p.name == NEEDLING and p.boundary == "start"]
    (end,) = [p.t_ns for p in phases if p.name == NEEDLING and p.boundary == "end"]
    return start, end


def test_the_demo_protocol_runs_end_to_end_and_reports(demo_session: Session) -> None:
    session = demo_session
    assert verify_report(session.path)["ok"]
    scores = score_session(session.path)
    assert scores.protocol == "low-back-l3-demo"
    assert [name for name, _start, end in scores.phases if end is not None] == [
        "baseline pain", "baseline TPD", "baseline LRJ", "baseline movement",
        NEEDLING, "post TPD", "post LRJ", "post movement", "post pain",
    ]  # fmt: skip
    tracks = {t.name: t for t in scores.tpd}
    assert set(tracks) == {f"{w} L3 {s} vertical" for w in ("pre", "post") for s in "RL"}
    # The simulated patient's thresholds: 48 mm (painful right), 40 mm (left), right 6 mm better
    # after; each estimate within a step and a half of it.
    for name, truth in (("pre L3 R vertical", 48), ("pre L3 L vertical", 40),
                        ("post L3 R vertical", 42), ("post L3 L vertical", 40)):  # fmt: skip
        threshold = tracks[name].threshold_mm
        assert threshold is not None and abs(threshold - truth) <= 7.5, (name, threshold)
        assert tracks[name].false_alarm_rate is not None
    assert [b.block for b in scores.lrj] == ["pre", "post"]
    assert all(b.median_rt_ms for b in scores.lrj)
    assert scores.nrs["post"][0] < scores.nrs["pre"][0]
    assert set(scores.rom) == {"flexion", "extension"}
    demo_template = tomllib.loads(
        (configs_dir() / "protocols" / "low-back-l3-demo.toml").read_text()
    )
    assert scores.localization.accuracy.n == demo_template["prompts"]["count"]
    page = write_report(session.path, session.path.parent).read_text()
    assert page.count("<h2>") >= 9 and "low-back-l3-demo" in page


def test_stimulator_output_is_on_only_during_the_needling_phase(demo_session: Session) -> None:
    """The file's stimulator samples and the simulator's own history agree: output on only
    between the needling phase's start and end events. Allowance: the driver's poll interval
    (100 ms in the demo config) at either end, as a sample's time is when the driver read it;
    in practice the demo switches the unit on after the start event and ends the phase only once
    the driver has read every channel off."""
    session = demo_session
    start, end = _needling(session.path)
    (stim_config,) = [d for d in session.config.devices if d.name == "stim"]
    assert stim_config.poll_interval_ms == 100  # type: ignore[union-attr]
    slack = 100_000_000
    with open_session(session.path) as f:
        anchor = int(f.meta["anchor_monotonic_ns"])
        on_times = []
        for channel in (1, 2):
            t_ns, values = f.stream(f"stim.ch{channel}")
            assert len(t_ns) and f.streams[f"stim.ch{channel}"].channels[3] == "output_on"
            on_times.append(t_ns[np.asarray(values, np.float64)[:, 3] > 0.5])
        settings = [e for e in f.events("stim.settings") if isinstance(e, StimSettingsEvent)]
    on_events = [e.t_ns for e in settings if e.settings.output_on]
    on = np.concatenate(on_times)
    assert len(on) > 20 and on_events, "the stimulator never stimulated during needling"
    assert start - slack <= on.min() and on.max() <= end + slack, (on.min(), on.max(), start, end)
    assert start - slack <= min(on_events) and max(on_events) <= end + slack
    # The simulator's own history (monotonic ns, its clock): on only within the phase, and off
    # at its end.
    assert isinstance(session.simulators, SimulatorSet)
    history = session.simulators.truth()["stim"]
    switched_on = [t - anchor for t, s in history if s.output_on]
    assert switched_on and start <= min(switched_on) and max(switched_on) <= end
    last = {s.channel: s for _t, s in history}
    assert set(last) == {1, 2} and not any(s.output_on for s in last.values())


def test_every_tpd_trial_takes_its_distance_from_a_caliper_press(demo_session: Session) -> None:
    """Each trial's distance is a press the caliper simulator logged sending, after the trial
    before it was answered and before this one was: one press per trial."""
    session = demo_session
    assert isinstance(session.simulators, SimulatorSet)
    caliper = session.simulators.ble_devices["caliper"]
    assert isinstance(caliper, SimulatedCaliper)
    with open_session(session.path) as f:
        anchor = int(f.meta["anchor_monotonic_ns"])
        phases = [e for e in f.events("phase") if isinstance(e, PhaseEvent)]
        trials = [e for e in f.events("tpd.trial") if isinstance(e, TpdTrialEvent)]
    presses = [(t - anchor, mm) for t, mm in caliper.presses]
    assert len(trials) >= 40 and len(presses) == len(trials)
    assert {t.distance_source for t in trials} == {"caliper"}
    since = {p.name: p.t_ns for p in phases if p.boundary == "start"}
    previous = None
    for trial in trials:
        after = previous.t_ns if previous is not None and previous.when == trial.when else None
        if after is None:
            after = since["baseline TPD" if trial.when == "pre" else "post TPD"]
        pressed = [mm for t, mm in presses if after < t < trial.t_ns]
        assert len(pressed) == 1 and abs(pressed[0] - trial.distance_mm) < 1e-3, (trial, pressed)
        previous = trial


def test_lrj_blocks_have_the_templates_trial_count_and_the_shortening_is_said(
    demo_session: Session,
) -> None:
    """The demo runs low-back-l3-demo: the shipped template shortened on purpose. Its LRJ
    count is what ran, and the template in the file says what was shortened from what."""
    protocols = configs_dir() / "protocols"
    shipped = tomllib.loads((protocols / "low-back-l3-demo.toml").read_text())
    full = tomllib.loads((protocols / "low-back-l3.toml").read_text())
    with open_session(demo_session.path) as f:
        (protocol,) = [e for e in f.events("protocol") if isinstance(e, ProtocolEvent)]
        lrj = [e for e in f.events("lrj.trial") if isinstance(e, LrjTrialEvent)]
    template = protocol.template
    ran = [sum(e.block == b for e in lrj) for b in ("pre", "post")]
    assert ran == [template["lrj"]["trials"]] * 2, (ran, template["lrj"])
    assert template["lrj"]["trials"] == shipped["lrj"]["trials"] == 6
    said = template["protocol"]["shortened"]
    assert "low-back-l3" in said and f"{full['lrj']['trials']}" in said  # "24"
