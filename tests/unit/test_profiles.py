"""Stimulator driver profiles: the shipped ones load, and bad ones fail with one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest

import needlelab.resources
from needlelab.config import ConfigError
from needlelab.devices.codecs import StimProtocol
from needlelab.profiles import FieldRule, find_profile, load_stim_profile
from needlelab.resources import drivers_dir

ASCII_TEXT = (drivers_dir() / "needlelab-stim-ascii.toml").read_text()
FRAME_TEXT = (drivers_dir() / "needlelab-stim-frame.toml").read_text()


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad-stim.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_stim_profile(path)
    assert len(info.value.lines) == 1, info.value.lines
    line = info.value.lines[0]
    assert line.startswith(f"{path}: ") and "\n" not in line
    return line


@pytest.mark.parametrize("name", ["needlelab-stim-ascii", "needlelab-stim-frame"])
def test_shipped_profiles_load_by_name_and_by_path(name: str) -> None:
    by_name = load_stim_profile(name)
    assert by_name.profile == name and by_name.device_type == "stimulator"
    assert load_stim_profile(drivers_dir() / f"{name}.toml") == by_name
    assert {q.name for q in by_name.queries} == {"identify", "status"}
    assert {m.name for m in by_name.messages} == {"identity", "status", "change"}


def test_an_installed_wheel_finds_profiles_inside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "needlelab"
    (package / "_drivers").mkdir(parents=True)
    (package / "_drivers" / "needlelab-stim-ascii.toml").write_text(
        ASCII_TEXT.replace('description = "', 'description = "(wheel copy) ')
    )
    monkeypatch.setattr(needlelab.resources, "_PACKAGE", package)
    assert find_profile("needlelab-stim-ascii").parent == package / "_drivers"
    assert load_stim_profile("needlelab-stim-ascii").description.startswith("(wheel copy)")


def test_an_unknown_profile_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_stim_profile("acme-9000")
    assert "acme-9000: no such driver profile" in str(info.value)
    assert "needlelab-stim-ascii" in str(info.value) and "needlelab-stim-frame" in str(info.value)
    with pytest.raises(ConfigError, match="no such profile file"):
        load_stim_profile("drivers/acme-9000.toml")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("baudrate = 115200", 'baudrate = 115200\nparity = "X"', ["transport.parity", "'X'"]),
        ("baudrate = 115200", "baudrate = 115200\nspeed = 3", ["transport.speed", "unknown"]),
        ('type = "line"', 'type = "morse"', ["transport.framing.type", "'line', 'frame'"]),
        ('line_ending = "\\n"', 'line_ending = ""', ["transport.framing.line_ending"]),
        ("max_line_bytes = 128", "max_line_bytes = 2", ["max_line_bytes", "greater than"]),
        ("every_ms = 200\n", "", ["queries[1]", "every_ms"]),
        ("STAT? {channel}", "STAT? {ch}", ["queries[1].send", "{channel}"]),
        ('when = "connect"', 'when = "always"', ["queries[0].when", "'connect' or 'poll'"]),
        ("(?P<pulse_width_us>", "(?P<pw>", ["messages[1]", "pulse_width_us"]),
        ("PW={pulse_width_us:.0f}", "PW={pw}", ["messages[1]", "'format'", "pw"]),
        ("'STAT CH(", "'(STAT CH(", ["messages[1].match", "regular expression"]),
        ("map = { BI", "map = { }, x = { BI", ["messages[1].fields.waveform", "unknown"]),
        ('fields.mode = { type = "enum"', 'fields.mood = { type = "enum"', ["rules for ['mode']"]),
        ('name = "change"', 'name = "status"', ["message names must be unique", "status"]),
    ],
)
def test_line_profile_errors_name_the_field_and_what_is_allowed(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in ASCII_TEXT
    line = load_error(tmp_path, ASCII_TEXT.replace(old, new, 1))
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("escape_xor = 0x55", "escape_xor = 0x71", ["transport.framing", "escape_xor"]),
        ("stop = 0x0F", "stop = 0xF0", ["transport.framing.stop", "must be 0x0F", "fixed"]),
        ("start = 0xF0", "start = 0xAA", ["transport.framing.start", "must be 0xF0"]),
        ('crc = "crc16-ccitt-false"', 'crc = "crc32"', ["transport.framing.crc", "crc16"]),
        ('send = "01"', 'send = "zz"', ["'identify'", "hex"]),
        ('send = "10{channel:02x}"', 'send = "10{channel}"', ["'status'", "hex"]),
        ("id = 0x12", "id = 0x11", ["message ids must be unique", "0x11"]),
        ('layout = "<8sIBB"', 'layout = "<8sIB"', ["messages[0]", "same number of values"]),
        ('layout = "<8sIBB"', 'layout = "<8sIQ"', ["messages[0]", "same number"]),
        ('layout = "<8sIBB"', 'layout = "<8sI%B"', ["messages[0].layout", "struct"]),
        ("max_packet_bytes = 69", "max_packet_bytes = 20", ["'identity'", "max_packet_bytes"]),
        ('send = "10{channel:02x}"', 'send = "3{channel:x}"', ["'status'", "channel 16", "hex"]),
    ],
)
def test_frame_profile_errors_name_the_field_and_what_is_allowed(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in FRAME_TEXT
    line = load_error(tmp_path, FRAME_TEXT.replace(old, new, 1))
    for text in expected:
        assert text in line, line


def test_not_toml_is_one_line_too(tmp_path: Path) -> None:
    assert "not valid TOML" in load_error(tmp_path, ASCII_TEXT + "\n[[[\n")


def test_field_rules_convert_and_refuse() -> None:
    assert FieldRule(type="float", scale=0.01).convert(1250) == 12.5
    assert FieldRule(type="float", scale=0.1).convert(373) == 37.3
    assert FieldRule(type="int").convert("7") == 7
    assert FieldRule(type="enum", map={"BI": "biphasic"}).convert("BI") == "biphasic"
    assert FieldRule(type="bool", true=["ON"], false=["OFF"]).convert("OFF") is False
    assert FieldRule(type="str").convert(b"SIM\0\0\0") == "SIM"
    assert FieldRule(type="const", value="biphasic").convert(None) == "biphasic"
    for rule, raw in [
        (FieldRule(type="enum", map={"BI": "biphasic"}), "TRI"),
        (FieldRule(type="bool", true=["1"], false=["0"]), "7"),
        (FieldRule(type="float"), "fast"),
        (FieldRule(type="str"), b"\xff"),
    ]:
        with pytest.raises((KeyError, ValueError)):
            rule.convert(raw)


def test_const_fields_describe_what_a_unit_does_not_report(tmp_path: Path) -> None:
    """A single-channel unit that reports neither its channel nor its waveform."""
    text = (
        ASCII_TEXT.replace("STAT CH(?P<channel>\\d{1,2}) ", "STAT ")
        .replace("STAT CH{channel} ", "STAT ")
        .replace(
            'fields.channel = { type = "int" }\nfields.frequency_hz',
            'fields.channel = { type = "const", value = 1 }\nfields.frequency_hz',
            1,
        )
        .replace(" W=(?P<waveform>[A-Z]{2,4})", "", 1)
        .replace(" W={waveform}", "", 1)
        .replace(
            'fields.waveform = { type = "enum", map = { BI = "biphasic", MONO = "monophasic" } }',
            'fields.waveform = { type = "const", value = "monophasic" }',
            1,
        )
    )
    path = tmp_path / "mono-stim.toml"
    path.write_text(text)
    protocol = StimProtocol(load_stim_profile(path))
    (message,), malformed = protocol.decode(b"STAT F=2.0 PW=250 I=3.00 M=CONT OUT=1\n")
    assert malformed == 0
    settings = message.settings()
    assert (settings.channel, settings.waveform, settings.intensity_ma) == (1, "monophasic", 3.0)
    assert protocol.encode_message("status", settings.model_dump()) == (
        b"STAT F=2.0 PW=250 I=3.00 M=CONT OUT=1\n"
    )
    bad = text.replace('{ type = "const", value = "monophasic" }', '{ type = "const" }')
    assert "fields.waveform" in load_error(tmp_path, bad)


# -- read-only by grammar: a write disguised as a query does not load ---------------------------


@pytest.mark.parametrize(
    ("send", "why"),
    [
        ("SET CH{channel} I=99.00 OUT=1", "not a read"),  # the example: a write
        ("OUT {channel}", "not a read"),  # a command word without '?'
        ("STAT? {channel};OUT 1", "not a read"),  # a query with a second command behind it
        ("STAT? {channel} OUT=1", "not a read"),  # '=' is no argument
        ("STAT?  {channel}", "not a read"),  # two spaces
        ("STAT?\t{channel}", "not a read"),  # a control character
        ("STAT? {channel}\u00e9", "not ASCII"),
    ],
)
def test_a_line_query_that_is_not_a_read_fails_to_load_naming_it(
    tmp_path: Path, send: str, why: str
) -> None:
    old = 'send = "STAT? {channel}"'
    assert old in ASCII_TEXT
    line = load_error(tmp_path, ASCII_TEXT.replace(old, f'send = "{send}"'))
    assert f"queries[1]: query 'status': send = {send!r} is {why}" in line, line
    if why == "not a read":
        assert "'?'" in line and "drivers/README.md" in line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # SET_OUTPUT channel, on: a write id (0x40-0x7F) dressed as the status query
        ('send = "10{channel:02x}"', 'send = "41{channel:02x}01"', "id 0x41 is a write command"),
        ('send = "01"', 'send = "40"', "id 0x40 is a write command"),  # SET_CHANNEL
        ('send = "01"', 'send = "80"', "id 0x80 is a reserved command"),
        ('send = "01"', 'send = "00"', "id 0x00 is a reserved command"),
    ],
)
def test_a_frame_query_with_a_write_id_fails_to_load_naming_it(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in FRAME_TEXT
    line = load_error(tmp_path, FRAME_TEXT.replace(old, new, 1))
    index = 1 if "channel" in old else 0
    sent = new.removeprefix("send = ").strip('"')
    assert f"queries[{index}]: query " in line and f"send = '{sent}' is" in line, line
    assert f"not a read: {expected}" in line and "reads are 0x01-0x3F" in line, line


def test_a_query_that_is_a_write_on_one_channel_only_is_refused_too(tmp_path: Path) -> None:
    """ "{channel}0" is GET_STATUS (0x10) on channel 1, but SET_CHANNEL (0x40) on channel 4."""
    line = load_error(
        tmp_path, FRAME_TEXT.replace('send = "10{channel:02x}"', 'send = "{channel}0"', 1)
    )
    assert "query 'status': send = '{channel}0' (on channel 4: '40')" in line, line
    assert "id 0x40 is a write command" in line


@pytest.mark.parametrize(
    "send",
    ["*IDN?", "*OPC?", "STAT? {channel}", "S{channel}?", "MEAS:CURR? {channel},2", ":SOUR1:VOLT?"],
)
def test_line_reads_of_every_form_load(tmp_path: Path, send: str) -> None:
    path = tmp_path / "ok-stim.toml"
    path.write_text(ASCII_TEXT.replace('send = "STAT? {channel}"', f'send = "{send}"'))
    assert load_stim_profile(path).queries[1].send == send


def test_a_line_ending_of_the_profiles_own_choosing_is_refused(tmp_path: Path) -> None:
    line = load_error(tmp_path, ASCII_TEXT.replace('line_ending = "\\n"', 'line_ending = ";"'))
    assert "transport.framing.line_ending" in line


def test_control_lines_default_off_and_are_per_profile(tmp_path: Path) -> None:
    text = ASCII_TEXT.replace("dtr = false", "dtr = true")
    path = tmp_path / "dtr-stim.toml"
    path.write_text(text)
    assert (load_stim_profile(path).transport.dtr, load_stim_profile(path).transport.rts) == (
        True,
        False,
    )
    without = "\n".join(
        line for line in ASCII_TEXT.splitlines() if not line.startswith(("dtr", "rts"))
    )
    path.write_text(without)
    transport = load_stim_profile(path).transport
    assert (transport.dtr, transport.rts) == (False, False)  # the documented default
    assert "transport.rts" in load_error(
        tmp_path, ASCII_TEXT.replace("rts = false", 'rts = "maybe"')
    )
