"""The default protocol end to end: simulated devices and patient, through to the report."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import needlelab.demo as demo
from needlelab.clinic.report import write_report
from needlelab.clinic.scoring import score_session
from needlelab.config import load_config
from needlelab.record import verify_report
from needlelab.resources import configs_dir
from needlelab.session import Session


def test_the_default_protocol_runs_end_to_end_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clinician hurries (the patient's own reaction times are still waited for).
    monkeypatch.setattr(demo, "TPD_TRIAL_S", 0.002)
    monkeypatch.setattr(demo, "PROMPT_EVERY_S", 0.05)
    monkeypatch.setattr(demo, "RATING_S", 0.01)
    monkeypatch.setattr(demo, "LRJ_GAP_S", 0.01)
    config = load_config(configs_dir() / "demo.toml")
    session = Session(config, tmp_path)
    session.start()
    try:
        demo.demo_script(session, threading.Event())
    finally:
        session.stop()
    assert verify_report(session.path)["ok"]
    scores = score_session(session.path)
    assert scores.protocol == "low-back-l3"
    assert [name for name, _start, end in scores.phases if end is not None] == [
        "baseline pain", "baseline TPD", "baseline LRJ", "baseline movement",
        "needling with e-stim", "post TPD", "post LRJ", "post movement", "post pain",
    ]  # fmt: skip
    tracks = {t.name: t for t in scores.tpd}
    assert set(tracks) == {f"{w} L3 {s} vertical" for w in ("pre", "post") for s in "RL"}
    # The simulated patient's thresholds: 48 mm (painful right), 40 mm (left), right 6 mm better
    # after; each estimate within a step and a half of it.
    for name, truth in (("pre L3 R vertical", 48), ("pre L3 L vertical", 40),
                        ("post L3 R vertical", 42), ("post L3 L vertical", 40)):  # fmt: skip
        threshold = tracks[name].threshold_mm
        assert threshold is not None and abs(threshold - truth) <= 7.5, (name, threshold)
        assert tracks[name].false_alarm_rate is not None
    assert [b.block for b in scores.lrj] == ["pre", "post"]
    assert all(b.n == demo.LRJ_TRIALS and b.median_rt_ms for b in scores.lrj)
    assert scores.nrs["post"][0] < scores.nrs["pre"][0]
    assert set(scores.rom) == {"flexion", "extension"}
    assert scores.localization.accuracy.n == config_prompts()
    page = write_report(session.path, tmp_path).read_text()
    assert page.count("<h2>") == 9 and "low-back-l3" in page


def config_prompts() -> int:
    from needlelab.clinic.protocol import load_protocol

    return load_protocol("low-back-l3").prompts.count
