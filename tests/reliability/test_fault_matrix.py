"""The fault matrix: each device kind x each fault a simulator injects, in a whole session.

Every case records the stimulator (serial, pty), the reference EMG and the caliper (BLE through
bleak) with in-process simulators, injects one fault into one device's simulator, and checks
the file afterwards:

- it verifies;
- the other devices' streams lost nothing and recorded no gap;
- the fault left its mark where it should (a gap, malformed messages, counted losses, the
  fitted drift);
- the device is streaming again at the end, where the fault allows it.

The session-level faults run the same devices the way hardware is reached: each device's
simulator in its own process (`needlelab sim session`: a pty, a bumble controller on a unix
socket), so one can be SIGKILLed alone, as a unit or dongle would vanish:

- a device's simulator process killed, and started again a second later;
- the recorder (`needlelab record`) SIGKILLed, then started again;
- the disk full under the recorder (RLIMIT_FSIZE), then a recording with room.

How much a SIGKILL of the recorder loses is measured in tests/integration/test_record_faults.py
and benchmarks/kill.py.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from needlelab.config import SessionConfig, load_config
from needlelab.events import GapEvent
from needlelab.record import open_session, verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.sim.serve import SimulatorProcess
from needlelab.testing.plugin import wait_until

from ..integration.test_record_faults import record_cmd

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


def check_others(
    report: dict[str, Any], gaps: list[GapEvent], kind: str = "", sparse: tuple[str, ...] = ()
) -> None:
    """Every stream (but those of device `kind`, if given): samples recorded, none lost, no gap.

    Streams of the `sparse` devices need not have samples (a caliper sends only on a press)."""
    for stream in report["streams"]:
        name = stream["name"]
        if not (kind and name.startswith(f"{kind}.")):
            assert stream["samples"] > 0 or name.split(".")[0] in sparse, name
            assert stream["samples_lost_known"] == 0, name
            assert not [g for g in gaps if g.stream == name], name


def demo_config() -> SessionConfig:
    """The demo's three devices, without its protocol (no prompts, no patient)."""
    config = load_config(configs_dir() / "demo.toml")
    return config.model_copy(
        update={"session": config.session.model_copy(update={"protocol": None})}
    )


def run_case(tmp_path: Path, kind: str, fault: str) -> tuple[Session, Path]:
    config = demo_config()
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
    config = config.model_copy(update={"devices": devices})
    session = Session(config, tmp_path)
    session.start()
    try:
        wait_until(lambda: session.devices["emg"].stats.samples > 1000, timeout_s=15)
        time.sleep(6.0)  # the fault at 1.5 s after the simulator started, and the way back
        wait_until(
            lambda: all_streaming(session), timeout_s=10, what="every device streaming again"
        )
    finally:
        session.stop()
    return session, session.path


def all_streaming(session: Session) -> bool:
    return all(d.stats.state.value == "streaming" for d in session.devices.values())


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
    check_others(report, gaps, kind)
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


# Session-level faults ----------------------------------------------------------------------


class ServedDevices:
    """The demo's devices, each served by its own simulator process; `config` reaches them."""

    def __init__(self, workdir: Path) -> None:
        base = demo_config()
        self.workdir = workdir
        self.alone: dict[str, SessionConfig] = {}
        for device in base.devices:
            sim = device.simulator
            if sim is not None and getattr(sim, "artefacts_from", None):
                # Its stimulator is in another process now: no artefacts to follow.
                device = device.model_copy(
                    update={"simulator": sim.model_copy(update={"artefacts_from": None})}
                )
            self.alone[device.name] = base.model_copy(update={"devices": [device]})
        self.processes: dict[str, SimulatorProcess] = {}
        self.endpoints = {name: self.start(name) for name in self.alone}
        self.config = base.model_copy(
            update={
                "devices": [
                    d.model_copy(update={**self.endpoints[d.name], "simulator": None})
                    for d in base.devices
                ]
            }
        )

    def start(self, name: str) -> dict[str, Any]:
        """(Re)start one device's simulator process; its endpoint."""
        process = SimulatorProcess(self.alone[name], self.workdir / f"sim-{name}")
        self.processes[name] = process
        return process.start()[name]

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def write_config(self, path: Path) -> Path:
        """The config as a TOML file, for `needlelab record`."""
        data = self.config.model_dump(mode="json", exclude_none=True)
        path.write_text("".join(f"{key} = {_toml(value)}\n" for key, value in data.items()))
        return path


def _toml(value: Any) -> str:
    """A JSON-like value as a TOML value (inline tables and arrays)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are spelt alike in both


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedDevices]:
    devices = ServedDevices(tmp_path)
    try:
        yield devices
    finally:
        devices.stop()


def check_comes_back(config: Path, out: Path) -> None:
    """A new recording reaches every device again and closes cleanly with data from each."""
    result = subprocess.run(
        record_cmd(config, out, "--duration", "4"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("*.sqlite")
    report = verify_report(path)
    assert report["ok"] and report["closed_cleanly"]
    check_others(report, gaps_of(path))


def where(endpoint: dict[str, Any]) -> dict[str, Any]:
    """What a driver opens: an endpoint without its measured link latency (and its floor)."""
    return {k: v for k, v in endpoint.items() if k not in ("latency_us", "latency_floor")}


@pytest.mark.parametrize("kind", KINDS)
def test_simulator_process_killed(tmp_path: Path, served: ServedDevices, kind: str) -> None:
    session = Session(served.config, tmp_path / "out")
    session.start()
    target = session.devices[kind]
    try:
        wait_until(lambda: all_streaming(session), timeout_s=15, what="every device streaming")
        time.sleep(1.0)
        t_kill = time.monotonic()
        served.kill(kind)
        wait_until(lambda: target.stats.state.value != "streaming", timeout_s=5, what="noticed")
        noticed_s = time.monotonic() - t_kill
        time.sleep(1.0)
        # The same pty link or socket (the simulator measures its link's latency anew).
        assert where(served.start(kind)) == where(served.endpoints[kind])
        wait_until(lambda: all_streaming(session), timeout_s=20, what="the device back")
        time.sleep(1.0)
    finally:
        session.stop()
    report = verify_report(session.path)
    assert report["ok"] and report["closed_cleanly"]
    gaps = gaps_of(session.path)
    check_others(report, gaps, kind)
    mine = [g for g in gaps if g.stream.startswith(f"{kind}.")]
    assert mine, "no gap recorded"
    # A restarted unit cannot say what it lost: the EMG's counter began again at 0 (which read
    # as some 650,000 samples counted lost), the stimulator and the caliper have no count.
    assert all(g.samples_lost is None for g in mine), mine
    assert target.stats.reconnects >= 1
    # The link's loss is seen at once (a closed pty, a dead HCI socket), not by a watchdog.
    assert noticed_s < 1.0, noticed_s


def test_recorder_killed(tmp_path: Path, served: ServedDevices) -> None:
    config = served.write_config(tmp_path / "served.toml")
    proc = subprocess.Popen(
        record_cmd(config, tmp_path / "killed"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("recording to"), "the recorder did not start"
    time.sleep(5.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
    (path,) = (tmp_path / "killed").glob("*.sqlite")
    report = verify_report(path)
    assert report["ok"] and not report["closed_cleanly"]
    check_others(report, gaps_of(path))
    # The simulators saw their central vanish without a goodbye; a new recorder reaches them.
    check_comes_back(config, tmp_path / "again")


def test_disk_full(tmp_path: Path, served: ServedDevices) -> None:
    config = served.write_config(tmp_path / "served.toml")
    limit = 1024 * 1024

    def small_files() -> None:  # in the recorder only: its files cannot grow past 1 MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        record_cmd(config, tmp_path / "full", "--duration", "60"),
        preexec_fn=small_files, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "recording stopped" in result.stderr and "Free disk space" in result.stderr
    (path,) = (tmp_path / "full").glob("*.sqlite")
    report = verify_report(path)
    assert report["ok"] and not report["closed_cleanly"]
    assert 0 < report["last_sample_t_s"] <= report["last_commit_t_s"]
    # The write-ahead log reaches 1 MB in about a second, before the caliper's first press.
    check_others(report, gaps_of(path), sparse=("caliper",))
    check_comes_back(config, tmp_path / "room")
