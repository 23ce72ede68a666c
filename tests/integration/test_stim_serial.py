"""The real StimulatorDriver through pyserial against the simulator: pty, TCP, faults, safety."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from needlelab.clock import SessionClock
from needlelab.config import FaultSpec, StimSerialConfig
from needlelab.devices.codecs import StimProtocol
from needlelab.devices.stim_serial import ReadOnlyViolation, StimulatorDriver
from needlelab.events import DeviceStateEvent, GapEvent, StimSettings, StimSettingsEvent
from needlelab.hub import Hub
from needlelab.profiles import load_stim_profile
from needlelab.record import SessionMeta, SessionWriter, open_session
from needlelab.testing.plugin import wait_until

PROFILES = ["needlelab-stim-ascii", "needlelab-stim-frame"]


def start_sim_process(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    log = tmp_path / "sim-log.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "needlelab.cli",
            "sim",
            "stim",
            "--log",
            str(log),
            "--workdir",
            str(tmp_path),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url, proc.stderr.read() if proc.stderr else "no url"
    return proc, url, log


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def dedupe_runs(readings: list[tuple[int, StimSettings]]) -> list[tuple[int, StimSettings]]:
    """The first (time, settings) of each run of identical consecutive readings."""
    out: list[tuple[int, StimSettings]] = []
    for t, r in readings:
        if not out or out[-1][1] != r:
            out.append((t, r))
    return out


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("profile", PROFILES)
def test_simulator_process_to_session_file(tmp_path: Path, transport: str, profile: str) -> None:
    """Simulator process → pty/TCP → driver → hub → writer → file → reader: exact sequence."""
    where = ["--pty"] if transport == "pty" else ["--tcp", "0"]
    proc, url, log = start_sim_process(
        tmp_path,
        "--profile",
        profile,
        "--channels",
        "1,2",
        "--pattern",
        "random",
        "--seed",
        "5",
        *where,
    )
    assert url.startswith("socket://127.0.0.1:") if transport == "tcp" else Path(url).exists()
    clock = SessionClock()
    hub = Hub(clock)
    path = tmp_path / "session.sqlite"
    writer = SessionWriter(
        path,
        hub,
        SessionMeta(
            session_id="t",
            patient_id="T1",
            anchor_monotonic_ns=clock.anchor_monotonic_ns,
            anchor_wall_ns=clock.anchor_wall_ns,
            config_json="{}",
            software_version="test",
        ),
    )
    writer.start()
    config = StimSerialConfig(
        kind="stim_serial",
        name="stim",
        profile=profile,
        port=url,
        channels=[1, 2],
        poll_interval_ms=50,
    )
    driver = StimulatorDriver(config, hub)
    driver.start()
    try:
        wait_until(lambda: driver.stats.samples > 40, timeout_s=10, what="samples")
        time.sleep(3.0)
    finally:
        stop_process(proc)  # the unit goes first: every message it sent is in its log
        time.sleep(0.3)
        driver.stop()
        writer.stop()
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    with open_session(path) as s:
        events = [e for e in s.events("stim.settings") if isinstance(e, StimSettingsEvent)]
        counts = {ch: len(s.stream(f"stim.ch{ch}")[0]) for ch in (1, 2)}
    assert driver.stats.malformed == 0
    for ch in (1, 2):
        mine = [m for m in sent if m["message"] != "identity" and m["fields"]["channel"] == ch]
        runs = dedupe_runs(
            [(m["t_mono_ns"], StimSettings.model_validate(m["fields"])) for m in mine]
        )
        recorded = [e for e in events if e.settings.channel == ch]
        # Messages the unit sent before the driver opened the port are not the driver's to see.
        expected = runs[len(runs) - len(recorded) :]
        assert [e.settings for e in recorded] == [settings for _, settings in expected]
        assert len(recorded) >= 3
        assert counts[ch] >= len(mine) - 5
        # Each change is stamped within a sane latency of the moment the unit first sent it.
        for event, (t_sent, _) in list(zip(recorded, expected, strict=True))[1:]:
            lag_ms = (clock.anchor_monotonic_ns + event.t_ns - t_sent) / 1e6
            assert -2 < lag_ms < 100, lag_ms


def test_garbage_and_truncated_lines_are_counted_exactly(
    sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    """1 MB of garbage and truncated lines between valid ones: no crash, nothing valid lost."""
    sim = sim_stim("needlelab-stim-ascii", channels=[1], pattern="random", seed=2)
    driver, _hub = stim_driver(sim, poll_interval_ms=20, stall_timeout_s=5.0)
    wait_until(lambda: driver.stats.samples > 5, what="first samples")
    for _ in range(20):  # 20 × 50 kB of garbage + 5 truncated lines, with valid traffic between
        sim.inject(FaultSpec(kind="garbage", at_s=0, count=50_000))
        sim.inject(FaultSpec(kind="truncate", at_s=0, count=5))
        time.sleep(0.05)
    assert sim.injected_malformed == 20 * (500 + 5)
    wait_until(
        lambda: driver.stats.malformed == sim.injected_malformed,
        timeout_s=20,
        what="all garbage decoded",
    )
    sim.inject(FaultSpec(kind="stall", at_s=0, duration_s=30))  # the unit falls silent
    time.sleep(0.3)
    valid = [m for m in sim.sent_log() if m.message in ("status", "change")]
    assert driver.stats.samples == len(valid)
    assert driver.stats.malformed == sim.injected_malformed == 10_100
    assert driver.state.value == "streaming"


@pytest.mark.parametrize("profile", PROFILES)
def test_stall_and_disconnect_record_gaps_and_reconnect(
    profile: str, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    sim = sim_stim(profile, channels=[1])
    driver, hub = stim_driver(
        sim, poll_interval_ms=50, stall_timeout_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.5
    )
    events: list[Any] = []
    hub.subscribe(events.append)
    wait_until(lambda: driver.stats.samples > 5, what="first samples")
    sim.inject(FaultSpec(kind="stall", at_s=0, duration_s=1.5))
    wait_until(lambda: any(isinstance(e, GapEvent) for e in events), timeout_s=6, what="gap 1")
    before = driver.stats.samples
    sim.inject(FaultSpec(kind="disconnect", at_s=0, duration_s=1.0))
    wait_until(lambda: sum(isinstance(e, GapEvent) for e in events) == 2, timeout_s=8, what="gap 2")
    wait_until(lambda: driver.stats.samples > before + 5, what="data after reconnect")
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert "no data" in gaps[0].reason and 1.0 < (gaps[0].end_ns - gaps[0].start_ns) / 1e9 < 4
    assert "link lost" in gaps[1].reason or "connect" in gaps[1].reason
    assert 0.9 < (gaps[1].end_ns - gaps[1].start_ns) / 1e9 < 4
    states = [e.state for e in events if isinstance(e, DeviceStateEvent)]
    assert "stalled" in states and states.count("reconnecting") >= 2
    assert driver.stats.reconnects >= 2


@pytest.mark.parametrize("profile", PROFILES)
def test_driver_only_ever_writes_read_only_queries(
    profile: str, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    sim = sim_stim(profile, channels=[1, 2], pattern="random", seed=9)
    driver, _hub = stim_driver(sim, poll_interval_ms=20, stall_timeout_s=0.5, reconnect_min_s=0.05)
    wait_until(lambda: driver.stats.samples > 20, what="samples")
    sim.inject(FaultSpec(kind="garbage", at_s=0, count=2000))
    sim.inject(FaultSpec(kind="disconnect", at_s=0, duration_s=0.3))
    wait_until(
        lambda: driver.stats.reconnects >= 1 and driver.stats.samples > 60,
        timeout_s=8,
        what="reconnect",
    )
    with pytest.raises(ReadOnlyViolation):
        driver._send(b"OUT 1\n" if profile.endswith("ascii") else b"\xf0\x20\x01\x0f")
    time.sleep(0.2)
    driver.stop()
    protocol = StimProtocol(load_stim_profile(profile))
    allowed = {protocol.encode_query(q, ch) for q in protocol.profile.queries for ch in (1, 2)}
    received = sim.received_bytes()
    assert received
    units, malformed = protocol.codec.feed(received)
    assert malformed == 0 and protocol.codec._buf == b""
    assert {protocol.codec.encode(u) for u in units} <= allowed
    assert b"".join(protocol.codec.encode(u) for u in units) == received  # nothing else at all


def test_byte_exact_session_against_a_scripted_device() -> None:
    """Expected writes, canned replies, nothing left unconsumed (PyMeasure style)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = [
        (b"*IDN?\n", b"NEEDLELAB,BRIDGE,SN9,1.2\n"),
        (b"STAT? 1\n", b"STAT CH1 F=2.0 PW=250 I=3.50 W=BI M=CONT OUT=1\n"),
        (
            b"STAT? 1\n",
            b"CHG CH1 F=2.0 PW=250 I=4.00 W=BI M=CONT OUT=1\n"
            b"STAT CH1 F=2.0 PW=250 I=4.00 W=BI M=CONT OUT=1\n",
        ),
    ]
    seen: list[bytes] = []

    def device() -> None:
        conn, _ = listener.accept()
        with conn:
            for expected, reply in script:
                got = b""
                while len(got) < len(expected):
                    got += conn.recv(len(expected) - len(got))
                seen.append(got)
                conn.sendall(reply)
            time.sleep(0.3)

    thread = threading.Thread(target=device)
    thread.start()
    hub = Hub(SessionClock())
    events: list[Any] = []
    hub.subscribe(events.append)
    config = StimSerialConfig(
        kind="stim_serial",
        name="stim",
        profile="needlelab-stim-ascii",
        port=f"socket://127.0.0.1:{port}",
        poll_interval_ms=100,
    )
    driver = StimulatorDriver(config, hub)
    driver.start()
    thread.join(5)
    driver.stop()
    listener.close()
    assert seen == [expected for expected, _ in script]
    assert driver.identity == {"model": "BRIDGE", "serial": "SN9", "firmware": "1.2"}
    assert driver.stats.malformed == 0 and driver.stats.samples == 3
    changes = [e.settings.intensity_ma for e in events if isinstance(e, StimSettingsEvent)]
    assert changes == [3.5, 4.0]


def test_bad_port_is_a_reconnect_not_a_crash(stim_driver: Callable[..., Any]) -> None:
    driver, _hub = stim_driver(
        f"/nonexistent/tty-{os.getpid()}", profile="needlelab-stim-ascii", reconnect_min_s=0.05
    )
    wait_until(lambda: driver.stats.reason.startswith("connect failed"), what="failure")
    assert driver.state.value == "reconnecting"
