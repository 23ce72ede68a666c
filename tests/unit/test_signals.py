"""SIGTERM and SIGINT become an event through a pipe, never a lock taken in a handler."""

from __future__ import annotations

import os
import signal
import threading
import time

from needlelab.signals import SignalStop


def test_signals_set_the_event_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stops = SignalStop().install()
    try:
        assert not stops.event.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.event.wait(2.0)
    finally:
        stops.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_storm_of_signals_while_the_main_thread_waits_never_hangs() -> None:
    # The old handler called Event.set() and could deadlock inside Event.wait on the main thread.
    stops = SignalStop().install()
    pid = os.getpid()

    def storm() -> None:
        for _ in range(300):
            os.kill(pid, signal.SIGINT)
            time.sleep(0.0005)

    sender = threading.Thread(target=storm)
    try:
        sender.start()
        deadline = time.monotonic() + 5
        while sender.is_alive() and time.monotonic() < deadline:
            stops.event.wait(0.0001)
            stops.event.clear()
        sender.join(5)
        assert not sender.is_alive()
    finally:
        stops.restore()
