"""Data-quality counts from the simulators' wire to the file, `verify`, `info` and the report.

Every simulator notes what it truly sent, message by message (`WireLog`): well-formed messages,
malformed ones (garbage, truncated frames) and copies sent right after their original (the
`duplicate` fault). Faults go into both stimulator protocols, the reference EMG sensor, the
reference caliper and a Sylvac caliper in one recorded session; afterwards the counts stored in
the FILE must be the simulators': malformed = malformed sent, resyncs = runs of malformed sent,
duplicates = copies sent where the frames carry a counter (EMG and reference caliper), 0 where
they do not (the stimulator protocols, Sylvac: a copy is a reading like any other).

A killed recorder's file holds the counts as they stood at most `KILL_LAG_S` before the kill.
"""

from __future__ import annotations

import html.parser
import itertools
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from needlelab.clinic.report import render_report
from needlelab.clinic.scoring import score_session
from needlelab.config import FaultSpec, parse_config
from needlelab.events import DataQualityEvent
from needlelab.record import open_session, verify_report
from needlelab.record.verify import format_info, format_verify, info_report
from needlelab.session import Session
from needlelab.sim.faults import WireCounts
from needlelab.testing.plugin import wait_until

from .test_record_faults import CONFIG, record_cmd

COUNTERS = {"emg", "caliper"}  # devices whose frames carry a sequence counter
KILL_LAG_S = 1.5  # at most 1 s between recordings of changed counts, plus service and commit


def quality_session(tmp_path: Path) -> Session:
    config = parse_config(
        {
            "session": {"patient_id": "QUAL01", "out_dir": str(tmp_path)},
            "devices": [
                {"kind": "stim_serial", "name": "stima", "profile": "needlelab-stim-ascii",
                 "poll_interval_ms": 20, "stall_timeout_s": 5.0,
                 "simulator": {"transport": "pty", "pattern": "random", "seed": 3}},
                {"kind": "stim_serial", "name": "stimf", "profile": "needlelab-stim-frame",
                 "poll_interval_ms": 20, "stall_timeout_s": 5.0,
                 "simulator": {"transport": "tcp", "pattern": "random", "seed": 4}},
                {"kind": "emg_ble", "name": "emg", "profile": "needlelab-emg-ref",
                 "simulator": {"seed": 1}},
                {"kind": "caliper_ble", "name": "caliper", "profile": "needlelab-caliper-ref",
                 "simulator": {"seed": 2, "press_every_s": 0.4}},
                {"kind": "caliper_ble", "name": "sylvac", "profile": "sylvac-simple",
                 "simulator": {"seed": 5, "press_every_s": 0.4}},
            ],
        }
    )  # fmt: skip
    return Session(config, tmp_path)


def fault(kind: str, count: int) -> FaultSpec:
    return FaultSpec(kind=kind, at_s=0, count=count)  # type: ignore[arg-type]


def expected(name: str, wire: WireCounts) -> tuple[int, int, int]:
    """What the file must say: (malformed, duplicates, resyncs) as the simulator sent them."""
    return wire.malformed, wire.duplicates if name in COUNTERS else 0, wire.resyncs


def counted(stats: Any) -> tuple[int, int, int]:
    return stats.malformed, stats.duplicates, stats.resyncs


class _Tables(html.parser.HTMLParser):
    """The rows of the report's device-quality table, as text cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in = self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._in = ("data-section", "device-quality") in attrs
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag == "td":
            self._cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif tag == "td":
            self._cell = False

    def handle_data(self, data: str) -> None:
        if self._in and self._cell:
            self.rows[-1][-1] += data


def test_counts_in_the_file_are_what_the_simulators_sent(tmp_path: Path) -> None:
    session = quality_session(tmp_path)
    session.start()
    sims = session.simulators
    assert sims is not None
    wires = {name: sim.wire for name, sim in sims.stims.items()}  # type: ignore[union-attr]
    wires |= {name: sim.wire for name, sim in sims.ble_devices.items()}  # type: ignore[union-attr]
    stims = list(sims.stims.values())  # type: ignore[union-attr]
    ble = sims.ble_devices  # type: ignore[union-attr]
    try:
        wait_until(
            lambda: all(d.stats.samples > 0 for d in session.devices.values()),
            timeout_s=20,
            what="every device's first samples",
        )
        for r in range(4):  # faults with valid traffic between, so that runs are apart
            for stim in stims:
                stim.inject(fault("garbage", 1500))
                stim.inject(fault("truncate", 2))  # right after the garbage: the same run
            ble["emg"].inject(fault("garbage", 20))
            ble["sylvac"].inject(fault("garbage", 3))
            time.sleep(0.15)
            for stim in stims:
                stim.inject(fault("duplicate", 2))
            ble["emg"].inject(fault("truncate", 2))
            # A trial sends two readings while the jaws move, then the press: a duplicate of 3
            # repeats the press too, a truncation of 2 cuts only the moving readings.
            ble["caliper"].inject(fault("truncate", 2) if r % 2 else fault("duplicate", 3))
            ble["sylvac"].inject(fault("duplicate", 1) if r % 2 else fault("truncate", 1))
            time.sleep(0.15)
            ble["emg"].inject(fault("duplicate", 3))
            ble["caliper"].inject(fault("garbage", 2))
            time.sleep(0.5)  # a trial of each caliper
        # Until every decoder has seen everything sent (or a while: the asserts say what differs).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            counted(session.devices[n].stats) != expected(n, w.counts()) for n, w in wires.items()
        ):
            time.sleep(0.05)
    finally:
        session.stop()
    truth = {name: expected(name, wire.counts()) for name, wire in wires.items()}
    print({name: (wire.counts(), truth[name]) for name, wire in wires.items()})
    for name, wire in wires.items():
        w = wire.counts()
        assert w.malformed > 0 and w.duplicates > 0 and w.resyncs > 1, (name, w)  # faults went out
        assert w.resyncs < w.malformed, (name, w)  # some runs were longer than one message

    # The file: each device's last device.quality event.
    with open_session(session.path) as s:
        last = {e.source: e for e in s.events("device.quality") if isinstance(e, DataQualityEvent)}
        emg_blocks = s.blocks("emg.emg")
        presses = [round(float(d), 3) for d, b in s.stream("caliper.distance")[1] if b == 1.0]
    stored = {n: (e.malformed, e.duplicates, e.resyncs) for n, e in last.items()}
    assert stored == truth

    # A duplicate is dropped, not recorded again: EMG blocks never overlap, and every button
    # press of the reference caliper is in the file once (a run of what the simulator pressed).
    for before, block in itertools.pairwise(emg_blocks):
        assert block.first_index >= before.first_index + before.n
    sim_presses = [round(d, 3) for d in ble["caliper"].pressed_mm]  # type: ignore[attr-defined]
    assert len(presses) >= 5
    runs = [sim_presses[k : k + len(presses)] for k in range(len(sim_presses))]
    assert presses in runs, (presses, sim_presses)

    # verify, info (JSON and text) and the report say the same.
    report = verify_report(session.path)
    info = info_report(session.path)
    for r in (report, info):
        assert {q["device"]: (q["malformed"], q["duplicates"], q["resyncs"])
                for q in r["quality"]} == truth  # fmt: skip
    for text in (format_verify(report), format_info(info)):
        for name, (m, d, r) in truth.items():
            assert re.search(rf"^\s+{name}\s+{m}\s+{d}\s+{r}\s+[\d.]+$", text, re.M), (name, text)
    scores = score_session(session.path)
    assert {q.device: (q.malformed, q.duplicates, q.resyncs)
            for q in scores.device_quality} == truth  # fmt: skip
    tables = _Tables()
    tables.feed(render_report(scores))
    rows = {row[0]: tuple(int(c) for c in row[1:4]) for row in tables.rows if row}
    assert rows == truth


def test_a_clean_session_records_zero_counts_for_every_device(tmp_path: Path) -> None:
    """No fault: every device still records its counts, as zeros (counted, none found)."""
    config = parse_config(
        {
            "session": {"patient_id": "QUAL02", "out_dir": str(tmp_path)},
            "devices": [
                {"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
                 "poll_interval_ms": 50, "simulator": {"transport": "pty", "seed": 1}},
                {"kind": "stim_manual", "name": "manual"},
            ],
        }
    )  # fmt: skip
    session = Session(config, tmp_path)
    session.start()
    try:
        wait_until(lambda: session.devices["stim"].stats.samples > 5, what="samples")
    finally:
        session.stop()
    report = verify_report(session.path)
    assert [(q["device"], q["malformed"], q["duplicates"], q["resyncs"]) for q in
            report["quality"]] == [("stim", 0, 0, 0), ("manual", 0, 0, 0)]  # fmt: skip
    assert report["quality"][0]["as_of_t_s"] == pytest.approx(report["closed_t_s"], abs=1.0)


def test_a_killed_recording_holds_the_counts_up_to_a_second_before_the_kill(
    tmp_path: Path, sim_stim: Callable[..., Any]
) -> None:
    """`needlelab record` SIGKILLed while garbage keeps coming (3 runs, each with its own
    simulator): its file counts no more than had been sent by the kill, and everything sent
    until KILL_LAG_S before it."""
    rng = random.Random(12)
    lags = []
    for run in range(3):
        sim = sim_stim("needlelab-stim-ascii", channels=[1], pattern="random", seed=run)
        config = tmp_path / f"quality{run}.toml"
        config.write_text(CONFIG.format(port=sim.url))
        out = tmp_path / f"run{run}"
        proc = subprocess.Popen(
            record_cmd(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        try:
            assert proc.stderr.readline().startswith("recording to"), "recorder did not start"
            wait_until(lambda: sim.queries_answered > 0, what="the recorder polling")  # noqa: B023
            kill_at = time.monotonic() + rng.uniform(2.5, 4.0)
            while time.monotonic() < kill_at:
                sim.inject(fault("garbage", 200))  # two pieces: one run of two
                time.sleep(rng.uniform(0.05, 0.25))
            proc.send_signal(signal.SIGKILL)
            kill_ns = time.monotonic_ns()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        (path,) = out.glob("*.sqlite")
        with open_session(path) as s:
            last = [e for e in s.events("device.quality") if isinstance(e, DataQualityEvent)][-1]
        by_kill = sim.wire.at(kill_ns)
        assert last.malformed <= by_kill.malformed and last.resyncs <= by_kill.resyncs
        # The first garbage the file does not count: how long before the kill it was sent.
        missing = [c for c in sim.wire.history if c.malformed > last.malformed]
        lag_s = (kill_ns - missing[0].t_mono_ns) / 1e9 if missing else 0.0
        lags.append(lag_s)
        assert last.malformed > 0 and lag_s <= KILL_LAG_S, (run, last, lag_s)
    print(f"the counts in the killed files missed what was sent in the last {lags} s")
