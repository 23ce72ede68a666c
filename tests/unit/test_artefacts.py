"""Stimulation-artefact ground truth: pulse trains from settings histories, sub-sample artefacts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from needlelab.events import StimSettings
from needlelab.sim.artefacts import (
    BURST_PULSES,
    add_artefacts,
    add_block_artefacts,
    detect_artefacts,
    match_errors,
    pulse_times,
)

MS = 1_000_000


def settings(**changes: object) -> StimSettings:
    base = {"channel": 1, "frequency_hz": 2.0, "pulse_width_us": 250.0, "intensity_ma": 0.0}
    return StimSettings.model_validate({**base, "output_on": False, **changes})


def test_pulses_follow_output_frequency_and_keep_phase_through_intensity_changes() -> None:
    history = [
        (0, settings()),
        (100 * MS, settings(output_on=True, intensity_ma=5.0, frequency_hz=10.0)),
        (255 * MS, settings(output_on=True, intensity_ma=6.0, frequency_hz=10.0)),  # same clock
        (400 * MS, settings(output_on=True, intensity_ma=6.0, frequency_hz=20.0)),  # new clock
        (500 * MS, settings(output_on=False, intensity_ma=6.0, frequency_hz=20.0)),
        (600 * MS, settings(channel=2, output_on=True, intensity_ma=3.0)),  # another channel
    ]
    t, ma = pulse_times(history, 1, 0, 1000 * MS)
    expected = [100, 200, 300, 400, 450]
    assert (t // MS).tolist() == expected
    assert ma.tolist() == [5.0, 5.0, 6.0, 6.0, 6.0]
    t2, _ = pulse_times(history, 2, 0, 1000 * MS)
    assert (t2 // MS).tolist() == [600]
    window, _ = pulse_times(history, 1, 250 * MS, 420 * MS)
    assert (window // MS).tolist() == [300, 400]


def test_burst_mode_is_a_train_each_period() -> None:
    history = [(0, settings(output_on=True, intensity_ma=4.0, mode="burst"))]
    t, _ = pulse_times(history, 1, 0, 1000 * MS)
    assert len(t) == 2 * BURST_PULSES
    assert (t[:3] // MS).tolist() == [0, 10, 20] and (t[BURST_PULSES] // MS) == 500


def test_zero_intensity_makes_no_pulses() -> None:
    history = [(0, settings(output_on=True, intensity_ma=0.0))]
    assert len(pulse_times(history, 1, 0, 10_000 * MS)[0]) == 0


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9])
def test_artefact_centroid_is_the_pulse_time_to_a_fraction_of_a_sample(fraction: float) -> None:
    period = 500_000.0  # 2 kHz
    n = 400
    signal = np.random.default_rng(1).normal(0, 20, (n, 8))
    pulses = np.array([int((50 + fraction) * period), int((250 + fraction) * period)])
    add_artefacts(signal, 0.0, period, pulses, np.array([1.0, 10.0]))
    times = (np.arange(n) * period).astype(np.int64)
    detected = detect_artefacts(signal, times)
    assert len(detected) == 2
    assert np.abs(detected - pulses).max() < 0.05 * period  # noise moves it a little


def test_match_errors_pairs_each_pulse_with_its_nearest_detection() -> None:
    truth = np.array([0, 100, 200, 300]) * MS
    detected = np.array([1 * MS, 99 * MS, 250 * MS])
    assert match_errors(detected, truth, window_ns=2 * MS).tolist() == [MS, -MS]
    assert match_errors(np.array([5]), truth, window_ns=10).tolist() == [5]
    assert len(match_errors(np.empty(0, np.int64), truth, window_ns=MS)) == 0


def test_artefacts_added_block_by_block_equal_the_whole_stream() -> None:
    """Regression: pulses just before a block lost their recovery swing in that block."""
    period = 500_000.0
    history = [(0, settings(output_on=True, intensity_ma=8.0, frequency_hz=97.3))]
    whole = np.zeros((1000, 2))
    add_block_artefacts(whole, history, 1, 0.0, period)
    blocks = np.zeros((1000, 2))
    for start in range(0, 1000, 10):
        add_block_artefacts(blocks[start : start + 10], history, 1, start * period, period)
    assert np.abs(whole).max() > 1000
    assert np.allclose(blocks, whole)


def test_pulses_window_by_window_equal_the_whole_range() -> None:
    """A window's pulses keep the phase set before it, however long the history (the scan
    starts where the pulse clock was last set, not at the session's start)."""
    rng = np.random.default_rng(5)
    history = []
    t = 0
    for _ in range(400):
        t += int(rng.integers(50, 400)) * MS
        history.append(
            (t, settings(
                channel=int(rng.integers(1, 3)), output_on=bool(rng.random() < 0.8),
                intensity_ma=float(rng.choice([0.0, 2.0, 5.0, 9.0])),
                frequency_hz=float(rng.choice([2.0, 10.0, 80.0])),
                mode=str(rng.choice(["continuous", "burst"])),
            ))
        )  # fmt: skip
    edges = np.linspace(0, t + 1000 * MS, 97).astype(np.int64)
    for channel in (1, 2):
        whole, whole_ma = pulse_times(history, channel, 0, int(edges[-1]))
        parts = [
            pulse_times(history, channel, int(a), int(b)) for a, b in itertools.pairwise(edges)
        ]
        assert len(whole) > 1000
        assert np.array_equal(np.concatenate([p[0] for p in parts]), whole)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), whole_ma)
