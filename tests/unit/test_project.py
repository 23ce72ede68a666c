"""Project invariants: the README's two commands are what CI runs; pins stay pinned."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)]


def test_readme_starts_with_install_and_demo_then_tests() -> None:
    install, tests = readme_blocks()[:2]
    assert "pip install" in install and install.endswith("needlelab demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_commands() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    extract = re.search(r"readme_block\(\) \{.*?\n\s+(awk .*?README\.md)\n", script, re.S)
    assert extract, "CI must read its commands from the README"
    for n, block in enumerate(readme_blocks()[:2], start=1):
        out = subprocess.run(
            ["bash", "-c", f"readme_block() {{ {extract.group(1)}; }}; readme_block {n}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == block


def test_unstable_dependencies_are_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    assert re.fullmatch(r"bumble==[\d.]+", deps["bumble"])
    assert re.fullmatch(r"bleak>=3\.\d+,<4", deps["bleak"])
    gui = " ".join(project["optional-dependencies"]["gui"])
    assert "PySide6-Essentials>=6.9.2,<6.12" in gui
