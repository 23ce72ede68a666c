"""drivers/README.md keeps its promise: its example profile and ten-line test run as written."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from needlelab.profiles import load_stim_profile
from needlelab.resources import drivers_dir

README = (drivers_dir() / "README.md").read_text()


def code_block(after_heading: str, language: str) -> str:
    """The first fenced block of `language` after a heading of the drivers README."""
    section = README[README.index(after_heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {after_heading!r}"
    return match[1]


def test_the_readme_profile_and_its_ten_line_test_run_as_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sim_stim: Callable[..., Any],
    stim_driver: Callable[..., Any],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "drivers").mkdir()
    (tmp_path / "drivers" / "acme-stim.toml").write_text(code_block("## Writing a profile", "toml"))
    profile = load_stim_profile("drivers/acme-stim.toml")
    assert profile.profile == "acme-stim" and profile.transport.framing.type == "line"
    source = code_block("## Testing a profile against the simulator", "python")
    assert len(source.strip().splitlines()) <= 12
    namespace: dict[str, Any] = {}
    exec(compile(source, "drivers/README.md", "exec"), namespace)
    namespace["test_acme_profile"](sim_stim, stim_driver)
