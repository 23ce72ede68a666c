"""With LSL on, what this process listens on, read from its own socket table (socket_table.py,
not needlelab's reader), and what needlelab says about it while recording.

liblsl's loopback config keeps stream discovery on 127.0.0.1 but binds each outlet's TCP data
port and UDP service port to 0.0.0.0 (no config option changes that): these tests pin exactly
that, so the README's statement fails here the day liblsl behaves differently. Every LSL call
runs under needlelab's loopback config (in process, or through LSLAPICFG in a child).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from needlelab.config import parse_config
from needlelab.events import WarningEvent
from needlelab.lsl import LOOPBACK_CONFIG, exposure_warning, listening_sockets, pylsl_module
from needlelab.record import open_session
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec
from needlelab.testing.plugin import wait_until
from tests.reliability.socket_table import Sock, listening

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

pylsl = pylsl_module()  # loopback: the first LSL call of this test process

MULTICAST_PORT = 16571  # liblsl's default [ports] MulticastPort (its lsl_api.cfg documentation)
HERE = Path(__file__).parent


def advertised_ports(source_id: str) -> dict[str, int]:
    """The ports liblsl advertises for a stream, as another program resolving it sees them."""
    (info,) = pylsl.resolve_byprop("source_id", source_id, 1, 5.0)
    xml = info.as_xml()
    return {k: int(v) for k, v in re.findall(r"<(v[46]\w+_port)>(\d+)<", xml)}


def expected_per_outlet(ports: dict[str, int]) -> list[tuple[str, str, int]]:
    """What one outlet listens on under the loopback config (measured with liblsl 1.18.0)."""
    return [
        ("tcp", "0.0.0.0", ports["v4data_port"]),  # data: every interface
        ("udp", "0.0.0.0", ports["v4service_port"]),  # time and info queries: every interface
        ("udp", "127.0.0.1", MULTICAST_PORT),  # discovery: [multicast] ListenAddress
    ]


def table_key(s: Sock) -> tuple[str, str, int]:
    return (s.table, s.address, s.port)


def exposed_warnings(events: list[Any]) -> list[WarningEvent]:
    return [e for e in events if isinstance(e, WarningEvent) and e.code == "lsl.exposed"]


def named(details: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(d["protocol"], d["address"], d["port"]) for d in details["sockets"]}


def test_the_table_reader_sees_what_the_kernel_bound() -> None:
    # The test's own reader, checked against getsockname() before it judges liblsl.
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("0.0.0.0", 0))
        peer.bind(("127.0.0.1", 0))
        peer.connect(("127.0.0.1", 9))  # connected: takes datagrams from its peer only
        tcp6.bind(("::1", 0))
        tcp6.listen()
        seen = {table_key(s) for s in listening()}
        assert ("tcp", "127.0.0.1", tcp.getsockname()[1]) in seen
        assert ("udp", "0.0.0.0", udp.getsockname()[1]) in seen
        assert ("tcp6", "::1", tcp6.getsockname()[1]) in seen
        assert ("udp", "127.0.0.1", peer.getsockname()[1]) not in seen
    finally:
        for s in (tcp, udp, peer, tcp6):
            s.close()


def test_lsl_on_listens_on_exactly_these_sockets_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = {s.inode for s in listening()}
    config = parse_config(
        {"session": {"patient_id": "EXP01", "out_dir": str(tmp_path)}, "lsl": {"enabled": True}}
    )
    session = Session(config)
    streams = [
        StreamSpec("emg.emg", "EMG", ("EMG 1", "EMG 2"), ("uV", "uV"), StreamKind.REGULAR,
                   1000.0, device="emg"),
        StreamSpec("stim.ch1", "Stim", ("mA",), ("mA",), StreamKind.IRREGULAR, 0.0,
                   device="stim"),
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="needlelab.lsl"):
        session.start()
        try:
            for spec in streams:
                session.hub.add_stream(spec)
                data = np.zeros((1, spec.channel_count), dtype=np.float32)
                now_ns = session.clock.now_ns()
                t_ns = np.array([now_ns]) if spec.kind is StreamKind.IRREGULAR else None
                session.hub.push(Chunk(spec.name, data, now_ns, 0, t_ns=t_ns))
            ids = ["events", *(spec.name for spec in streams)]
            ports = {name: advertised_ports(f"needlelab:{session.session_id}:{name}")
                     for name in ids}  # fmt: skip
            # The report waits for the outlets to settle (a second without a new one).
            wait_until(
                lambda: any(
                    {("TCP", "0.0.0.0", p["v4data_port"]) for p in ports.values()}
                    <= named(w.details)
                    for w in exposed_warnings(session.hub.recent_events())
                ),
                timeout_s=10,
                what="a warning naming every outlet's data port",
            )
            now = listening()
            opened = [s for s in now if s.inode not in before]

            # Exactly three sockets per outlet (2 streams + the events), nothing over IPv6.
            expected = [k for p in ports.values() for k in expected_per_outlet(p)]
            assert Counter(table_key(s) for s in opened) == Counter(expected)
            assert all(p.get("v6data_port", 0) == 0 == p.get("v6service_port", 0)
                       for p in ports.values())  # fmt: skip
            data_ports = {p["v4data_port"] for p in ports.values()}
            service_ports = {p["v4service_port"] for p in ports.values()}
            assert len(data_ports) == len(service_ports) == 3  # one of each per outlet

            # What needlelab said: the whole of this process's table, not a guess.
            warning = exposed_warnings(session.hub.recent_events())[-1]
            assert named(warning.details) == {(s.protocol, s.address, s.port) for s in now}
            assert warning.details["deliberate"] is False and warning.source == "lsl"
            by_port = {(d["protocol"], d["port"]): d for d in warning.details["sockets"]}
            assert by_port[("UDP", MULTICAST_PORT)]["loopback"] is True
            for name, p in ports.items():
                stream = "needlelab events" if name == "events" else name
                assert by_port[("TCP", p["v4data_port"])]["loopback"] is False
                assert by_port[("TCP", p["v4data_port"])]["purpose"] == f"LSL data: {stream}"
                assert by_port[("UDP", p["v4service_port"])]["purpose"].endswith(stream)
            lines = [r for r in caplog.records if r.getMessage() == warning.message]
            assert len(lines) == 1 and lines[0].levelno == logging.WARNING
            line = lines[0].getMessage()
            for port in data_ports:
                assert f"TCP 0.0.0.0:{port} " in line
            for port in service_ports:
                assert f"UDP 0.0.0.0:{port} " in line
            assert f"UDP 127.0.0.1:{MULTICAST_PORT} " in line
            assert "share_on_lan = true" in line
        finally:
            session.stop()
    # Stopping closes every outlet: nothing LSL opened still listens.
    wait_until(lambda: not [s for s in listening() if s.inode not in before], timeout_s=5)
    # The file records what was exposed (the same warnings, read back).
    with open_session(session.path) as s:
        stored = exposed_warnings(s.events("warning"))
    assert stored and named(stored[-1].details) == named(warning.details)
    assert stored[0].details["deliberate"] is False


def test_lsl_is_off_unless_enabled_and_share_on_lan_alone_does_not_turn_it_on(
    tmp_path: Path,
) -> None:
    before = {s.inode for s in listening()}
    for lsl in ({}, {"share_on_lan": True}):
        out_dir = str(tmp_path / str(len(lsl)))
        config = parse_config({"session": {"patient_id": "EXP02", "out_dir": out_dir},
                               "lsl": lsl})  # fmt: skip
        session = Session(config)
        session.start()
        try:
            assert session.lsl is None and not session.lsl_enabled
            assert not [s for s in listening() if s.inode not in before]
        finally:
            session.stop()
        with open_session(session.path) as s:
            assert not exposed_warnings(s.events())


CHILD = """
import json, logging, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from socket_table import listening
from needlelab.config import parse_config
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage()])
logging.getLogger("needlelab").addHandler(Keep())
logging.getLogger("needlelab").setLevel(logging.INFO)
config = parse_config({{"session": {{"patient_id": "EXP03", "out_dir": {out!r}}},
                       "lsl": {{"enabled": True, "share_on_lan": True}}}})
session = Session(config)
session.start()
spec = StreamSpec("emg.emg", "EMG", ("EMG 1",), ("uV",), StreamKind.REGULAR, 1000.0,
                  device="emg")
session.hub.add_stream(spec)
session.hub.push(Chunk("emg.emg", np.zeros((1, 1), np.float32), session.clock.now_ns(), 0))
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    warnings = [e for e in session.hub.recent_events() if e.kind == "warning"]
    if len(warnings) == 2:  # the events outlet at the start, then with emg.emg
        break
    time.sleep(0.05)
table = [[s.table, s.address, s.port] for s in listening()]
session.stop()
print(json.dumps({{"records": records, "table": table,
                  "warnings": [[w.message, w.details] for w in warnings]}}))
"""


def test_share_on_lan_is_the_deliberate_choice_and_is_acknowledged(tmp_path: Path) -> None:
    # share_on_lan hands liblsl its own config files: LSLAPICFG points them at the loopback
    # config, so this child stays on this machine too (liblsl says which file it loaded).
    cfg = tmp_path / "lsl_api.cfg"
    cfg.write_text(LOOPBACK_CONFIG)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", CHILD.format(here=str(HERE), out=str(out))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "LSLAPICFG": str(cfg)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Configuration loaded from {cfg}" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    table = {tuple(row) for row in report["table"]}
    assert ("udp", "127.0.0.1", MULTICAST_PORT) in table  # the loopback config was in force
    assert not any(row[0].endswith("6") for row in table)
    assert len(report["warnings"]) == 2
    message, details = report["warnings"][-1]
    assert details["deliberate"] is True and details["measured"] is True
    assert named(details) == {(t[:3].upper(), a, p) for t, a, p in table}
    assert sum(1 for t, a, _ in table if t == "tcp" and a == "0.0.0.0") == 2  # events, emg.emg
    assert message.startswith("LSL shares this session on the network as configured")
    # The acknowledgement is an INFO line; needlelab logs no warning about LSL at all.
    lsl_lines = [(level, text) for level, text in report["records"] if "LSL" in text]
    assert ("INFO", message) in lsl_lines
    assert not [text for level, text in lsl_lines if level == "WARNING"]
    with open_session(next(out.glob("*.sqlite"))) as s:
        stored = exposed_warnings(s.events("warning"))
    assert [w.details["deliberate"] for w in stored] == [True, True]


def test_where_sockets_cannot_be_read_the_warning_says_so(tmp_path: Path) -> None:
    assert listening_sockets(tmp_path) is None  # no /proc there
    level, warning = exposure_warning(None, deliberate=False)
    assert level == logging.WARNING and warning is not None
    assert "cannot be measured" in warning.message and "share_on_lan = true" in warning.message
    assert warning.details == {"deliberate": False, "measured": False, "sockets": []}
    level, warning = exposure_warning(None, deliberate=True)
    assert level == logging.INFO and warning is not None and warning.details["deliberate"]


def test_needlelab_record_prints_the_exposure_line(tmp_path: Path) -> None:
    config = tmp_path / "session.toml"
    config.write_text('[session]\npatient_id = "EXP04"\n')
    out = tmp_path / "out"
    for flags in (["--lsl"], []):
        result = subprocess.run(
            [sys.executable, "-m", "needlelab.cli", "record", str(config), *flags,
             "--duration", "1.5", "--no-console", "--out", str(out / str(len(flags)))],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if "needlelab.lsl" in line]
        if not flags:  # LSL off: not a word about it, liblsl not even loaded
            assert lines == [] and "Configuration loaded" not in result.stderr
            continue
        assert "Configuration loaded from content" in result.stderr  # the loopback config
        (line,) = lines
        assert line.startswith("WARNING needlelab.lsl: LSL is on and listens beyond this machine")
        assert re.search(r"TCP 0\.0\.0\.0:\d+ \(LSL data: needlelab events\)", line)
        assert re.search(r"UDP 0\.0\.0\.0:\d+ \(LSL time and info queries: needlelab ev", line)
        assert f"UDP 127.0.0.1:{MULTICAST_PORT} (LSL discovery)" in line
