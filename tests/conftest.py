"""Suite-wide guards: leaked threads fail the test that leaked them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import settings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Fuzzing: a few hundred cases per property in everyday runs; `--hypothesis-profile=soak` runs
# ten thousand each (README, "Reliability and performance").
settings.register_profile("everyday", max_examples=300, deadline=None)
settings.register_profile("soak", max_examples=10_000, deadline=None)
settings.load_profile("everyday")


def _live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (devices, writers, simulators must be stopped)."""
    before = _live_threads()
    yield
    deadline = time.monotonic() + 2.0
    leaked = _live_threads() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = _live_threads() - before
    if leaked:
        pytest.fail(f"test leaked threads: {sorted(t.name for t in leaked)}")
