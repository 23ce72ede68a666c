"""The fault matrix: each device kind x each fault a simulator injects, in a whole session.

Every case records the stimulator (serial, pty), the reference EMG and the caliper (BLE through
bleak) with in-process simulators, injects one fault into one device's simulator, and checks
the file afterwards:

- it verifies;
- the other devices' streams lost nothing and recorded no gap;
- the fault left its mark where it should (a gap, malformed messages, counted losses, the
  fitted drift);
- the device is streaming again at the end, where the fault allows it.

Session-level faults (disk full, SIGKILL of the recorder, SIGKILL of the simulator process)
are in tests/integration/test_record_faults.py and test_sim_session.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from needlelab.config import load_config
from needlelab.events import GapEvent
from needlelab.record import open_session, verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.testing.plugin import wait_until

KINDS = ("stim", "emg", "caliper")
FAULTS: dict[str, dict[str, Any]] = {
    "link loss": {"faults": [{"kind": "disconnect", "at_s": 1.5, "duration_s": 1.0}]},
    "stall": {"faults": [{"kind": "stall", "at_s": 1.5, "duration_s": 2.5}]},
    "garbage": {"faults": [{"kind": "garbage", "at_s": 1.5, "count": 300}]},
    "truncated": {"faults": [{"kind": "truncate", "at_s": 1.5, "count": 3}]},
}
EMG_ONLY: dict[str, dict[str, Any]] = {
    "packet loss": {"loss": 0.03},
    "clock drift": {"drift_ppm": 300.0},
    "jitter": {"jitter_ms": 25.0},
}
CASES = [(k, f) for k in KINDS for f in FAULTS] + [("emg", f) for f in EMG_ONLY]


def gaps_of(path: Path) -> list[GapEvent]:
    with open_session(path) as s:
        return [e for e in s.events("gap") if isinstance(e, GapEvent)]


def run_case(tmp_path: Path, kind: str, fault: str) -> tuple[Session, Path]:
    config = load_config(configs_dir() / "demo.toml")
    devices = []
    for device in config.devices:
        if device.name == kind:
            simulator = device.simulator
            assert simulator is not None
            extra = {**FAULTS, **EMG_ONLY}[fault]
            device = device.model_copy(
                update={"simulator": simulator.model_copy(update=_faults(extra))}
            )
        devices.append(device)
    session_section = config.session.model_copy(update={"protocol": None})
    config = config.model_copy(update={"devices": devices, "session": session_section})
    session = Session(config, tmp_path)
    session.start()
    try:
        wait_until(lambda: session.devices["emg"].stats.samples > 1000, timeout_s=15)
        time.sleep(6.0)  # the fault at 1.5 s after the simulator started, and the way back
        wait_until(
            lambda: all(d.stats.state.value == "streaming" for d in session.devices.values()),
            timeout_s=10,
            what="every device streaming again",
        )
    finally:
        session.stop()
    return session, session.path


def _faults(extra: dict[str, Any]) -> dict[str, Any]:
    from needlelab.config import FaultSpec

    if "faults" in extra:
        return {"faults": [FaultSpec.model_validate(f) for f in extra["faults"]]}
    return extra


@pytest.mark.parametrize(("kind", "fault"), CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_fault(tmp_path: Path, kind: str, fault: str) -> None:
    session, path = run_case(tmp_path, kind, fault)
    report = verify_report(path)
    assert report["ok"] and report["closed_cleanly"]
    gaps = gaps_of(path)
    streams = {s["name"]: s for s in report["streams"]}
    target = session.devices[kind]
    # The other devices: nothing lost, no gap.
    for name, stream in streams.items():
        if not name.startswith(f"{kind}."):
            assert stream["samples_lost_known"] == 0, name
            assert not [g for g in gaps if g.stream == name], name
    mine = [g for g in gaps if g.stream.startswith(f"{kind}.")]
    stats = target.stats
    if fault == "link loss":
        assert mine and stats.reconnects >= 1
    elif fault == "stall":
        if kind == "caliper":  # a caliper is silent between presses: no watchdog, no gap
            assert not mine
        else:
            assert mine and all(g.end_ns - g.start_ns >= 2e9 for g in mine)
    elif fault in ("garbage", "truncated"):
        assert stats.malformed > 0
        if kind == "emg" and fault == "truncated":  # the counter sizes the hole exactly
            assert [(g.samples_lost, g.inferred) for g in mine] == [(30, False)]
    elif fault == "packet loss":
        assert mine and all(not g.inferred for g in mine)
        assert streams["emg.emg"]["samples_lost_known"] == sum(g.samples_lost or 0 for g in mine)
    elif fault == "clock drift":
        with open_session(path) as s:
            drift = s.clock_models["emg.emg"]["drift_ppm"]
        # A few seconds of 7.5 ms connection events pin the drift only roughly (the sawtooth
        # floor, README "Figures"); the sign and size must still be the crystal's.
        assert 100 < drift < 500, drift
        assert not mine
    elif fault == "jitter":
        with open_session(path) as s:
            model = s.clock_models["emg.emg"]
        # No loss is taken for jitter, and the fit stays sane: the crystal has no drift here, and
        # 25 ms of jitter over a few seconds leaves a few ms of uncertainty (600 ppm over 7 s is
        # 4 ms).
        # On a loaded machine the simulator's own timing adds to the 25 ms, so only sanity here;
        # the clock model's accuracy under jitter is measured by benchmarks/sync.py.
        assert not mine, mine
        assert abs(model["drift_ppm"]) < 2000 and model["uncertainty_ns"] < 20e6, model
    assert stats.state.value == "closed"  # it was streaming again before the stop (run_case)
