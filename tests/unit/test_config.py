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
