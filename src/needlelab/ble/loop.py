"""`BleLoop`: the one asyncio event loop, on one thread, that owns every bleak client.

bleak (and bumble under it) must be driven from a single event loop; device threads and the Qt
thread hand it coroutines with `run()` and wait for the result. Keeping bleak off Qt's thread
avoids the GUI-integration problems bleak's documentation describes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

STOP_POLL_S = 0.05  # how often a waiting caller looks at its stop event
CANCEL_WAIT_S = 1.0  # how long a stopped caller waits for its coroutine to unwind


class OperationStopped(Exception):
    """`BleLoop.run` gave up on a coroutine because its caller's stop event was set; the
    coroutine was cancelled (a scan stopped, a connection attempt withdrawn)."""


class BleLoop:
    """An asyncio loop on a daemon thread; `run(coro)` executes a coroutine there."""

    _shared: BleLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ble-loop", daemon=True)
        self._users = 0
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def acquire(cls) -> BleLoop:
        """The process-wide loop, started on first use; pair with `release()`."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = BleLoop()
            cls._shared._users += 1
            return cls._shared

    def release(self) -> None:
        """Drop one user; the last one shuts the loop down."""
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            if BleLoop._shared is self:
                BleLoop._shared = None
        self.close()

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> T:
        """Run a coroutine on the loop and wait for its result (from any other thread).

        After `timeout_s` the coroutine is cancelled and `TimeoutError` raised. If `stop` is
        set meanwhile, the coroutine is cancelled, given up to `CANCEL_WAIT_S` to unwind (a
        scanner stops scanning, a connection attempt is withdrawn) and `OperationStopped`
        raised: a stop is seen within about `STOP_POLL_S`, whatever the coroutine waits for.
        """
        began, unwound = threading.Event(), threading.Event()
        future = asyncio.run_coroutine_threadsafe(_noting_end(coro, began, unwound), self.loop)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if stop is None else STOP_POLL_S
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                return future.result(wait)
            except concurrent.futures.TimeoutError:
                pass
            except concurrent.futures.CancelledError:  # not by us: the loop is shutting down
                raise OperationStopped("the BLE loop cancelled the operation") from None
            if stop is not None and stop.is_set():
                future.cancel()
                if not unwound.wait(CANCEL_WAIT_S):
                    if not began.is_set():  # cancelled before it ran: no 'never awaited'
                        coro.close()
                    log.debug("a cancelled BLE operation is still unwinding")
                raise OperationStopped("stopped while a BLE operation was under way") from None
            if deadline is not None and time.monotonic() >= deadline:
                future.cancel()
                raise TimeoutError(f"BLE operation did not finish within {timeout_s} s") from None

    def close(self) -> None:
        """Close bumble transports, cancel leftover tasks, stop the loop and join its thread."""
        if not self.loop.is_running():
            return

        async def shutdown() -> None:
            from needlelab.ble.bumble_backend import BumbleCentral

            await BumbleCentral.close_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(shutdown(), timeout_s=5)
        except TimeoutError:  # what is left is dropped with the loop; never an error to callers
            log.warning("the BLE loop's shutdown did not finish within 5 s")
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


async def _noting_end(
    coro: Coroutine[Any, Any, T], began: threading.Event, ended: threading.Event
) -> T:
    """Await `coro`, noting that it began and, however it ended (cancelled too), that it did."""
    began.set()
    try:
        return await coro
    finally:
        ended.set()
