"""The simulated stimulator's parts: settings patterns, fault schedule, bad bytes, CLI arguments."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import re
import socket
import struct
from pathlib import Path

import pytest

from needlelab.config import FaultSpec, StimSimulatorConfig
from needlelab.devices.codecs import StimProtocol
from needlelab.events import StimSettings
from needlelab.profiles import load_stim_profile
from needlelab.sim.cli import add_sim_parser, parse_fault
from needlelab.sim.faults import FaultSchedule, garbage_pieces, truncated
from needlelab.sim.stim_server import (
    SimulatedStim,
    StimUnitModel,
    start_simulated_stim,
    writes_received,
)
from needlelab.testing.plugin import wait_until

from .test_stim_protocol import crc16_bitwise

ASCII = load_stim_profile("needlelab-stim-ascii")
FRAME = load_stim_profile("needlelab-stim-frame")


def run_model(pattern: str, seed: int, seconds: float = 120.0) -> list[tuple[float, StimSettings]]:
    model = StimUnitModel([1, 2], pattern, seed)
    changes = []
    t = 0.0
    while t < seconds:
        changes += [(t, s) for s in model.step(t)]
        t += 0.01
    return changes


def test_clinical_pattern_stays_in_clinical_ranges_and_changes_every_few_hundred_ms() -> None:
    changes = run_model("clinical", seed=1)
    assert len(changes) > 100
    for _, s in changes:
        assert s.frequency_hz in (2.0, 4.0, 100.0)
        assert 100 <= s.pulse_width_us <= 400
        assert 0 <= s.intensity_ma <= 30
    on = [s for _, s in changes if s.output_on]
    off = [s for _, s in changes if not s.output_on]
    assert on and off and max(s.intensity_ma for s in on) >= 6
    for ch in (1, 2):
        times = [t for t, s in changes if s.channel == ch]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.19 and max(gaps) <= 6.0


def test_random_pattern_is_reproducible_by_seed() -> None:
    assert run_model("random", seed=4, seconds=30) == run_model("random", seed=4, seconds=30)
    assert run_model("random", seed=4, seconds=30) != run_model("random", seed=5, seconds=30)


def test_fault_schedule_times_repeats_and_injections() -> None:
    schedule = FaultSchedule(
        [
            FaultSpec(kind="stall", at_s=1.0, duration_s=0.5),
            FaultSpec(kind="garbage", at_s=0.5, every_s=1.0, count=10),
        ]
    )
    assert schedule.due(0.2) == []
    assert [f.kind for f in schedule.due(0.6)] == ["garbage"]
    assert [f.kind for f in schedule.due(1.0)] == ["stall"]
    assert [f.kind for f in schedule.due(1.6)] == ["garbage"]
    assert [f.kind for f in schedule.due(5.0)] == ["garbage"]  # missed repeats: once, not thrice
    assert schedule.due(5.1) == []
    schedule.inject(FaultSpec(kind="disconnect", at_s=99, duration_s=1))
    assert [f.kind for f in schedule.due(5.2)] == ["disconnect"]


@pytest.mark.parametrize("profile", [ASCII, FRAME])
def test_garbage_pieces_are_each_one_malformed_message_by_construction(profile: object) -> None:
    protocol = StimProtocol(profile)  # type: ignore[arg-type]
    framing = protocol.profile.transport.framing
    pieces = garbage_pieces(framing, 10_000, random.Random(3))
    assert len(pieces) == 100  # ceil(10 000 / 100 bytes a piece)
    for piece in pieces:
        if protocol.is_line:  # undecodable as ASCII whatever follows
            assert piece[0] == 0xFF and len(piece) == 101 and piece.count(b"\n") == 1
        else:  # longer than the longest legal frame
            assert len(piece) == 102 > 69 and piece.count(b"\xf0") == piece.count(b"\x0f") == 1
    good = protocol.encode_message(
        "change",
        {
            "channel": 1,
            "frequency_hz": 2.0,
            "pulse_width_us": 250.0,
            "intensity_ma": 1.0,
            "waveform": "biphasic",
            "mode": "continuous",
            "output_on": True,
        },
    )
    half = truncated(good, framing)
    assert len(half) < len(good)
    messages, malformed = protocol.decode(good + b"".join(pieces) + half + good)
    assert len(messages) == 2 and malformed == len(pieces) + 1
    latin = framing.model_copy(update={"encoding": "latin-1"}) if protocol.is_line else None
    if latin is not None:  # every byte decodes: the piece must be over-long instead
        assert {len(p) for p in garbage_pieces(latin, 1000, random.Random(1))} == {130}


def test_parse_fault_arguments() -> None:
    assert parse_fault("garbage:5:1000") == FaultSpec(kind="garbage", at_s=5, count=1000)
    assert parse_fault("stall:10:3") == FaultSpec(kind="stall", at_s=10, duration_s=3)
    assert parse_fault("disconnect:2.5:0.5") == FaultSpec(
        kind="disconnect", at_s=2.5, duration_s=0.5
    )
    assert parse_fault("truncate:4") == FaultSpec(kind="truncate", at_s=4)
    for bad in ("explode:1", "stall", "stall:x", "garbage:1:2:3", "stall:-1:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fault(bad)


def test_sim_parser_registers_the_stim_command() -> None:
    parser = argparse.ArgumentParser(prog="needlelab")
    add_sim_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            *("sim", "stim", "--profile", "needlelab-stim-frame", "--tcp", "0"),
            *("--pattern", "random", "--seed", "3", "--channels", "1,2"),
            *("--fault", "garbage:1:500", "--fault", "stall:2:1"),
        ]
    )
    assert (args.profile, args.tcp, args.pattern, args.seed) == (
        "needlelab-stim-frame",
        0,
        "random",
        3,
    )
    assert [f.kind for f in args.fault] == ["garbage", "stall"] and args.channels == [1, 2]
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "stim", "--tcp", "1", "--pty"])


def test_tcp_unit_listens_on_loopback_only_and_answers_queries(tmp_path: Path) -> None:
    with start_simulated_stim(
        "needlelab-stim-ascii", StimSimulatorConfig(transport="tcp"), tmp_path
    ) as sim:
        assert sim.url.startswith("socket://127.0.0.1:")
        port = int(sim.url.rsplit(":", 1)[1])
        listener = sim.link.listener
        assert listener.getsockname()[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"*IDN?\n")
            reply = b""
            while not reply.endswith(b"\n"):
                reply += conn.recv(256)
        assert reply.startswith(b"NEEDLELAB,SIMSTIM,")
        wait_until(lambda: sim.received_bytes() == b"*IDN?\n", what="received log")
        assert sim.sent_log()[0].message in ("identity", "change")


def test_pty_link_path_is_stable_across_a_disconnect(tmp_path: Path) -> None:
    with start_simulated_stim("needlelab-stim-ascii", StimSimulatorConfig(), tmp_path) as sim:
        path = Path(sim.url)
        assert os.readlink(path).startswith("/dev/")
        sim.inject(FaultSpec(kind="disconnect", at_s=0, duration_s=0.3))
        wait_until(lambda: not path.exists(), timeout_s=2, what="link removed while down")
        wait_until(path.exists, timeout_s=2, what="link back")
        assert Path(sim.url) == path and os.readlink(path).startswith("/dev/")
    assert not path.exists()  # a stopped unit leaves no link behind


# -- the simulated unit obeys real write commands (so "no write reached it" can fail) ----------


def read_until(
    conn: socket.socket, pattern: re.Pattern[bytes], buffer: bytearray
) -> re.Match[bytes]:
    """Read from the unit until `pattern` matches what it sent (within 5 s)."""
    conn.settimeout(5)
    while (m := pattern.search(buffer)) is None:
        chunk = conn.recv(4096)
        assert chunk, "the unit hung up"
        buffer += chunk
    return m


def unstuff(body: bytes) -> bytes:
    """Frame bytes between start and stop with the 0x81/XOR 0x55 escapes undone (by hand)."""
    return re.sub(rb"\x81(.)", lambda m: bytes([m[1][0] ^ 0x55]), body, flags=re.S)


@pytest.mark.stim_writes_expected
def test_the_ascii_unit_obeys_set_and_stop(tmp_path: Path) -> None:
    log = io.StringIO()
    sim = SimulatedStim(ASCII, StimSimulatorConfig(transport="tcp"), [1], tmp_path, log_file=log)
    with sim:
        port = int(sim.url.rsplit(":", 1)[1])
        seen = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"SET CH1 I=99.00 OUT=1\n")
            read_until(
                conn, re.compile(rb"CHG CH1 F=[\d.]+ PW=\d+ I=99\.00 W=BI M=\w+ OUT=1\n"), seen
            )
            conn.sendall(b"SET CH1 F=100.0 PW=400\n")
            read_until(
                conn, re.compile(rb"CHG CH1 F=100\.0 PW=400 I=[\d.]+ W=BI M=\w+ OUT=\d\n"), seen
            )
            conn.sendall(b"STOP\n")
            read_until(conn, re.compile(rb"CHG CH1 [^\n]* OUT=0\n"), seen)
            conn.sendall(b"SET CH9 OUT=1\nFOO 1\nSTAT? 9\n")  # no channel 9; no such command
            wait_until(lambda: len(sim.writes()) == 5, what="all writes noted")
    writes = sim.writes()
    assert [(w.wire, w.command, w.obeyed) for w in writes] == [
        (b"SET CH1 I=99.00 OUT=1", "SET", True),
        (b"SET CH1 F=100.0 PW=400", "SET", True),
        (b"STOP", "STOP", True),
        (b"SET CH9 OUT=1", "SET", False),
        (b"FOO 1", None, False),
    ]  # "STAT? 9" is a read (of a channel the unit lacks): ignored, not a write
    assert writes[0].unit == f"needlelab-stim-ascii at {sim.url}"
    assert any(s.intensity_ma == 99.0 and s.output_on for _, s in sim.changes())
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["write"]["wire"] for e in logged if "write" in e][:1] == [
        b"SET CH1 I=99.00 OUT=1".hex()
    ]
    assert set(writes) <= set(writes_received())


@pytest.mark.stim_writes_expected
def test_the_frame_unit_obeys_set_channel_set_output_and_stop_all(tmp_path: Path) -> None:
    changed = re.compile(rb"\xf0\x12([^\xf0\x0f]*)\x0f")  # CHANGED frames, as sent
    sim = SimulatedStim(FRAME, StimSimulatorConfig(transport="tcp"), [1], tmp_path)

    def next_changed(conn: socket.socket, seen: bytearray) -> tuple[int, ...]:
        m = read_until(conn, changed, seen)
        raw = unstuff(m[1])
        del seen[: m.end()]
        assert crc16_bitwise(b"\x12" + raw[:-2]) == int.from_bytes(raw[-2:], "big")
        return struct.unpack("<BHHHBBB", raw[:-2])

    with sim:
        port = int(sim.url.rsplit(":", 1)[1])
        seen = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            # SET_CHANNEL ch1: 2.0 Hz, 250 us, 25.00 mA, biphasic, continuous (CRC 0x8992)
            conn.sendall(bytes.fromhex("f0 40 01 14 00 fa 00 c4 09 01 00 89 92 0f"))
            while (state := next_changed(conn, seen))[3] != 2500:
                pass  # a change of the unit's own pattern came first
            assert state[:6] == (1, 20, 250, 2500, 1, 0)
            conn.sendall(bytes.fromhex("f0 41 01 01 c5 11 0f"))  # SET_OUTPUT ch1 on
            while not (state := next_changed(conn, seen))[6]:
                pass
            conn.sendall(bytes.fromhex("f0 42 89 76 0f"))  # STOP_ALL
            while next_changed(conn, seen)[6]:
                pass
            conn.sendall(bytes.fromhex("f0 41 01 07 a5 d7 0f"))  # SET_OUTPUT ch1 with output 7
            wait_until(lambda: len(sim.writes()) == 4, what="all writes noted")
    assert [(w.command, w.obeyed) for w in sim.writes()] == [
        ("SET_CHANNEL", True),
        ("SET_OUTPUT", True),
        ("STOP_ALL", True),
        ("SET_OUTPUT", False),
    ]
    assert sim.writes()[0].wire == bytes.fromhex("40 01 14 00 fa 00 c4 09 01 00")
