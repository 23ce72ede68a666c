"""The preview before Start: every device connected and shown (health, traces), nothing
recorded.

A preview's devices write to a hub of their own whose record queue is drained and dropped, so
"connected but not recording" leaves no file and no trace in one: the session file is created
at Start and holds the recording only. At Start the preview's devices let go and the session's
connect to the same simulators or hardware (what the preview showed is what is then checked
again, in the file: each connection's `device.info` and `device.state` events).
"""

from __future__ import annotations

import contextlib
import queue
import threading

from needlelab.devices import Device, create_device
from needlelab.devices.stim_manual import ManualStimulator
from needlelab.hub import Hub
from needlelab.session import Session


class Preview:
    """The session's devices, connected before the recording, on a hub nothing records."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.hub = Hub(session.clock, ring_seconds=session.hub.ring_seconds)
        self.devices: dict[str, Device] = {}
        self.error: str | None = None  # why it could not connect, for the banner
        self._drain: threading.Thread | None = None

    def start(self) -> None:
        """Start the session's simulators (kept for the recording) and connect every device
        that has something to check (not manual entry: it has no link)."""
        self._drain = threading.Thread(target=self._drop, name="preview-drain", daemon=True)
        self._drain.start()
        try:
            endpoints = self.session.start_simulators()
            for config in self.session.config.devices:
                if config.name in endpoints:
                    config = config.model_copy(update=endpoints[config.name])
                device = create_device(config, self.hub)
                if isinstance(device, ManualStimulator):
                    continue
                self.devices[device.name] = device
                device.start()
        except Exception as exc:  # shown; Start will say again what fails
            self.error = f"preview: cannot connect the devices: {exc}"

    def stop(self) -> None:
        """Disconnect the preview's devices (the simulators stay for the recording)."""
        for device in self.devices.values():
            device.stop()
        self.hub.close()
        if self._drain is not None:
            self._drain.join(5.0)
            self._drain = None

    def _drop(self) -> None:
        """Take everything the preview's devices queue for a recorder, and keep none of it."""
        while True:
            with contextlib.suppress(queue.Empty, TimeoutError):
                if self.hub.record_queue.get(timeout=0.5) is None:
                    return
