"""The demo's protocol template is the default one shortened on purpose, and says so."""

from __future__ import annotations

import tomllib
from typing import Any

from needlelab.clinic.protocol import load_protocol
from needlelab.resources import configs_dir

# What the demo template changes: (table, key). Everything else must be low-back-l3's own.
SHORTENED = [("lrj", "trials"), ("lrj", "gap_s"), ("prompts", "every_s")]


def _read(name: str) -> dict[str, Any]:
    return tomllib.loads((configs_dir() / "protocols" / f"{name}.toml").read_text())


def test_the_demo_template_differs_from_the_default_only_where_it_says() -> None:
    full, short = _read("low-back-l3"), _read("low-back-l3-demo")
    said = short["protocol"].pop("shortened")
    assert short["protocol"].pop("name") == "low-back-l3-demo"
    full["protocol"].pop("name")
    for table, key in SHORTENED:
        cut, whole = short[table].pop(key), full[table].pop(key)
        assert cut < whole, (table, key)
        assert f"{whole:g}" in said and f"{cut:g}" in said, (table, key, said)  # both numbers
    assert short == full
    assert "low-back-l3" in said


def test_the_demo_template_loads_and_a_full_template_says_nothing_shortened() -> None:
    assert load_protocol("low-back-l3-demo").protocol.shortened
    assert load_protocol("low-back-l3").protocol.shortened == ""
