"""The real StimulatorDriver through pyserial against the simulator: pty, TCP, faults, safety."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.config import FaultSpec, StimSerialConfig
from needlelab.devices.stim_serial import ReadOnlyViolation, StimulatorDriver
from needlelab.events import DeviceStateEvent, GapEvent, StimSettings, StimSettingsEvent
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, open_session
from needlelab.sim.faults import garbage_piece_bytes
from needlelab.testing.plugin import wait_until

from .test_stim_readonly import split_reads

PROFILES = ["needlelab-stim-ascii", "needlelab-stim-frame"]


STALL_AT_S = 2.5  # the process unit falls silent here, so its log ends where the driver's does


def start_sim_process(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    """`needlelab sim stim ... --log --received` as a child process; its URL and sent log.

    The bytes it received from the driver are in `tmp_path / "sim-received.bin"`.
    """
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
            "--received",
            str(tmp_path / "sim-received.bin"),
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
    """SIGTERM, and the process must exit 0 (a clean shutdown) within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
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


def assert_only_queries(profile: str, received: bytes, channels: tuple[int, ...]) -> int:
    """Every received byte belongs to one of the profile's queries (typed from
    drivers/README.md, not computed from the profile), and is a read of its family by the
    grammar typed in test_stim_readonly; returns how many."""
    queries = QUERIES[profile]
    allowed = set.union(queries["connect"], *(queries[ch] for ch in channels))
    wire = split_reads("line" if profile.endswith("ascii") else "frame", received)
    assert set(wire) <= allowed, set(wire) - allowed
    assert b"".join(wire) == received  # nothing else at all, not even a stray byte
    return len(wire)


# The bytes of each shipped profile's queries, as drivers/README.md gives them.
QUERIES: dict[str, dict[Any, set[bytes]]] = {
    "needlelab-stim-ascii": {"connect": {b"*IDN?\n"}, 1: {b"STAT? 1\n"}, 2: {b"STAT? 2\n"}},
    "needlelab-stim-frame": {
        "connect": {bytes.fromhex("f0 01 f1 d1 0f")},
        1: {bytes.fromhex("f0 10 01 0e 5d 0f")},
        2: {bytes.fromhex("f0 10 02 3e 3e 0f")},
    },
}


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("profile", PROFILES)
def test_simulator_process_to_session_file(tmp_path: Path, transport: str, profile: str) -> None:
    """Simulator process → pty/TCP → driver → hub → writer → file → reader: exact sequence."""
    where = ["--pty"] if transport == "pty" else ["--tcp", "0"]
    proc, url, log = start_sim_process(
        tmp_path,
        *("--profile", profile, "--channels", "1,2", "--pattern", "clinical", "--seed", "5"),
        *("--fault", f"stall:{STALL_AT_S}:60"),
        *where,
    )
    t_url = time.monotonic()
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
        # The unit went silent at STALL_AT_S; give the last bytes time to arrive and be read.
        time.sleep(max(0.0, t_url + STALL_AT_S + 0.4 - time.monotonic()))
    finally:
        driver.stop()
        writer.stop()
        stop_process(proc)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e for e in logged if "write" in e] == []  # no write reached the unit process
    sent = [e for e in logged if "message" in e]
    with open_session(path) as s:
        events = s.events()
        counts = {ch: len(s.stream(f"stim.ch{ch}")[0]) for ch in (1, 2)}
    settings_events = [e for e in events if isinstance(e, StimSettingsEvent)]
    streaming = next(
        e for e in events if isinstance(e, DeviceStateEvent) and e.state == "streaming"
    )
    t_streaming = clock.anchor_monotonic_ns + streaming.t_ns
    assert driver.stats.malformed == 0 and driver.stats.reconnects == 0
    for ch in (1, 2):
        mine = [m for m in sent if m["message"] != "identity" and m["fields"]["channel"] == ch]
        runs = dedupe_runs(
            [(m["t_mono_ns"], StimSettings.model_validate(m["fields"])) for m in mine]
        )
        recorded = [e for e in settings_events if e.settings.channel == ch]
        missed = len(runs) - len(recorded)
        # Only what the unit sent before the driver was listening may be missing (a pty drops
        # what was queued before the port opened; TCP has no client to send to before it).
        assert missed >= 0 and all(t < t_streaming for t, _ in runs[:missed])
        if transport == "tcp":
            assert missed == 0 and counts[ch] == len(mine)
        assert [e.settings for e in recorded] == [settings for _, settings in runs[missed:]]
        assert len(recorded) >= 5
        assert len(mine) >= counts[ch] >= len([m for m in mine if m["t_mono_ns"] > t_streaming])
        # Each change is stamped within a sane latency of the moment the unit first sent it.
        for event, (t_sent, _) in list(zip(recorded, runs[missed:], strict=True))[1:]:
            lag_ms = (clock.anchor_monotonic_ns + event.t_ns - t_sent) / 1e6
            assert -2 < lag_ms < 150, lag_ms
    # Read-only, over the whole session: the unit received nothing but profile queries.
    n_queries = assert_only_queries(profile, (tmp_path / "sim-received.bin").read_bytes(), (1, 2))
    assert n_queries >= 2 * 40


@pytest.mark.parametrize("profile", PROFILES)
def test_garbage_and_truncated_messages_are_counted_exactly(
    profile: str, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    """1 MB of garbage and truncated messages between valid ones: no crash, nothing valid lost.

    Each garbage piece (100 random bytes) is one malformed message whatever its bytes: a line
    starts with 0xFF, which ASCII cannot decode; a frame is longer than the 69-byte maximum. A
    truncated message is the first half of a valid one (a line keeps its ending; a frame loses
    its stop byte and the next start byte cuts it short).
    """
    sim = sim_stim(profile, channels=[1], pattern="random", seed=2)
    driver, _hub = stim_driver(sim, poll_interval_ms=20, stall_timeout_s=5.0)
    wait_until(lambda: driver.stats.samples > 5, what="first samples")
    piece = garbage_piece_bytes(sim.profile.transport.framing)
    for _ in range(50):  # 50 × 20 kB of garbage + 2 truncated messages, valid traffic between
        sim.inject(FaultSpec(kind="garbage", at_s=0, count=20_000))
        sim.inject(FaultSpec(kind="truncate", at_s=0, count=2))
        time.sleep(0.02)
    wait_until(
        lambda: sim.injected_malformed == 50 * (-(-20_000 // piece) + 2),
        what="all faults sent",
    )
    wait_until(
        lambda: driver.stats.malformed == sim.injected_malformed,
        timeout_s=20,
        what="all garbage decoded",
    )
    sim.inject(FaultSpec(kind="stall", at_s=0, duration_s=30))  # the unit falls silent
    time.sleep(0.3)
    valid = [m for m in sim.sent_log() if m.message in ("status", "change")]
    assert driver.stats.samples == len(valid)
    assert driver.stats.malformed == sim.injected_malformed
    assert driver.state.value == "streaming" and driver.stats.reconnects == 0
    print(
        f"{profile}: {50 * 20_000} B garbage in {piece} B pieces + 100 truncated = "
        f"{sim.injected_malformed} malformed counted {driver.stats.malformed}; "
        f"{len(valid)} valid messages, all recorded"
    )


@pytest.mark.parametrize(
    ("profile", "transport"), [("needlelab-stim-ascii", "pty"), ("needlelab-stim-frame", "tcp")]
)
def test_stall_and_disconnect_record_gaps_and_reconnect(
    profile: str, transport: str, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    """A silent unit and a vanished port: gap events, stalled/reconnecting states, data again."""
    sim = sim_stim(profile, channels=[1], transport=transport)
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
    assert {g.stream for g in gaps} == {"stim.ch1"}
    states = [e.state for e in events if isinstance(e, DeviceStateEvent)]
    assert "stalled" in states and states.count("reconnecting") >= 2
    assert states[-1] == "streaming" and driver.stats.reconnects >= 2


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
    received = sim.received_bytes()
    assert assert_only_queries(profile, received, (1, 2)) >= 20
    assert sim.writes() == []


def test_a_spy_url_logs_only_queries_going_out(
    tmp_path: Path, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    """Through pyserial's spy:// wrapper: its TX hexdump is exactly what the unit received."""
    sim = sim_stim("needlelab-stim-frame", channels=[1, 2], pattern="random", seed=1)
    spy_log = tmp_path / "spy.txt"
    driver, _hub = stim_driver(
        f"spy://{sim.url}?file={spy_log}",
        profile="needlelab-stim-frame",
        channels=[1, 2],
        poll_interval_ms=20,
    )
    wait_until(lambda: driver.stats.samples > 30, what="samples")
    driver.stop()  # closes the port, and with it the spy's log file
    tx = b""
    for line in spy_log.read_text().splitlines():
        m = re.match(r"^\S+ TX\s+[0-9A-F]{4}  (.{49})", line)
        if m:
            tx += bytes.fromhex(m[1])
    assert tx and tx == sim.received_bytes()
    assert assert_only_queries("needlelab-stim-frame", tx, (1, 2)) >= 30
    assert driver.stats.malformed == 0


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


def test_messages_of_one_read_get_strictly_increasing_times(tmp_path: Path) -> None:
    """A unit that sends two change lines back to back (one read on the host): each line gets
    the time its last byte came, spread at the line rate, not the read's time for both."""
    import tty

    from needlelab.config import parse_config
    from needlelab.session import Session

    master, slave = os.openpty()
    tty.setraw(slave)
    line = "CHG CH1 F=2.0 PW=250 I={:.2f} W=BI M=CONT OUT=1\n"  # drivers/README.md, CHG
    sent: list[float] = []
    written: list[int] = []  # monotonic ns just before each pair was written
    config = parse_config({
        "session": {"patient_id": "ORDER1", "out_dir": str(tmp_path)},
        "devices": [{"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
                     "port": os.ttyname(slave)}],
    })  # fmt: skip
    session = Session(config)
    session.start()
    try:
        os.read(master, 4096)  # the driver's first query: its port is open
        for k in range(6):
            pair = (line.format(10 + 2 * k) + line.format(11 + 2 * k)).encode()
            written.append(time.monotonic_ns())
            os.write(master, pair)  # one write: both lines reach the host together
            sent.extend([10 + 2 * k, 11 + 2 * k])
            end = time.monotonic() + 0.15
            while time.monotonic() < end:  # take (and ignore) the driver's queries
                os.read(master, 4096) if select.select([master], [], [], 0.05)[0] else None
        time.sleep(0.2)
    finally:
        session.stop()
        os.close(master)
        os.close(slave)
    with open_session(session.path) as s:
        t_ns, values = s.stream("stim.ch1")
    assert list(values[:, 2]) == sent  # intensity, in the order sent
    assert np.all(np.diff(t_ns) > 0)
    # A pty delivers faster than the line rate: no line is stamped before it was written
    # (less the profile's 1 ms latency), nor more than one line time (47 bytes) before it.
    lag_ms = (t_ns + session.clock.anchor_monotonic_ns - np.repeat(written, 2)) / 1e6
    assert np.all(lag_ms > -1.0 - 47 * 10 / 115200 * 1e3), lag_ms
    assert np.all(lag_ms < 100), lag_ms


@pytest.mark.parametrize(
    ("profile", "transport"), [(p, t) for p in PROFILES for t in ("pty", "tcp")]
)
def test_the_unit_is_asked_on_the_poll_interval_not_in_pairs(
    profile: str, transport: str, sim_stim: Callable[..., Any], stim_driver: Callable[..., Any]
) -> None:
    """Polled every 20 ms, the unit answers every 20 ms by its own log of what it sent. The
    driver's read once waited out the port's 50 ms timeout while a poll fell due: the polls then
    went two at once, about 52 ms apart (half the gaps under 1 ms, half over 50 ms)."""
    sim = sim_stim(profile, transport=transport, channels=[1])
    driver, _hub = stim_driver(sim, poll_interval_ms=20, stall_timeout_s=5.0)
    wait_until(lambda: driver.stats.samples > 5, what="first samples")
    start = len(sim.sent_log())
    time.sleep(2.0)
    sent = [m.t_mono_ns for m in sim.sent_log()[start:] if m.message == "status"]
    gaps_ms = np.diff(sent) / 1e6
    assert len(gaps_ms) >= 60, f"{len(gaps_ms)} replies in 2 s polled every 20 ms"
    pairs, late = np.mean(gaps_ms < 5), np.mean(gaps_ms > 40)
    assert pairs < 0.1 and late < 0.1, (
        f"gaps between replies: {pairs:.0%} under 5 ms, {late:.0%} over 40 ms; "
        f"p10/p50/p90 {np.percentile(gaps_ms, [10, 50, 90]).round(1)} ms"
    )
