"""Scoring on a hand-built session file (tests/unit/conftest.py) gives the hand-computed numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from needlelab.clinic.scoring import SessionScores, score_session


@pytest.fixture(scope="module")
def scores(hand_built_session: Path) -> SessionScores:
    return score_session(hand_built_session)


def test_localization_scores(scores: SessionScores) -> None:
    loc = scores.localization
    # Standing: L3 R (0), L3 R (0, the correction), L2 L (-1, side wrong).
    assert loc.accuracy.n == 3
    assert loc.accuracy.level_exact_pct == pytest.approx(200 / 3)
    assert loc.accuracy.mean_abs_level_error == pytest.approx(1 / 3)
    assert loc.accuracy.side_correct_pct == pytest.approx(200 / 3)
    assert loc.accuracy.median_latency_ms == 900.0
    row = loc.levels.index("L3")
    assert loc.confusion[row][loc.levels.index("L3")] == 2
    assert loc.confusion[row][loc.levels.index("L2")] == 1
    assert sum(map(sum, loc.confusion)) == 3
    assert loc.descriptors == {"dull": 1, "ache": 1, "electric": 1}


def test_tpd_scores(scores: SessionScores) -> None:
    pre, post = scores.tpd
    assert pre.threshold_mm == pytest.approx((40 + 30 + 45 + 35 + 40 + 30) / 6)
    assert post.threshold_mm == pytest.approx((30 + 20 + 35 + 25 + 30 + 20) / 6)  # the last 6
    assert pre.false_alarm_rate == 0.5
    assert scores.tpd_change == {"L3 R vertical": pytest.approx(160 / 6 - 220 / 6)}


def test_lrj_ratings_dose_emg_and_phases(scores: SessionScores) -> None:
    pre, post = scores.lrj
    assert (pre.n, pre.accuracy_pct, pre.median_rt_ms) == (4, 50.0, 900.0)
    assert pre.bias == pytest.approx(2 / 3 - 1 / 3)  # of 3 answered: 2 said R, 1 was R
    assert (post.accuracy_pct, post.median_rt_ms, post.bias) == (100.0, 650.0, 0.0)
    assert scores.nrs == {"pre": [6], "post": [3]}
    assert scores.rom == {"flexion": {"pre": 40, "post": 55}}
    # The dose is counted within the needling phase (0.9-5 s): 10 mA from 1.005 to 3.005 s and
    # 12 mA from 3.005 to 5 s; the 12 mA from 5 to 6.005 s is outside it.
    assert [(d.channel, d.intensity_ma, d.frequency_hz) for d in scores.dose] == [
        ("stim ch1", 10.0, 2.0), ("stim ch1", 12.0, 2.0),
    ]  # fmt: skip
    assert [d.seconds for d in scores.dose] == [pytest.approx(2.0), pytest.approx(1.995)]
    assert scores.stim_total_s == {"stim ch1": pytest.approx(3.995)}
    assert [(d.intensity_ma, d.seconds) for d in scores.dose_outside] == [
        (12.0, pytest.approx(1.005))
    ]
    (outside,) = scores.stim_outside
    assert (outside.start_s, outside.end_s) == (pytest.approx(5.0), pytest.approx(6.005))
    # EMG around e-stim: the switch on at 1.005 s is within needling; the switch off at
    # 6.005 s is not, and is left out.
    (on,) = scores.emg_rms
    assert on["switch"] == "on" and on["t_s"] == pytest.approx(1.005)
    assert on["rms_before"] == pytest.approx(2.0) and on["rms_after"] == pytest.approx(4.0)
    assert scores.emg_switches_outside == 1
    assert scores.phases == [("baseline pain", 0.2, 0.8), ("needling with e-stim", 0.9, 5.0)]
    assert scores.needling == [("needling with e-stim", 0.9, 5.0)]
    (emg,) = [q for q in scores.quality if q.name == "emg.emg"]
    assert (emg.samples, emg.lost, emg.gaps) == (800, 0, 0)
    assert emg.uncertainty_ms is not None and emg.uncertainty_ms < 0.01
