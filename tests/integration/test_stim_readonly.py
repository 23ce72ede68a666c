"""Read-only by grammar, end to end: every byte the real driver writes over a whole session, the
session file's record of the profile, `needlelab check`, and the plugin's no-write check.

The expected bytes and the grammar of each protocol family are typed here from drivers/README.md
("Read-only by grammar"), never computed from a profile or from needlelab's codecs.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from needlelab.clock import SessionClock
from needlelab.config import FaultSpec, StimSerialConfig, parse_config
from needlelab.devices.stim_serial import StimulatorDriver
from needlelab.events import DeviceInfoEvent
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, open_session
from needlelab.resources import drivers_dir
from needlelab.sim.serve import SimulatorProcess
from needlelab.testing.plugin import wait_until

# The line family's read form (drivers/README.md): a command word ending in '?', optional
# arguments, one line ending; here "\n".
LINE_READ = re.compile(
    rb"(?:\*[A-Za-z]{1,8}|:?[A-Za-z]{1,12}[0-9]{0,3}(?::[A-Za-z]{1,12}[0-9]{0,3})*)\?"
    rb"(?: [A-Za-z0-9.+-]{1,16}(?:,[A-Za-z0-9.+-]{1,16})*)?\n"
)
FRAME = re.compile(rb"\xf0[^\xf0\x0f]*\x0f")  # start, no raw start/stop inside, stop
READ_IDS = range(0x01, 0x40)

# What the shipped profiles send for channels 1 and 2, byte for byte (drivers/README.md).
EXPECTED = {
    "needlelab-stim-ascii": {b"*IDN?\n", b"STAT? 1\n", b"STAT? 2\n"},
    "needlelab-stim-frame": {
        bytes.fromhex("f0 01 f1 d1 0f"),  # GET_ID
        bytes.fromhex("f0 10 01 0e 5d 0f"),  # GET_STATUS 1
        bytes.fromhex("f0 10 02 3e 3e 0f"),  # GET_STATUS 2
    },
}


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def split_reads(family: str, tx: bytes) -> list[bytes]:
    """`tx` cut into the family's messages, each checked to be a read by the typed grammar."""
    if family == "line":
        lines = re.findall(rb"[^\n]*\n", tx)
        assert b"".join(lines) == tx, "bytes after the last line ending"
        for line in lines:
            assert LINE_READ.fullmatch(line), line
        return lines
    frames = FRAME.findall(tx)
    assert b"".join(frames) == tx, "bytes outside frames"
    for frame in frames:
        raw = re.sub(rb"\x81(.)", lambda m: bytes([m[1][0] ^ 0x55]), frame[1:-1], flags=re.S)
        assert len(raw) >= 3 and crc16_bitwise(raw[:-2]) == int.from_bytes(raw[-2:], "big")
        assert raw[0] in READ_IDS, f"id 0x{raw[0]:02X} is no read: {frame.hex(' ')}"
    return frames


class FifoLog:
    """A named pipe for spy://...?file=: every reopen (one per connect) lands in one log.

    pyserial's spy handler opens its file with "w" on every connect, which would truncate a
    plain file on a reconnect; a FIFO held open here (read-write, so it never sees EOF) keeps
    everything every connection wrote.
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="spy-fifo", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            if select.select([self._fd], [], [], 0.05)[0]:
                self._read()

    def _read(self) -> None:
        try:
            while chunk := os.read(self._fd, 65536):
                self._chunks.append(chunk)
        except BlockingIOError:
            pass

    def close(self) -> str:
        """Stop draining; everything written so far."""
        self._stop.set()
        self._thread.join(5)
        self._read()
        os.close(self._fd)
        return b"".join(self._chunks).decode("ascii")


def spy_tx(log: str) -> bytes:
    """The bytes of every TX hexdump line of a spy log, in order."""
    tx = b""
    for line in log.splitlines():
        m = re.match(r"^\S+ TX\s+[0-9A-F]{4}  (.{49})", line)
        if m:
            tx += bytes.fromhex(m[1])
    return tx


def spy_control(log: str) -> list[tuple[str, str]]:
    """(line, state) of every control-line entry and "TX" for each TX line, in order."""
    out = []
    for line in log.splitlines():
        m = re.match(r"^\S+ (DTR|RTS|BRK|TX)\s+(\S+)", line)
        if m:
            out.append((m[1], m[2] if m[1] != "TX" else ""))
    return out


CASES = [
    # profile, dtr/rts in the profile file, what spy must log for DTR and RTS
    ("needlelab-stim-ascii", None, ("inactive", "inactive")),
    ("needlelab-stim-frame", ("true", "false"), ("active", "inactive")),
]


@pytest.mark.parametrize(("profile", "lines", "logged"), CASES, ids=["ascii", "frame-dtr-on"])
def test_every_byte_written_over_a_whole_session_is_a_read(
    tmp_path: Path,
    sim_stim: Callable[..., Any],
    profile: str,
    lines: tuple[str, str] | None,
    logged: tuple[str, str],
) -> None:
    """Connect, polls, a reconnect after the unit vanished, stop: through pyserial's spy://."""
    source = drivers_dir() / f"{profile}.toml"
    if lines is not None:  # the profile's own control lines: a copy of the shipped file
        text = source.read_text()
        assert "dtr = false" in text and "rts = false" in text
        source = tmp_path / f"{profile}-lines.toml"
        source.write_text(text.replace("dtr = false", f"dtr = {lines[0]}"))
    family = "line" if profile.endswith("ascii") else "frame"
    sim = sim_stim(str(source), channels=[1, 2], pattern="random", seed=4)
    fifo = FifoLog(tmp_path / "spy.fifo")
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
    url = f"spy://{sim.url}?file={fifo.path}"
    config = StimSerialConfig(
        kind="stim_serial",
        name="stim",
        profile=str(source),
        port=url,
        channels=[1, 2],
        poll_interval_ms=20,
        stall_timeout_s=0.5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    driver = StimulatorDriver(config, hub)
    driver.start()
    try:
        wait_until(lambda: driver.stats.samples > 20, what="samples")
        before = driver.stats.samples
        sim.inject(FaultSpec(kind="disconnect", at_s=0, duration_s=0.3))
        wait_until(
            lambda: driver.stats.reconnects >= 1 and driver.stats.samples > before + 20,
            timeout_s=10,
            what="data again after a reconnect",
        )
    finally:
        driver.stop()  # closes the port, and with it spy's end of the FIFO
        writer.stop()
        log = fifo.close()

    # Every byte the host wrote, from spy's own log, is a read by the typed grammar.
    tx = spy_tx(log)
    messages = split_reads(family, tx)
    assert set(messages) == EXPECTED[profile]  # nothing else, and every query was sent
    assert len(messages) >= 40
    # The unit received reads only too (what reached it before it vanished, and after).
    assert set(split_reads(family, sim.received_bytes())) <= EXPECTED[profile]
    assert sim.writes() == []

    # DTR and RTS as the profile says, set before anything is sent, on every (re)connect.
    control = spy_control(log)
    dtr, rts = logged
    assert control[:2] == [("DTR", dtr), ("RTS", rts)]
    assert {c for c in control if c[0] != "TX"} == {("DTR", dtr), ("RTS", rts)}
    segments = " ".join(name for name, _ in control).split("DTR")[1:]
    assert all(seg.split()[:1] == ["RTS"] for seg in segments)  # RTS right after DTR
    with_tx = [seg for seg in segments if "TX" in seg]
    assert len(with_tx) == driver.stats.reconnects + 1 >= 2  # each connection set them first

    # The session file says which profile, by content, and exactly what the driver may send.
    with open_session(path) as s:
        infos = [e for e in s.events() if isinstance(e, DeviceInfoEvent)]
    connects = [e.info for e in infos if "profile_sha256" in e.info]
    assert len(connects) == driver.stats.reconnects + 1
    expected_hex = sorted(b.hex() for b in EXPECTED[profile])
    for info in connects:
        assert info["profile_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert sorted(info["allowed_writes_hex"]) == expected_hex
        assert (info["dtr"], info["rts"]) == (dtr == "active", rts == "active")
        assert info["port"] == url and info["family"] == family
    assert all(e.source == "stim" for e in infos)
    identities = [e.info["identity"] for e in infos if "identity" in e.info]
    assert identities[:1] == [
        {"model": "SIMSTIM", "serial": "SIMSTIM", "firmware": "SIMSTIM"}
        if family == "line"
        else {"model": "SIMSTIM", "serial": 1, "fw_major": 1, "fw_minor": 1}
    ]


# -- needlelab check refuses a write dressed as a query ------------------------------------------


def write_config(folder: Path, profile: Path) -> Path:
    config = folder / "clinic.toml"
    config.write_text(
        '[session]\npatient_id = "P01"\n\n[[devices]]\nkind = "stim_serial"\nname = "stim"\n'
        f'profile = "{profile.name}"\nport = "/dev/ttyUSB0"\n'
    )
    return config


@pytest.mark.parametrize(
    ("profile", "old", "new", "said"),
    [
        (
            "needlelab-stim-ascii",
            'send = "STAT? {channel}"',
            'send = "SET CH{channel} I=99.00 OUT=1"',
            "queries[1]: query 'status': send = 'SET CH{channel} I=99.00 OUT=1' is not a read",
        ),
        (
            "needlelab-stim-frame",
            'send = "10{channel:02x}"',
            'send = "41{channel:02x}01"',
            "queries[1]: query 'status': send = '41{channel:02x}01' is not a read: id 0x41 is a "
            "write command id",
        ),
    ],
    ids=["ascii", "frame"],
)
def test_check_and_record_refuse_a_write_disguised_as_a_query_with_one_line(
    tmp_path: Path, profile: str, old: str, new: str, said: str
) -> None:
    text = (drivers_dir() / f"{profile}.toml").read_text()
    assert old in text
    bad = tmp_path / "write-stim.toml"
    bad.write_text(text.replace(old, new))
    config = write_config(tmp_path, bad)
    for args in (["check", str(config.name)], ["record", config.name, "--duration", "1"]):
        result = subprocess.run(
            [sys.executable, "-m", "needlelab.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(f"$ needlelab {' '.join(args)}\n{result.stderr}(exit {result.returncode})")
        assert result.returncode == 2, result
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert f"{bad.name}: {said}" in line, line  # behind the config's file and field
        assert "drivers/README.md" in line
    assert not list(tmp_path.rglob("*.sqlite"))  # nothing was recorded
    (tmp_path / bad.name).write_text(text)  # the same config with the shipped queries is fine
    ok = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "check", config.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("clinic.toml: ok"), ok


# -- the plugin's no-write check can fail ------------------------------------------------------

INNER_TESTS = """
import socket

import pytest

from needlelab.testing.plugin import wait_until


def send(sim, data):
    port = int(sim.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(data)
        wait_until(lambda: sim.writes() or sim.queries_answered, what="the unit heard it")


def test_a_write_reaches_the_unit(sim_stim):
    send(sim_stim(transport="tcp"), b"SET CH1 I=99.00 OUT=1\\n")


def test_only_a_read_reaches_the_unit(sim_stim):
    send(sim_stim(transport="tcp"), b"STAT? 1\\n")


@pytest.mark.stim_writes_expected
def test_a_write_sent_on_purpose(sim_stim):
    send(sim_stim(transport="tcp"), b"STOP\\n")
"""


def test_the_plugin_fails_a_test_whose_simulator_received_a_write(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert "3 passed, 1 error" in out, out
    assert "ERROR at teardown of test_a_write_reaches_the_unit" in out, out
    assert (
        "1 write command(s) reached a simulated stimulator (needlelab must only ever send reads): "
        "needlelab-stim-ascii at socket://127.0.0.1:"
    ) in out
    assert "received b'SET CH1 I=99.00 OUT=1': SET, obeyed" in out, out


def test_a_write_that_reaches_a_simulator_process_fails_its_stop(tmp_path: Path) -> None:
    """Simulators in another process (`needlelab sim session`, as the demo and the fault
    matrix's session rows run them): the process exits 1 and `stop()` raises, naming it."""
    config = parse_config(
        {
            "session": {"patient_id": "T1", "out_dir": str(tmp_path)},
            "devices": [
                {
                    "kind": "stim_serial",
                    "name": "stim",
                    "profile": "needlelab-stim-ascii",
                    "simulator": {"transport": "tcp"},
                }
            ],
        }
    )
    process = SimulatorProcess(config, tmp_path / "sim")
    url = process.start()["stim"]["port"]
    try:
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"*IDN?\nSET CH1 I=99.00 OUT=1\n")
            assert conn.recv(64).startswith(b"NEEDLELAB,")  # it heard both, in order
    finally:
        with pytest.raises(RuntimeError, match=r"received b'SET CH1 I=99\.00 OUT=1': SET, obeyed"):
            process.stop()
