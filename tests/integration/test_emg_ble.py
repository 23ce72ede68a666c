"""EMG over BLE end to end: simulated sensor → bumble → bleak → EmgBleSensor → session file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from needlelab.config import parse_config
from needlelab.events import GapEvent
from needlelab.record import open_session, verify_report
from needlelab.session import Session
from needlelab.testing.plugin import wait_until


def emg_config(tmp_path: Path, **simulator: Any) -> Any:
    return parse_config(
        {
            "session": {"patient_id": "EMG01", "out_dir": str(tmp_path)},
            "devices": [
                {
                    "kind": "emg_ble",
                    "name": "emg",
                    "profile": "needlelab-emg-ref",
                    "stall_timeout_s": 1.0,
                    "reconnect_min_s": 0.1,
                    "reconnect_max_s": 0.5,
                    "simulator": {"seed": 3, **simulator},
                },
                {
                    "kind": "stim_serial",
                    "name": "stim",
                    "profile": "needlelab-stim-ascii",
                    "poll_interval_ms": 50,
                    "simulator": {"transport": "pty"},
                },
            ],
        }
    )


def run_session(config: Any, seconds: float, during: Any = None) -> Path:
    session = Session(config)
    session.start()
    try:
        wait_until(
            lambda: session.devices["emg"].stats.samples > 0, timeout_s=10, what="first EMG samples"
        )
        start = time.monotonic()
        if during is not None:
            during(session)
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    finally:
        session.stop()
    return session.path


def test_reference_emg_streams_without_loss(tmp_path: Path) -> None:
    path = run_session(emg_config(tmp_path, drift_ppm=100, jitter_ms=20), seconds=6)
    report = verify_report(path)
    assert report["ok"]
    with open_session(path) as s:
        blocks = s.blocks("emg.emg")
        t_ns, values = s.stream("emg.emg")
    assert values.shape[1] == 8 and values.dtype == np.float32
    indices = np.array([b.first_index for b in blocks])
    assert np.all(np.diff(indices) == 10)  # every frame, in order: 0 samples lost
    assert len(values) >= 6 * 2000 * 0.9
    counters = [b.device_counter for b in blocks]
    assert counters == list(range(counters[0], counters[0] + len(blocks)))
    # Sample times from the fitted clock are regular to well under a millisecond.
    steps_us = np.diff(t_ns) / 1e3
    assert abs(np.median(steps_us) - 500) < 1
    assert np.percentile(np.abs(steps_us - 500), 99) < 100


def test_link_loss_is_a_gap_and_the_sensor_comes_back(tmp_path: Path) -> None:
    config = emg_config(tmp_path, faults=[{"kind": "disconnect", "at_s": 1.5, "duration_s": 1.0}])
    path = run_session(config, seconds=6)
    with open_session(path) as s:
        gaps = [e for e in s.events("gap") if isinstance(e, GapEvent) and e.stream == "emg.emg"]
        states = [e.state for e in s.events("device.state") if e.source == "emg"]  # type: ignore[union-attr]
        t_ns, _ = s.stream("emg.emg")
        stim_t, _ = s.stream("stim.ch1")
    assert len(gaps) == 1 and "link lost" in gaps[0].reason
    down_s = (gaps[0].end_ns - gaps[0].start_ns) / 1e9
    assert 0.9 < down_s < 3.0  # back within 2 s of re-advertising
    assert "reconnecting" in states and states[-1] == "closed"
    assert t_ns[-1] / 1e9 > 4.0
    # The stimulator kept recording straight through the EMG outage.
    assert np.max(np.diff(stim_t)) < 0.5e9


def test_notification_loss_is_counted_from_the_sequence_counter(tmp_path: Path) -> None:
    path = run_session(emg_config(tmp_path, loss=0.05), seconds=4)
    report = verify_report(path)
    (emg,) = [st for st in report["streams"] if st["name"] == "emg.emg"]
    assert emg["samples_lost_known"] > 0 and emg["samples_lost_known"] % 10 == 0
    with open_session(path) as s:
        gaps = [e for e in s.events("gap") if isinstance(e, GapEvent)]
    assert sum(g.samples_lost or 0 for g in gaps) == emg["samples_lost_known"]
    assert all(not g.inferred for g in gaps)
