"""Property: whatever the keys, taps, pauses, stops and starts, after each step the entries on
the monitor's screen are the entries in the session file (issue 14, point 1). A few sequences in
every run; 500 with `--hypothesis-profile=soak`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.gui.entry_machine import EntryMachine

SOAK = settings.default.max_examples == settings.get_profile("soak").max_examples
SEQUENCES = 500 if SOAK else 6


@pytest.mark.timeout(7200 if SOAK else 300)
def test_the_screen_shows_what_the_file_holds_after_every_step(qapp: Any) -> None:
    run_state_machine_as_test(
        EntryMachine,
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
