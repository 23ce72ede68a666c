"""The pytest plugin as a profile author uses it: a new profile file, tested in ten lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from needlelab.config import FaultSpec
from needlelab.resources import drivers_dir
from needlelab.testing.plugin import wait_until


def test_a_new_profile_file_against_the_simulator(
    tmp_path: Path, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    text = (drivers_dir() / "needlelab-stim-ascii.toml").read_text()
    profile = tmp_path / "acme-stim.toml"
    profile.write_text(
        text.replace('profile = "needlelab-stim-ascii"', 'profile = "acme-stim"').replace(
            'line_ending = "\\n"', 'line_ending = "\\r\\n"'
        )
    )
    sim = sim_stim(str(profile), channels=[1, 2], pattern="random", seed=3, transport="tcp")
    driver, _hub = stim_driver(sim, profile=str(profile), poll_interval_ms=50)
    wait_until(lambda: driver.stats.samples > 20, what="samples")
    sim.inject(FaultSpec(kind="garbage", at_s=0, count=500))
    wait_until(lambda: driver.stats.malformed == sim.injected_malformed == 5, what="garbage")
    wait_until(lambda: driver.recorder.current.get(1) == sim.model.settings[1], what="in sync")
    assert b"\r\n" in sim.received_bytes() and driver.profile.profile == "acme-stim"
