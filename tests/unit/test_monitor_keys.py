"""`[monitor.keys]`: a foot pedal's keys, validated strictly with one line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.config import ConfigError, load_config

ALLOWED = (
    "allowed: F13-F24, PageUp, PageDown, Home, End, Insert or Pause, alone or with Ctrl+ or "
    "Shift+; or Ctrl+ a letter, digit or F-key (not Ctrl+Z)"
)


def config_with(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "pedal.toml"
    path.write_text(f'[session]\npatient_id = "P01"\n\n[monitor.keys]\n{keys}\n')
    return path


def test_pedal_keys_are_taken_and_default_to_f13_f14(tmp_path: Path) -> None:
    keys = load_config(config_with(tmp_path, "")).monitor.keys
    assert (keys.prompt, keys.commit, keys.correct, keys.undo) == (["F13"], ["F14"], [], [])
    path = config_with(
        tmp_path, 'prompt = ["PageDown", "Shift+F13"]\ncommit = ["PageUp", "Ctrl+P"]\n'
        'undo = ["Ctrl+Shift+F5", "Pause"]'
    )  # fmt: skip
    keys = load_config(path).monitor.keys
    assert keys.prompt == ["PageDown", "Shift+F13"] and keys.undo == ["Ctrl+Shift+F5", "Pause"]


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        ('prompt = ["L"]', f"monitor.keys.prompt: 'L' cannot be a pedal key (the answer grammar "
                           f"or typing uses it); {ALLOWED}"),
        ('commit = ["Space"]', "monitor.keys.commit: 'Space' cannot be a pedal key"),
        ('commit = ["F3"]', "monitor.keys.commit: 'F3' cannot be a pedal key"),
        ('undo = ["Ctrl+Z"]', "monitor.keys.undo: 'Ctrl+Z' cannot be a pedal key"),
        ('prompt = ["Alt+3"]', "monitor.keys.prompt: 'Alt+3' cannot be a pedal key"),
        ('prompt = ["pagedown"]', "monitor.keys.prompt: 'pagedown' cannot be a pedal key"),
        ('prompt = ["F13"]\ncommit = ["F13"]', "monitor.keys: 'F13' is given to prompt and to "
                                               "commit: one each"),
        ('prompt = "F13"', "monitor.keys.prompt: Input should be a valid list (got 'F13')"),
        ('pedal = ["F13"]', "monitor.keys.pedal: unknown field"),
    ],
)  # fmt: skip
def test_a_key_that_cannot_be_a_pedal_key_is_one_line(tmp_path: Path, keys: str, line: str) -> None:
    path = config_with(tmp_path, keys)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.lines
    assert problem.startswith(f"{path}: {line}"), problem


def test_check_refuses_a_bad_pedal_key_in_one_line(tmp_path: Path) -> None:
    path = config_with(tmp_path, 'commit = ["Return"]')
    check = subprocess.run(
        [str(Path(sys.executable).with_name("needlelab")), "check", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 2
    (line,) = [line for line in (check.stdout + check.stderr).splitlines() if line.strip()]
    assert "monitor.keys.commit: 'Return' cannot be a pedal key" in line
