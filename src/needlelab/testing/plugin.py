"""needlelab's pytest plugin: simulated stimulators and BLE sensors, and the real drivers wired
to them, cleaned up after.

A simulated stimulator is a unit that would obey a write command, so the plugin fails any test
during which a write reached one (any simulated stimulator of the test process: these fixtures',
a session's, one a test started itself), at its teardown, naming the bytes. A test that sends
writes on purpose says so with `@pytest.mark.stim_writes_expected`.

Kept import-light: heavy modules load inside the fixtures, so the plugin costs nothing in test
runs that do not use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from needlelab.config import CaliperBleConfig, EmgBleConfig, FaultSpec
    from needlelab.devices.base import Device
    from needlelab.devices.stim_serial import StimulatorDriver
    from needlelab.hub import Hub
    from needlelab.sim.serve import SimulatorSet
    from needlelab.sim.stim_server import SimulatedStim


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin's marker (suites may run with --strict-markers)."""
    config.addinivalue_line(
        "markers",
        "stim_writes_expected: the test sends write commands to a simulated stimulator on "
        "purpose, so needlelab's no-write check does not fail it",
    )


@pytest.fixture(autouse=True)
def _no_write_reached_a_simulated_stimulator(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test, at its teardown, if any write command (or bytes that are no read) reached
    a simulated stimulator of this process while it ran."""

    def count() -> int:
        module = sys.modules.get("needlelab.sim.stim_server")  # not loaded: no simulator ran
        return len(module.writes_received()) if module is not None else 0

    before = count()
    yield
    if count() == before or request.node.get_closest_marker("stim_writes_expected"):
        return
    from needlelab.sim.stim_server import writes_received

    arrived = writes_received()[before:]
    shown = "; ".join(str(w) for w in arrived[:3]) + (" ..." if len(arrived) > 3 else "")
    pytest.fail(
        f"{len(arrived)} write command(s) reached a simulated stimulator (needlelab must only "
        f"ever send reads): {shown}",
        pytrace=False,
    )


@pytest.fixture
def sim_stim(tmp_path: Path) -> Iterator[Callable[..., SimulatedStim]]:
    """Factory: `sim_stim(profile, transport="pty"|"tcp", channels=[1], pattern=..., seed=...,
    faults=[...])` starts a simulated stimulator and returns it (`.url`, `.inject(fault)`,
    `.received_bytes()`, `.sent_log()`, `.changes()`, `.writes()`). Every one is stopped at
    teardown, and a write that reached one fails the test."""
    from needlelab.config import StimSimulatorConfig
    from needlelab.profiles import load_stim_profile
    from needlelab.sim.stim_server import SimulatedStim

    started: list[SimulatedStim] = []

    def make(
        profile: str | Path = "needlelab-stim-ascii",
        transport: str = "pty",
        channels: list[int] | None = None,
        pattern: str = "clinical",
        seed: int = 0,
        faults: list[FaultSpec] | None = None,
    ) -> SimulatedStim:
        sim_config = StimSimulatorConfig.model_validate(
            {"transport": transport, "pattern": pattern, "seed": seed, "faults": faults or []}
        )
        sim = SimulatedStim(
            load_stim_profile(profile),
            sim_config,
            channels or [1],
            tmp_path,
            name=f"sim{len(started)}",
            profile_source=profile,
        )
        started.append(sim.start())
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def stim_driver() -> Iterator[Callable[..., tuple[StimulatorDriver, Hub]]]:
    """Factory: `stim_driver(sim_or_url, profile=..., channels=[1], **config)` starts a real
    `StimulatorDriver` on a fresh hub, connected to a simulator (or any URL); stopped at
    teardown."""
    from needlelab.clock import SessionClock
    from needlelab.config import StimSerialConfig
    from needlelab.devices.stim_serial import StimulatorDriver
    from needlelab.hub import Hub

    started: list[StimulatorDriver] = []

    def make(
        target: Any,
        profile: str | Path | None = None,
        channels: list[int] | None = None,
        **config: Any,
    ) -> tuple[StimulatorDriver, Hub]:
        url = target if isinstance(target, str) else target.url
        if profile is None:
            if isinstance(target, str):
                raise TypeError("stim_driver(url) needs profile=...; a simulator knows its own")
            profile = target.profile_source
        hub = Hub(SessionClock())
        cfg = StimSerialConfig.model_validate(
            {
                "kind": "stim_serial",
                "name": config.pop("name", "stim"),
                "profile": str(profile),
                "port": url,
                "channels": channels or getattr(target, "channels", [1]),
                **config,
            }
        )
        driver = StimulatorDriver(cfg, hub)
        driver.start()
        started.append(driver)
        return driver, hub

    yield make
    for driver in started:
        driver.stop()


class SimulatedBle:
    """A simulated BLE sensor served in-process for a test: `.sensor` (the simulator; EMG has
    `.inject(fault)`), `.config` (a device config pointing at it, as for real hardware)."""

    def __init__(self, sims: SimulatorSet, config: EmgBleConfig | CaliperBleConfig) -> None:
        self.sims = sims
        self.config = config
        self.sensor = sims.ble_devices[config.name]


@pytest.fixture
def sim_ble(tmp_path: Path) -> Iterator[Callable[..., SimulatedBle]]:
    """Factory: `sim_ble("emg_ble"|"caliper_ble", profile=..., name=..., **simulator)` serves a
    simulated BLE sensor on an in-process bumble link and returns a `SimulatedBle`. Simulator
    fields are those of the config's `[simulator]` table (drift_ppm, jitter_ms, loss, faults, ...).
    Every one is stopped at teardown."""
    from needlelab.config import CaliperBleConfig, EmgBleConfig, parse_config
    from needlelab.sim.serve import SimulatorSet

    started: list[SimulatorSet] = []

    def make(
        kind: str = "emg_ble",
        profile: str | Path | None = None,
        name: str | None = None,
        **simulator: Any,
    ) -> SimulatedBle:
        name = name or kind.removesuffix("_ble")
        default = "needlelab-emg-ref" if kind == "emg_ble" else "needlelab-caliper-ref"
        device = {"kind": kind, "name": name, "profile": str(profile or default)}
        config = parse_config(
            {
                "session": {"patient_id": "TEST", "out_dir": str(tmp_path)},
                "devices": [{**device, "simulator": simulator}],
            },
            "sim_ble",
        )
        sims = SimulatorSet(config, tmp_path / f"sim-{name}", tag=f"test-{id(config)}")
        started.append(sims)
        endpoint = sims.start()[name]
        real = config.devices[0].model_copy(update={**endpoint, "simulator": None})
        assert isinstance(real, EmgBleConfig | CaliperBleConfig)
        return SimulatedBle(sims, real)

    yield make
    for sims in started:
        sims.stop()


@pytest.fixture
def ble_sensor() -> Iterator[Callable[..., tuple[Device, Hub]]]:
    """Factory: `ble_sensor(sim, **config)` starts the real BLE driver (bleak, needlelab's bumble
    backend) on a fresh hub, connected to a `sim_ble` simulator; stopped at teardown."""
    from needlelab.clock import SessionClock
    from needlelab.devices import create_device
    from needlelab.hub import Hub

    started: list[Device] = []

    def make(sim: SimulatedBle, **config: Any) -> tuple[Device, Hub]:
        hub = Hub(SessionClock())
        cfg = type(sim.config).model_validate({**sim.config.model_dump(), **config})
        device = create_device(cfg, hub)
        device.start()
        started.append(device)
        return device, hub

    yield make
    for device in started:
        device.stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll `predicate` until true, or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what or predicate}")
