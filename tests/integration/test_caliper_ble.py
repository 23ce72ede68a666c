"""Calipers over BLE: simulated Sylvac and reference calipers through bleak to the session file."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from needlelab.config import parse_config
from needlelab.devices.ble_sensor import decode_caliper
from needlelab.events import DeviceStateEvent
from needlelab.record import open_session
from needlelab.session import Session
from needlelab.testing.plugin import wait_until


def test_sylvac_value_is_tenths_of_micrometres() -> None:
    # 45.3 mm = 0.0453 m = 453000 x 1e-7 m; a 3-byte notification is malformed.
    good, readings, malformed = decode_caliper(
        "sylvac-simple", 0.0001, [struct.pack("<i", 453000), b"\x01\x02\x03", struct.pack("<i", -5)]
    )
    assert good.tolist() == [0, 2] and malformed == 1
    assert readings[:, 0].tolist() == pytest.approx([45.3, -0.0005])
    assert readings[:, 1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("profile", ["sylvac-simple", "needlelab-caliper-ref"])
def test_trial_distances_reach_the_file_exactly(tmp_path: Path, profile: str) -> None:
    config = parse_config(
        {
            "session": {"patient_id": "TPD01", "out_dir": str(tmp_path)},
            "devices": [
                {
                    "kind": "caliper_ble",
                    "name": "caliper",
                    "profile": profile,
                    "simulator": {"seed": 4, "press_every_s": 0.2},
                }
            ],
        }
    )
    session = Session(config)
    session.start()
    try:
        wait_until(
            lambda: session.devices["caliper"].stats.samples >= 15, timeout_s=15, what="readings"
        )
        time.sleep(0.1)
    finally:
        session.stop()
    assert session.simulators is not None
    sim = session.simulators.ble_devices["caliper"]  # type: ignore[union-attr]
    with open_session(session.path) as s:
        t_ns, values = s.stream("caliper.distance")
        assert s.streams["caliper.distance"].units == ("mm", "bool")
    pressed = values[values[:, 1] == 1.0, 0]
    assert len(pressed) >= 5
    assert np.allclose(pressed, sim.pressed_mm[: len(pressed)], atol=1e-3)
    assert np.all(np.diff(t_ns) > 0)
    # The staircase moves in 5 mm steps around the simulated threshold.
    assert set(np.round(np.diff(pressed), 3)) <= {-5.0, 0.0, 5.0}


def test_caliper_faults_are_counted_and_it_comes_back_after_a_link_loss(
    sim_ble: Callable[..., Any], ble_sensor: Callable[..., Any]
) -> None:
    faults = [
        {"kind": "garbage", "at_s": 0.6, "count": 4},
        {"kind": "truncate", "at_s": 0.6, "count": 2},  # the next two readings
        {"kind": "disconnect", "at_s": 1.5, "duration_s": 0.5},
    ]
    sim = sim_ble("caliper_ble", faults=faults, press_every_s=0.1)
    device, hub = ble_sensor(sim)
    events: list[Any] = []
    hub.subscribe(events.append)
    wait_until(lambda: device.stats.reconnects >= 1, timeout_s=10, what="reconnected")
    before = device.stats.samples
    wait_until(lambda: device.stats.samples >= before + 5, timeout_s=5, what="readings again")
    assert device.stats.malformed == 6
    states = [e.state for e in events if isinstance(e, DeviceStateEvent)]
    assert "reconnecting" in states and states[-1] == "streaming"
    # Whatever was pressed while the link was up reached the ring, the cut readings excepted.
    _t, values = hub.ring("caliper.distance").latest()
    pressed = values[values[:, 1] == 1.0, 0]
    assert set(np.round(pressed, 3)) <= set(np.round(sim.sensor.pressed_mm, 3))
