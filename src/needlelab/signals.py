"""SIGINT and SIGTERM as a `threading.Event`, without calling into locks from a signal handler.

Python runs a signal handler in the main thread between two bytecodes, which can be inside
`Event.wait` while it holds the event's internal lock; a handler that calls `Event.set` there
deadlocks the process (seen once as a recorder that would not stop on SIGTERM). So the handler
only writes a byte to a pipe, and a small thread reads it and sets the event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """`event` is set when SIGINT or SIGTERM arrives, from `install()` until `restore()`."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._watch, name="signals", daemon=True)

    def install(self) -> SignalStop:
        """Catch the signals (call from the main thread)."""
        self._thread.start()
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, _sig: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the event is being set anyway
            os.write(self._write, b"\0")

    def _watch(self) -> None:
        while True:
            byte = os.read(self._read, 1)
            if byte != b"\0":  # b"\1" from restore(), or the pipe closed
                return
            self.event.set()

    def restore(self) -> None:
        """Put the previous handlers back and end the watcher."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        with contextlib.suppress(OSError):
            os.write(self._write, b"\1")
        self._thread.join(1)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
