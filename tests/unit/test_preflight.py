"""Preflight: what a session would reject is rejected before its file exists, in one line each."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from needlelab.config import ConfigError, load_config
from needlelab.preflight import CannotWriteError, preflight, writable_folder_problem
from needlelab.resources import drivers_dir
from needlelab.session import Session

STIM = """
[session]
patient_id = "PRE01"
out_dir = "{out}"

[[devices]]
kind = "stim_serial"
name = "stim"
profile = "{profile}"
channels = {channels}
{where}
"""


def config_file(tmp_path: Path, profile: str = "needlelab-stim-ascii", **fields: str) -> Path:
    values = {"out": str(tmp_path / "out"), "profile": profile, "channels": "[1]",
              "where": 'port = "loop://"', **fields}  # fmt: skip
    path = tmp_path / "c.toml"
    path.write_text(STIM.format(**values))
    return path


def test_channels_a_one_channel_profile_cannot_report_are_refused(tmp_path: Path) -> None:
    """A unit that reports no channel number (the profile's channel is a constant) has one."""
    text = (drivers_dir() / "needlelab-stim-ascii.toml").read_text()
    assert text.count('fields.channel = { type = "int" }') == 2
    one = tmp_path / "one-channel.toml"
    for old, new in (
        ('fields.channel = { type = "int" }', 'fields.channel = { type = "const", value = 1 }'),
        ("CH{channel} F=", "CH1 F="),  # the simulator's reply format: no channel field now
        ('profile = "needlelab-stim-ascii"', 'profile = "one-channel"'),
    ):
        text = text.replace(old, new)
    one.write_text(text)
    path = config_file(tmp_path, str(one), channels="[1, 2]")
    with pytest.raises(ConfigError) as info:
        preflight(load_config(path), str(path))
    (line,) = info.value.lines
    assert line.startswith(f"{path}: devices[0].channels: profile one-channel reports channel 1")
    assert "[1, 2]" in line
    preflight(load_config(config_file(tmp_path, str(one))), "ok.toml")  # channel 1 alone is fine


def test_a_session_with_a_bad_profile_fails_before_any_file_or_folder(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "no-such-profile"))
    with pytest.raises(ConfigError, match="no-such-profile: no such driver profile"):
        Session(config)
    assert not (tmp_path / "out").exists()


def test_a_file_where_the_folder_should_be_is_said_before_anything(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert writable_folder_problem(tmp_path / "new" / "deeper") is None  # made when recording
    problem = writable_folder_problem(blocker / "sub")
    assert problem is not None and f"{blocker} is a file, not a folder" in problem
    config = load_config(config_file(tmp_path))
    with pytest.raises(CannotWriteError, match="--out"):
        Session(config, out_dir=blocker / "sub")


def test_lsl_without_pylsl_is_a_config_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pylsl", None)  # as if the `lsl` extra were not installed
    config = load_config(config_file(tmp_path))
    preflight(config)  # LSL off: not needed
    with pytest.raises(ConfigError) as info:
        preflight(config, "c.toml", lsl=True)
    (line,) = info.value.lines
    assert line.startswith("c.toml: lsl.enabled: LSL cannot run here") and "lsl" in line
    with pytest.raises(ConfigError):
        Session(config, lsl=True)
    assert not (tmp_path / "out").exists()


def test_a_start_that_fails_after_the_file_was_made_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulators cannot get a working folder (TMPDIR is a file): the session stops, and
    the file, which holds no sample, goes with the folders made for it."""
    blocker = tmp_path / "tmpdir-is-a-file"
    blocker.write_text("")
    config = load_config(config_file(tmp_path, where="[devices.simulator]\ntransport = 'pty'"))
    session = Session(config, out_dir=tmp_path / "out" / "deeper")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    with pytest.raises(NotADirectoryError):
        session.start()
    assert isinstance(session.start_failure, NotADirectoryError)
    assert not session.recording
    assert not (tmp_path / "out").exists()
