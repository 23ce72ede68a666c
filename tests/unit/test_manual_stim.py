"""Manual stimulator entry: timestamped at the key press, recorded like a driver reading."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from needlelab.clock import SessionClock
from needlelab.config import StimManualConfig
from needlelab.console import CommandError, parse_stim_args
from needlelab.devices.stim_manual import ManualStimulator
from needlelab.events import StimSettingsEvent
from needlelab.hub import Hub
from needlelab.testing.plugin import wait_until


def test_entries_become_samples_and_change_events() -> None:
    hub = Hub(SessionClock())
    events: list[object] = []
    hub.subscribe(events.append)
    stim = ManualStimulator(StimManualConfig(kind="stim_manual", name="manual", channels=2), hub)
    stim.start()
    try:
        t_before = hub.clock.now_ns()
        first = stim.set(1, intensity_ma=5.0, output_on=True)
        t_after = hub.clock.now_ns()
        stim.set(1, intensity_ma=5.0, output_on=True)  # same again: a sample, no change event
        stim.set(2, frequency_hz=100.0)
        wait_until(lambda: stim.stats.samples == 3)
        with pytest.raises(ValidationError):
            stim.set(1, intensity_ma=-3)
        with pytest.raises(ValueError, match="channels"):
            stim.set(3, intensity_ma=1)
    finally:
        stim.stop()
    changes = [e for e in events if isinstance(e, StimSettingsEvent)]
    assert [
        (e.settings.channel, e.settings.intensity_ma, e.settings.frequency_hz) for e in changes
    ] == [(1, 5.0, 2.0), (2, 0.0, 100.0)]
    assert all(e.origin == "manual" and e.source == "manual" for e in changes)
    assert t_before <= changes[0].t_ns <= t_after  # stamped at the call, not when processed
    assert changes[0].settings == first
    _t, v = hub.ring("manual.ch1").latest()
    assert v[:, 2].tolist() == [5.0, 5.0] and v[:, 3].tolist() == [1.0, 1.0]
    assert stim.stats.state.value == "closed"


def test_manual_device_never_stalls() -> None:
    hub = Hub(SessionClock())
    config = StimManualConfig(kind="stim_manual", name="manual", stall_timeout_s=0.2)
    stim = ManualStimulator(config, hub)
    stim.start()
    time.sleep(0.5)
    state = stim.state.value
    stim.stop()
    assert state == "streaming"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["ch=2", "ma=12.5", "on"], (None, 2, {"intensity_ma": 12.5, "output_on": True})),
        (
            ["unit2", "freq=100", "pw=250", "off"],
            ("unit2", 1, {"frequency_hz": 100.0, "pulse_width_us": 250.0, "output_on": False}),
        ),
        (["wave=monophasic", "mode=burst"], (None, 1, {"waveform": "monophasic", "mode": "burst"})),
    ],
)
def test_console_stim_arguments(words: list[str], expected: object) -> None:
    assert parse_stim_args(words) == expected


@pytest.mark.parametrize("words", [["ma=lots"], ["volts=3"], ["ch=x", "ma=1"], [], ["a", "b"]])
def test_console_stim_arguments_rejected(words: list[str]) -> None:
    with pytest.raises(CommandError):
        parse_stim_args(words)


def test_quick_successive_entries_build_on_each_other() -> None:
    """Two entries typed faster than the device thread records: the second keeps the first's.

    Regression: `set()` used to start from the last *recorded* settings, so a second entry made
    before the first was processed silently reverted the first one's fields.
    """
    hub = Hub(SessionClock())
    stim = ManualStimulator(StimManualConfig(kind="stim_manual", name="manual"), hub)
    # Not started: nothing is processed between the calls, the worst case of the race.
    stim.set(1, intensity_ma=7.5)
    second = stim.set(1, output_on=True)
    assert (second.intensity_ma, second.output_on) == (7.5, True)
    assert stim.current(1) == second
    stim.start()
    try:
        wait_until(lambda: stim.stats.samples == 2)
    finally:
        stim.stop()
    _t, v = hub.ring("manual.ch1").latest()
    assert v[:, 2].tolist() == [7.5, 7.5] and v[:, 3].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"waveform": "triangle"}, "unknown waveform 'triangle'; allowed: biphasic, monophasic"),
        ({"mode": "zigzag"}, "unknown mode 'zigzag'; allowed: continuous, burst"),
        ({"intensity_ma": 3.0, "waveform": "sine"}, "unknown waveform 'sine'"),
    ],
)
def test_unknown_waveform_or_mode_is_refused_with_the_allowed_names(
    change: dict[str, object], said: str
) -> None:
    hub = Hub(SessionClock())
    events: list[object] = []
    hub.subscribe(events.append)
    stim = ManualStimulator(StimManualConfig(kind="stim_manual", name="manual"), hub)
    stim.start()
    try:
        with pytest.raises(ValueError, match="allowed") as info:
            stim.set(1, **change)
        stim.set(1, intensity_ma=1.0)  # the next good entry is recorded as usual
        wait_until(lambda: stim.stats.samples == 1)
    finally:
        stim.stop()
    assert said in str(info.value) and "\n" not in str(info.value)
    (recorded,) = [e for e in events if isinstance(e, StimSettingsEvent)]
    assert (recorded.settings.waveform, recorded.settings.mode) == ("biphasic", "continuous")
    assert recorded.settings.intensity_ma == 1.0  # nothing of the refused entry went in


def test_known_names_are_taken_in_any_case() -> None:
    hub = Hub(SessionClock())
    stim = ManualStimulator(StimManualConfig(kind="stim_manual", name="manual"), hub)
    settings = stim.set(1, waveform="Monophasic", mode="BURST")
    assert (settings.waveform, settings.mode) == ("monophasic", "burst")
