"""A simulator's scheduled faults run on the time since a recorder first reached it (a BLE
central connected; a stimulator's first query): one due 0.3 s in reaches a recorder that comes
1.5 s after the simulator started (a fault fired before anyone listened tests nothing; it used
to, whenever a latency probe or a busy machine made the connection late)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from needlelab.config import FaultSpec
from needlelab.testing.plugin import wait_until


@pytest.mark.parametrize("kind", ["emg_ble", "caliper_ble"])
def test_a_fault_due_before_anyone_connected_reaches_the_recorder(
    sim_ble: Callable[..., Any], ble_sensor: Callable[..., Any], kind: str
) -> None:
    sim = sim_ble(kind, faults=[{"kind": "garbage", "at_s": 0.3, "count": 4}])
    time.sleep(1.5)  # the simulator is up and advertising; nobody has connected yet
    device, _ = ble_sensor(sim)
    wait_until(lambda: device.stats.malformed >= 4, timeout_s=15, what="the garbage counted")
    time.sleep(0.5)
    assert device.stats.malformed == 4  # once, not again


def test_a_stimulator_fault_due_before_the_first_query_reaches_the_driver(
    sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    sim = sim_stim(faults=[FaultSpec(kind="garbage", at_s=0.3, count=5)])
    time.sleep(1.5)  # the unit is up on its pty; no driver has opened it yet
    driver, _ = stim_driver(sim)
    wait_until(lambda: driver.stats.malformed >= 1, timeout_s=10, what="the garbage counted")
    time.sleep(0.5)
    assert driver.stats.malformed == sim.wire.counts().malformed  # what the unit's log says it sent
