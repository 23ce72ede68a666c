"""`BleLoop`: the one asyncio event loop, on one thread, that owns every bleak client.

bleak (and bumble under it) must be driven from a single event loop; device threads and the Qt
thread hand it coroutines with `run()` and wait for the result. Keeping bleak off Qt's thread
avoids the GUI-integration problems bleak's documentation describes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (from any other thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
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
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()
