"""Two-point discrimination staircases against simulated observers of known threshold."""

from __future__ import annotations

import pytest

from needlelab.clinic.tpd import SimulatedObserver, Staircase, TpdSettings


def run(settings: TpdSettings, observer: SimulatedObserver, seed: int) -> Staircase:
    track = Staircase(settings, "pre L3 R vertical", seed=seed)
    while not track.done:
        track.answer(observer.respond(track.next_trial()))
    return track


@pytest.mark.parametrize("threshold", [22.0, 38.0, 47.0, 61.0])
@pytest.mark.parametrize("seed", range(5))
def test_the_staircase_converges_to_the_observers_threshold_within_one_step(
    threshold: float, seed: int
) -> None:
    settings = TpdSettings(reversals=10, threshold_reversals=8, max_trials=120)
    track = run(settings, SimulatedObserver(threshold, spread_mm=1.5, seed=100 + seed), seed)
    estimate = track.threshold_mm()
    assert estimate is not None and len(track.reversal_mm) == 10
    assert abs(estimate - threshold) <= settings.steps_mm[-1]


def test_catch_trials_come_at_the_configured_rate_and_never_move_the_track() -> None:
    settings = TpdSettings(catch_rate=0.25, max_trials=80, reversals=40, threshold_reversals=1)
    track = Staircase(settings, "t", seed=3)
    observer = SimulatedObserver(40.0, false_alarm=0.5, seed=1)
    catch_numbers = []
    while not track.done:
        before = track.distance_mm
        trial = track.next_trial()
        assert track.next_trial() is trial  # asked again until answered
        _t, _correct, reversal = track.answer(observer.respond(trial))
        if trial.points == 1:
            catch_numbers.append(trial.number)
            assert track.distance_mm == before and not reversal
    assert track.trials == 80
    # Exactly one catch trial in every block of 4 trials, somewhere in the block.
    assert [(n - 1) // 4 for n in catch_numbers] == list(range(20))
    assert track.catch_trials == 20 and track.false_alarm_rate() == track.false_alarms / 20
    assert 0 < track.false_alarms < 20


def test_steps_shrink_after_the_first_reversal_and_stay_in_range() -> None:
    settings = TpdSettings(start_mm=20, steps_mm=[8, 4, 2], min_mm=5, max_mm=30, catch_rate=0)
    track = Staircase(settings, "t")
    moves = []
    for answer in ["two", "two", "two", "two", "one", "one", "one", "two", "two"]:
        trial, _correct, reversal = track.answer(answer)  # type: ignore[arg-type]
        moves.append((trial.distance_mm, trial.step_mm, reversal))
    assert moves == [
        (20, 8, False), (20, 8, False),  # two "two": down by 8
        (12, 8, False), (12, 8, False),  # down by 8 to 4, held at min_mm 5
        (5, 8, True),  # "one" after going down: a reversal, up by 8; the step is now 4
        (13, 4, False), (17, 4, False),
        (21, 4, False), (21, 4, True),  # two "two" after going up: a reversal, down by 4
    ]  # fmt: skip
    assert track.reversal_mm == [5, 21] and track.distance_mm == 17 and track.step_mm == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="start_mm"):
        TpdSettings(start_mm=200, max_mm=120)
    with pytest.raises(ValueError, match="threshold_reversals"):
        TpdSettings(reversals=4, threshold_reversals=6)
