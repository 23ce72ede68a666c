"""Protocol templates: the shipped default loads; bad templates get one line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from needlelab.clinic.protocol import load_protocol
from needlelab.config import ConfigError, LocalizationConfig

GOOD = """
[protocol]
name = "t"
[[sites]]
name = "L3 R"
level = "L3"
side = "R"
[[phases]]
name = "needling"
kind = "needling"
site = "L3 R"
"""


def test_the_default_template_is_the_seeds_low_back_example() -> None:
    p = load_protocol("low-back-l3")
    needling = [ph for ph in p.phases if ph.kind == "needling"]
    assert len(needling) == 1 and needling[0].estim and needling[0].site == "L3 R"
    site = p.site("L3 R")
    assert (site.level, site.side, site.muscle) == ("L3", "R", "multifidus")
    kinds = [(ph.kind, ph.when) for ph in p.phases]
    assert kinds.index(("tpd", "pre")) < kinds.index(("needling", "during"))
    assert kinds.index(("needling", "during")) < kinds.index(("tpd", "post"))
    assert p.tpd.down == 2 and p.tpd.catch_rate == 0.2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (GOOD.replace('side = "R"', 'side = "right"'),
         "sites[0].side: Input should be 'L', 'R' or 'midline' (got 'right')"),
        (GOOD.replace('site = "L3 R"', 'site = "L4 R"'),
         "phase 'needling' names site 'L4 R'; defined: L3 R"),
        (GOOD.replace('kind = "needling"', 'kind = "needle"'),
         "phases[0].kind: Input should be"),
        (GOOD + "\n[tpd]\nstart_mm = 500\n", "tpd.start_mm: Input should be less than or equal"),
        (GOOD + "\n[tpd]\nstepz_mm = [1]\n", "tpd.stepz_mm: unknown field"),
        (GOOD.replace('level = "L3"', 'level = "C5"'),
         "sites[0].level: 'C5' is not in region 'lumbar'; allowed: ['T10'"),
        (GOOD.replace('site = "L3 R"', ""), "a needling phase needs 'site'"),
        ("[protocol\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_templates_get_one_line_per_problem(tmp_path: Path, change: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(change)
    with pytest.raises(ConfigError) as info:
        load_protocol(path)
    (line,) = info.value.lines
    assert line.startswith(f"{path}: ") and expected in line and "\n" not in line


def test_sites_are_checked_against_the_sessions_regions(tmp_path: Path) -> None:
    path = tmp_path / "neck.toml"
    path.write_text(GOOD.replace('level = "L3"', 'level = "C5"\nregion = "neck"'))
    neck = LocalizationConfig(regions={"neck": ["C4", "C5", "C6"]}, region="neck")
    assert load_protocol(path, neck).sites[0].level == "C5"


def test_needlelab_check_reports_a_bad_template_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('side = "R"', 'side = "X"'))
    result = subprocess.run(
        [sys.executable, "-m", "needlelab.cli", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "sites[0].side" in result.stderr and "Traceback" not in result.stderr
