"""StimulatorDriver without threads or ports: expected writes, canned replies (PyMeasure style).

`ScriptedPort` stands in for the object `serial.serial_for_url` returns. It fails on any write
that is not the next expected one, serves each reply only after its query was written, and
`assert_done()` checks that every expected write came and every reply was read.
"""

from __future__ import annotations

from typing import Any

import pytest

from needlelab.clock import SessionClock
from needlelab.config import StimSerialConfig
from needlelab.devices import stim_serial
from needlelab.devices.stim_serial import ReadOnlyViolation, StimulatorDriver
from needlelab.events import StimSettingsEvent
from needlelab.hub import Hub

GET_ID = bytes.fromhex("f0 01 f1 d1 0f")
GET_STATUS_1 = bytes.fromhex("f0 10 01 0e 5d 0f")
GET_STATUS_2 = bytes.fromhex("f0 10 02 3e 3e 0f")
STATUS_1 = bytes.fromhex("f0 11 01 14 00 a1 00 5e 01 01 00 01 81 5a 7e 0f")  # 161 µs, 3.50 mA
CHANGED_2 = bytes.fromhex("f0 12 02 14 00 fa 00 e2 04 01 00 01 7e a3 0f")  # 250 µs, 12.50 mA
IDENTITY = bytes.fromhex("f0 02 42 52 49 44 47 45 00 00 09 00 00 00 01 02 d5 ae 0f")


class ScriptedPort:
    """A fake serial port that plays a script of (expected write, canned reply)."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.written = b""
        self.replies = b""
        self.closed = False

    def write(self, data: bytes) -> int:
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
    monkeypatch: pytest.MonkeyPatch, profile: str, script: list[tuple[bytes, bytes]]
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
        profile=profile,
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
