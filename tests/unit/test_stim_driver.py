"""StimulatorDriver without threads or ports: expected writes, canned replies (PyMeasure style).

`ScriptedPort` stands in for the object `serial.serial_for_url` returns. It fails on any write
that is not the next expected one, serves each reply only after its query was written, and
`assert_done()` checks that every expected write came and every reply was read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from needlelab.clock import SessionClock
from needlelab.config import StimSerialConfig
from needlelab.devices import stim_serial
from needlelab.devices.stim_serial import ReadOnlyViolation, StimulatorDriver
from needlelab.events import DeviceInfoEvent, StimSettingsEvent
from needlelab.hub import Hub
from needlelab.profiles import StimulatorProfile, read_profile
from needlelab.resources import drivers_dir

GET_ID = bytes.fromhex("f0 01 f1 d1 0f")
GET_STATUS_1 = bytes.fromhex("f0 10 01 0e 5d 0f")
GET_STATUS_2 = bytes.fromhex("f0 10 02 3e 3e 0f")
STATUS_1 = bytes.fromhex("f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f")  # 161 µs, 3.50 mA
CHANGED_2 = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 01 7e a3 0f")  # 250 µs, 12.50 mA
IDENTITY = bytes.fromhex("f0 02 42 52 49 44 47 45 00 00 09 00 00 00 01 02 d5 ae 0f")


class ScriptedPort:
    """A fake serial port that plays a script of (expected write, canned reply).

    `calls` records what was done to it in order: control lines set ("dtr=False"), "open", and
    each write, so a test sees that DTR and RTS were set before the port opened."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.written = b""
        self.replies = b""
        self.closed = False
        self.is_open = False
        self.timeout: float | None = 0.05  # set by the driver before a read; reads never wait
        self.calls: list[str] = []

    @property
    def dtr(self) -> bool:
        raise AssertionError("the driver sets DTR; it has no reason to read it")

    @dtr.setter
    def dtr(self, level: bool) -> None:
        self.calls.append(f"dtr={level}")

    @property
    def rts(self) -> bool:
        raise AssertionError("the driver sets RTS; it has no reason to read it")

    @rts.setter
    def rts(self, level: bool) -> None:
        self.calls.append(f"rts={level}")

    def open(self) -> None:
        assert not self.is_open
        self.is_open = True
        self.calls.append("open")

    def write(self, data: bytes) -> int:
        assert self.is_open, "write before open"
        self.calls.append(f"write {data!r}")
        assert self.script, f"unexpected write {data!r}: the script is done"
        expected, reply = self.script[0]
        assert data == expected, f"wrote {data!r}, expected {expected!r}"
        self.script.pop(0)
        self.written += data
        self.replies += reply
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.replies)

    def read(self, size: int = 1) -> bytes:
        out, self.replies = self.replies[:size], self.replies[size:]
        return out

    def close(self) -> None:
        self.closed = True

    def assert_done(self) -> None:
        assert not self.script, f"expected writes never came: {self.script}"
        assert not self.replies, f"replies left unread: {self.replies!r}"


def make_driver(
    monkeypatch: pytest.MonkeyPatch, profile: str | Path, script: list[tuple[bytes, bytes]]
) -> tuple[StimulatorDriver, ScriptedPort, list[Any]]:
    port = ScriptedPort(script)
    opened: list[tuple[str, dict[str, Any]]] = []

    def serial_for_url(url: str, **kwargs: Any) -> ScriptedPort:
        opened.append((url, kwargs))
        return port

    monkeypatch.setattr(stim_serial.serial, "serial_for_url", serial_for_url)
    hub = Hub(SessionClock())
    events: list[Any] = []
    hub.subscribe(events.append)
    config = StimSerialConfig(
        kind="stim_serial",
        name="stim",
        profile=str(profile),
        port="/dev/ttyUSB7",
        channels=[1, 2],
        poll_interval_ms=60_000,  # one round of polls in these tests
    )
    driver = StimulatorDriver(config, hub)
    for spec in driver.streams():
        hub.add_stream(spec)
    driver._connect()
    assert opened[0][0] == "/dev/ttyUSB7"
    assert opened[0][1]["baudrate"] == 115200 and opened[0][1]["timeout"] <= 0.1
    assert opened[0][1]["do_not_open"] is True  # DTR and RTS are set first, then it opens
    return driver, port, events


def serve(driver: StimulatorDriver, turns: int = 4) -> None:
    for _ in range(turns):
        driver._service(0.01)


def test_ascii_session_byte_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    driver, port, events = make_driver(
        monkeypatch,
        "needlelab-stim-ascii",
        [
            (b"*IDN?\n", b"NEEDLELAB,BRIDGE,SN9,1.2\r\n"),
            (b"STAT? 1\n", b"STAT CH1 F=2.0 PW=161 I=3.50 W=BI M=CONT OUT=1\n"),
            (
                b"STAT? 2\n",
                b"STAT CH2 F=2.0 PW=250 I=12.00 W=BI M=CONT OUT=1\n"
                b"CHG CH2 F=2.0 PW=250 I=12.50 W=BI M=CONT OUT=1\n",
            ),
        ],
    )
    serve(driver)
    port.assert_done()
    assert driver.identity == {"model": "BRIDGE", "serial": "SN9", "firmware": "1.2"}
    assert driver.stats.malformed == 0 and driver.stats.samples == 3
    changes = [
        (e.settings.channel, e.settings.pulse_width_us, e.settings.intensity_ma)
        for e in events
        if isinstance(e, StimSettingsEvent)
    ]
    assert changes == [(1, 161.0, 3.5), (2, 250.0, 12.0), (2, 250.0, 12.5)]
    driver._disconnect()
    assert port.closed


def test_frame_session_byte_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    driver, port, events = make_driver(
        monkeypatch,
        "needlelab-stim-frame",
        [(GET_ID, IDENTITY), (GET_STATUS_1, STATUS_1), (GET_STATUS_2, CHANGED_2[:7])],
    )
    serve(driver)
    assert port.replies == b"" and not port.script
    assert driver.stats.samples == 1  # the CHANGED frame is still incomplete
    port.replies += CHANGED_2[7:]  # the rest of it arrives
    serve(driver, 1)
    port.assert_done()
    assert driver.identity == {"model": "BRIDGE", "serial": 9, "fw_major": 1, "fw_minor": 2}
    assert driver.stats.malformed == 0 and driver.stats.samples == 2
    settings = [e.settings for e in events if isinstance(e, StimSettingsEvent)]
    assert [(s.channel, s.intensity_ma, s.output_on) for s in settings] == [
        (1, 3.5, True),
        (2, 12.5, True),
    ]


@pytest.mark.parametrize(
    ("profile", "identify", "allowed"),
    [
        ("needlelab-stim-ascii", b"*IDN?\n", {b"*IDN?\n", b"STAT? 1\n", b"STAT? 2\n"}),
        ("needlelab-stim-frame", GET_ID, {GET_ID, GET_STATUS_1, GET_STATUS_2}),
    ],
)
def test_only_the_profiles_queries_can_be_written(
    monkeypatch: pytest.MonkeyPatch, profile: str, identify: bytes, allowed: set[bytes]
) -> None:
    driver, port, _events = make_driver(monkeypatch, profile, [(identify, b"")])
    assert driver._allowed_writes == allowed  # hand-written above, not computed
    before = port.written
    refused = [
        b"OUT 1\n",  # a command
        b"STAT? 3\n",  # a query for a channel this session does not read
        b"STAT? 1",  # no line ending
        b"STAT? 1\nSTAT? 1\n",  # two queries in one write
        b"*IDN?\nOUT 1\n",  # a query with a command behind it
        b"",
        bytes.fromhex("f0 20 01 00 00 0f"),  # a set-output frame
        GET_ID + GET_ID,
        GET_ID[:-1],
    ]
    for data in refused:
        with pytest.raises(ReadOnlyViolation, match="refusing"):
            driver._send(data)
    assert port.written == before  # nothing at all reached the port


def test_the_driver_needs_the_gate_for_every_write() -> None:
    """No code path in the driver writes to the port except `_send` (a source-level check)."""
    import inspect

    source = inspect.getsource(stim_serial)
    assert source.count(".write(") == 1
    assert "self._port.write(data)" in inspect.getsource(StimulatorDriver._send)


# -- control lines, device.info, and the grammar gate -------------------------------------------

# The exact bytes each shipped profile may send for channels 1 and 2, typed from drivers/README.md.
ALLOWED_HEX = {
    "needlelab-stim-ascii": ["2a49444e3f0a", "535441543f20310a", "535441543f20320a"],
    "needlelab-stim-frame": ["f001f1d10f", "f010010e5d0f", "f010023e3e0f"],
}
IDENTIFY = {"needlelab-stim-ascii": b"*IDN?\n", "needlelab-stim-frame": GET_ID}


def test_control_lines_are_set_before_the_port_opens_on_every_connect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _driver, port, _events = make_driver(monkeypatch, "needlelab-stim-ascii", [(b"*IDN?\n", b"")])
    assert port.calls[:4] == ["dtr=False", "rts=False", "open", "write b'*IDN?\\n'"]
    text = (drivers_dir() / "needlelab-stim-frame.toml").read_text()
    assert "dtr = false" in text
    profile = tmp_path / "dtr-on.toml"
    profile.write_text(text.replace("dtr = false", "dtr = true"))
    driver, port, _events = make_driver(monkeypatch, profile, [(GET_ID, b"")])
    assert port.calls[:3] == ["dtr=True", "rts=False", "open"]
    # A reconnect opens a new port object: the lines are set again before it opens.
    again = ScriptedPort([(GET_ID, b"")])
    monkeypatch.setattr(stim_serial.serial, "serial_for_url", lambda url, **kw: again)
    driver._disconnect()
    assert port.closed
    driver._connect()
    assert again.calls[:3] == ["dtr=True", "rts=False", "open"]


@pytest.mark.parametrize("profile", ["needlelab-stim-ascii", "needlelab-stim-frame"])
def test_each_connect_records_the_profile_by_content_and_the_bytes_allowed(
    monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    _driver, _port, events = make_driver(monkeypatch, profile, [(IDENTIFY[profile], b"")])
    (info,) = [e.info for e in events if isinstance(e, DeviceInfoEvent)]
    sha = hashlib.sha256((drivers_dir() / f"{profile}.toml").read_bytes()).hexdigest()
    assert info == {
        "profile": profile,
        "profile_path": str(drivers_dir() / f"{profile}.toml"),
        "profile_sha256": sha,
        "family": "line" if profile.endswith("ascii") else "frame",
        "allowed_writes_hex": ALLOWED_HEX[profile],
        "dtr": False,
        "rts": False,
        "port": "/dev/ttyUSB7",
    }


def test_the_hash_is_of_the_file_that_was_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    edited = tmp_path / "edited.toml"
    raw = (drivers_dir() / "needlelab-stim-ascii.toml").read_bytes() + b"# one more line\n"
    edited.write_bytes(raw)
    _driver, _port, events = make_driver(monkeypatch, edited, [(b"*IDN?\n", b"")])
    (info,) = [e.info for e in events if isinstance(e, DeviceInfoEvent)]
    assert info["profile_sha256"] == hashlib.sha256(raw).hexdigest()
    assert info["profile"] == "needlelab-stim-ascii" and info["profile_path"] == str(edited)


def test_the_identity_is_recorded_once_and_again_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, port, events = make_driver(
        monkeypatch,
        "needlelab-stim-ascii",
        [
            (b"*IDN?\n", b"NEEDLELAB,BRIDGE,SN9,1.2\nNEEDLELAB,BRIDGE,SN9,1.2\n"),
            (b"STAT? 1\n", b""),
            (b"STAT? 2\n", b""),
        ],
    )
    serve(driver)
    port.replies += b"NEEDLELAB,BRIDGE,SN9,1.3\n"  # new firmware, as after a unit swap
    serve(driver)
    identities = [e.info for e in events if isinstance(e, DeviceInfoEvent) and "identity" in e.info]
    assert identities == [
        {"identity": {"model": "BRIDGE", "serial": "SN9", "firmware": "1.2"}},
        {"identity": {"model": "BRIDGE", "serial": "SN9", "firmware": "1.3"}},
    ]


@pytest.mark.parametrize(
    ("profile", "write"),
    [
        ("needlelab-stim-ascii", b"SET CH1 I=99.00 OUT=1\n"),
        ("needlelab-stim-frame", bytes.fromhex("f0 41 01 01 c5 11 0f")),  # SET_OUTPUT ch1 on
    ],
)
def test_the_grammar_refuses_a_write_even_if_the_allow_list_had_it(
    monkeypatch: pytest.MonkeyPatch, profile: str, write: bytes
) -> None:
    """Two independent checks: a corrupted allow-list alone does not let a write out."""
    driver, port, _events = make_driver(monkeypatch, profile, [(IDENTIFY[profile], b"")])
    driver._allowed_writes = driver._allowed_writes | {write}
    before = port.written
    with pytest.raises(ReadOnlyViolation, match="not a read"):
        driver._send(write)
    assert port.written == before


def test_a_profile_that_skipped_validation_cannot_make_a_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A profile built without the loader (model_copy does not validate) is checked again."""
    profile, source = read_profile("needlelab-stim-ascii", StimulatorProfile)
    queries = [
        q.model_copy(update={"send": "SET CH{channel} I=99.00 OUT=1"}) if q.name == "status" else q
        for q in profile.queries
    ]
    forged = profile.model_copy(update={"queries": queries})
    monkeypatch.setattr(stim_serial, "read_profile", lambda name, model: (forged, source))
    config = StimSerialConfig(
        kind="stim_serial", name="stim", profile="needlelab-stim-ascii", port="/dev/ttyUSB7"
    )
    with pytest.raises(ReadOnlyViolation, match=r"SET CH1 I=99\.00 OUT=1.*not a read"):
        StimulatorDriver(config, Hub(SessionClock()))
