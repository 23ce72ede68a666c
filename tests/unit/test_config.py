"""Config validation: good configs load, each malformed kind gives one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.config import ConfigError, StimSerialConfig, load_config
from needlelab.resources import configs_dir

GOOD = """
[session]
patient_id = "P001"

[[devices]]
kind = "stim_serial"
name = "stim"
profile = "needlelab-stim-ascii"
port = "socket://127.0.0.1:7000"
"""

BUMBLE = """
[session]
patient_id = "P001"

[[devices]]
kind = "emg_ble"
name = "emg"
profile = "needlelab-emg-ref"
advertised_name = "emg"
backend = "bumble"
bumble_transport = "{transport}"
"""

# (what is wrong, config text, words the one-line error must contain)
MALFORMED = [
    ("not TOML", "[session\npatient_id = 1", ["not valid TOML", "line 1"]),
    (
        "missing section",
        "[[devices]]\nkind='stim_manual'\nname='m'",
        ["session", "missing (required)"],
    ),
    ("unknown field", GOOD + "\ncolour = 'red'", ["colour", "unknown field"]),
    (
        "patient id with a path",
        GOOD.replace('"P001"', '"../../etc"'),
        ["session.patient_id", "'../../etc'", "allowed: 1-32 letters"],
    ),
    ("patient name with space", GOOD.replace('"P001"', '"Jane Doe"'), ["'Jane Doe'"]),
    (
        "unknown device kind",
        GOOD.replace('"stim_serial"', '"stim_wifi"'),
        ["devices[0].kind", "'stim_wifi'", "stim_serial", "stim_manual"],
    ),
    (
        "port and simulator both",
        GOOD + "\n[devices.simulator]\ntransport='pty'",
        ["devices[0]", "exactly one of 'port'"],
    ),
    (
        "neither port nor simulator",
        GOOD.replace('port = "socket://127.0.0.1:7000"', ""),
        ["exactly one of 'port'"],
    ),
    (
        "commit interval too long",
        GOOD.replace('"P001"', '"P001"\ncommit_interval_ms = 500'),
        ["session.commit_interval_ms", "500", "less than or equal to 100"],
    ),
    (
        "bad simulator transport",
        GOOD.replace('port = "socket://127.0.0.1:7000"', "")
        + "\n[devices.simulator]\ntransport='bluetooth'",
        ["devices[0].simulator.transport", "'bluetooth'", "'pty' or 'tcp'"],
    ),
    (
        "negative stall timeout",
        GOOD + "stall_timeout_s = -1",
        ["stall_timeout_s", "-1", "greater than or equal to 0.2"],
    ),
    ("duplicate device names", GOOD + GOOD[GOOD.index("[[devices]]") :], ["'stim' is used twice"]),
    (
        "bad device name",
        GOOD.replace('name = "stim"', 'name = "Stim 1"'),
        ["devices[0].name", "'Stim 1'"],
    ),
    ("wrong type", GOOD.replace('"P001"', '"P001"\nout_dir = 5'), ["session.out_dir", "5"]),
    (
        "unknown fault",
        GOOD.replace('port = "socket://127.0.0.1:7000"', "")
        + "\n[devices.simulator]\nfaults=[{kind='fire', at_s=1}]",
        ["devices[0].simulator.faults[0].kind", "'fire'", "'garbage'"],
    ),
    (
        "artefacts from a device that is not a simulated stimulator",
        GOOD
        + "\n[[devices]]\nkind='emg_ble'\nname='emg'\nprofile='needlelab-emg-ref'"
        + "\n[devices.simulator]\nartefacts_from='stim'",
        ["emg: artefacts_from 'stim'", "simulated stimulator", "none"],
    ),
    (
        "stimulator channel 0",
        GOOD + "channels = [0]",
        ["devices[0].channels[0]", "(got 0)", "greater than or equal to 1"],
    ),
    (
        "stimulator channel 99",
        GOOD + "channels = [1, 99]",
        ["devices[0].channels[1]", "(got 99)", "less than or equal to 16"],
    ),
    ("stimulator channel twice", GOOD + "channels = [2, 2]", ["channels [2] are listed twice"]),
    (
        "port URL of no pyserial scheme",
        GOOD.replace("socket://127.0.0.1:7000", "tcp://127.0.0.1:7000"),
        ["devices[0].port", "unknown port URL scheme 'tcp'", "socket", "loop", "spy"],
    ),
    (
        "socket port without a port number",
        GOOD.replace("socket://127.0.0.1:7000", "socket://127.0.0.1"),
        ["devices[0].port", "socket://HOST:PORT"],
    ),
    (
        "socket port out of range",
        GOOD.replace("socket://127.0.0.1:7000", "socket://127.0.0.1:70000"),
        ["devices[0].port", "PORT 0-65535"],
    ),
    ("empty port", GOOD.replace("socket://127.0.0.1:7000", " "), ["devices[0].port", "empty"]),
    (
        "spy around a bad URL",
        GOOD.replace("socket://127.0.0.1:7000", "spy://nope://x"),
        ["unknown port URL scheme 'nope'"],
    ),
    (
        "bumble transport of no scheme",
        BUMBLE.format(transport="bogus-spec"),
        ["devices[0].bumble_transport", "unknown transport scheme 'bogus-spec'", "unix:PATH"],
    ),
    (
        "bumble tcp-client without a port",
        BUMBLE.format(transport="tcp-client:127.0.0.1"),
        ["devices[0].bumble_transport", "tcp-client:HOST:PORT"],
    ),
    (
        "bumble unix without a path",
        BUMBLE.format(transport="unix:"),
        ["devices[0].bumble_transport", "unix needs parameters"],
    ),
    (
        "BLE device that cannot be found",
        "[session]\npatient_id='P1'\n[[devices]]\nkind='caliper_ble'\nname='cal'"
        + "\nprofile='sylvac-simple'",
        ["devices[0]", "'address' or 'advertised_name'"],
    ),
]


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.session.patient_id == "P001"
    assert isinstance(config.devices[0], StimSerialConfig)
    assert config.devices[0].stall_timeout_s == 2.0


@pytest.mark.parametrize("shipped", ["demo.toml", "clinic-example.toml", "sim-faults.toml"])
def test_shipped_configs_are_valid(shipped: str) -> None:
    load_config(configs_dir() / shipped)


@pytest.mark.parametrize(("what", "text", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_gives_one_line_per_problem(
    tmp_path: Path, what: str, text: str, words: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = info.value.lines
    assert lines, what
    for line in lines:
        assert "\n" not in line
        assert line.startswith(f"{path}: ")
    joined = " ".join(lines)
    for word in words:
        assert word in joined, f"{what}: {word!r} not in {lines}"


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_check_command_prints_lines_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MALFORMED[5][1])
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "check", str(good), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{good}: ok" in result.stdout
    err_lines = result.stderr.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(f"{bad}: devices[0].kind: unknown kind")


@pytest.mark.parametrize(
    "port",
    ["/dev/ttyUSB0", "COM3", "socket://127.0.0.1:7000", "loop://", "spy://loop://",
     "rfc2217://localhost:2217", "hwgrep://0403:6001", "SOCKET://127.0.0.1:1"],
)  # fmt: skip
def test_ports_pyserial_takes_are_taken(tmp_path: Path, port: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("socket://127.0.0.1:7000", port))
    assert load_config(path).devices[0].port == port  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "transport",
    ["local:emg", "unix:/tmp/emg.hci", "tcp-client:127.0.0.1:9000", "tcp-server:_:9000",
     "usb:0", "usb:[driver=rtk]0", "hci-socket", "android-netsim", "serial:/dev/ttyACM0"],
)  # fmt: skip
def test_bumble_transports_bumble_opens_are_taken(tmp_path: Path, transport: str) -> None:
    """Spec forms from bumble's own documentation of `open_transport`."""
    path = tmp_path / "c.toml"
    path.write_text(BUMBLE.format(transport=transport))
    assert load_config(path).devices[0].bumble_transport == transport  # type: ignore[union-attr]
