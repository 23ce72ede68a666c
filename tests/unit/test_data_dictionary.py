"""The CSV export's data dictionary describes every event field in words of its own."""

from __future__ import annotations

from needlelab.record.dictionary import COMMON, FIELDS, describe, event_models


def test_every_field_of_every_event_kind_is_described() -> None:
    models = event_models()
    assert {"stim.settings", "response", "tpd.trial", "lrj.trial"} <= set(models)
    missing = [
        f"{kind}.{name}"
        for kind, cls in models.items()
        for name in cls.model_fields
        if name not in COMMON and name not in FIELDS.get(kind, {})
    ]
    assert not missing, f"describe these in needlelab/record/dictionary.py: {missing}"
    for kind, fields in FIELDS.items():
        for name in fields:
            text, _unit = describe(kind, name)
            assert len(text.split()) >= 3 and "ARCHITECTURE" not in text, (kind, name)
    assert describe("response", "latency_ms") == ("time from the prompt to the answer", "ms")
    assert describe("tpd.trial", "distance_mm")[1] == "mm"


def test_a_field_this_version_does_not_know_is_still_described() -> None:
    text, unit = describe("gap", "a_newer_field")
    assert text.startswith("field a_newer_field of gap events (`gap`: a stream delivered")
    assert describe("some.newer.kind", "x") == ("field x of some.newer.kind events", "")
    assert unit == ""
