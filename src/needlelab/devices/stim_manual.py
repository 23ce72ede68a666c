"""`ManualStimulator`: settings of a stimulator with no data port, entered by the clinician."""

from __future__ import annotations

import queue
import threading
from typing import Any

from needlelab.config import StimManualConfig
from needlelab.devices.base import Device, DeviceState
from needlelab.devices.stim import StimSettingsRecorder
from needlelab.events import StimSettings
from needlelab.hub import Hub
from needlelab.streams import StreamSpec

WAVEFORMS = ("biphasic", "monophasic", "alternating")
"""The waveform names manual entry takes (the console's `wave=`, the monitor's list)."""

MODES = ("continuous", "burst")
"""The mode names manual entry takes (the console's `mode=`, the monitor's list)."""

DEFAULT_SETTINGS = StimSettings(
    channel=1, frequency_hz=2.0, pulse_width_us=250.0, intensity_ma=0.0, output_on=False
)
"""What a channel is assumed to be before the first entry: output off, a common 2 Hz / 250 µs."""


class ManualStimulator(Device):
    """A stimulator whose settings the clinician types or clicks in (CLI console or GUI).

    Each entry is stamped with the session time of the call to :meth:`set` (the key press), then
    recorded on the device thread exactly like a driver reading: a sample of `<name>.ch<k>` and,
    if anything changed, a `stim.settings` event with `origin="manual"`.
    """

    WATCHDOG = False  # silence is normal: the clinician only enters changes

    def __init__(self, config: StimManualConfig, hub: Hub) -> None:
        super().__init__(config, hub)
        self.channels = list(range(1, config.channels + 1))
        self._recorder = StimSettingsRecorder(self, self.channels)
        self._pending: queue.SimpleQueue[tuple[StimSettings, int]] = queue.SimpleQueue()
        # The last *entered* settings per channel. Entries build on these, not on what the device
        # thread has recorded so far, so a second entry typed before the first is processed
        # cannot revert it.
        self._entered: dict[int, StimSettings] = {}
        self._entry_lock = threading.Lock()

    def streams(self) -> list[StreamSpec]:
        return list(self._recorder.specs.values())

    def current(self, channel: int = 1) -> StimSettings:
        """The last entered settings of a channel (defaults before the first entry)."""
        with self._entry_lock:
            return self._entered.get(
                channel, DEFAULT_SETTINGS.model_copy(update={"channel": channel})
            )

    def set(self, channel: int = 1, **changes: Any) -> StimSettings:
        """Enter new settings for a channel; unspecified fields keep their last value.

        Raises `ValueError` (pydantic's ValidationError) for out-of-range values, and for a
        waveform or mode not in `WAVEFORMS` / `MODES` (one line listing the allowed names),
        before anything is recorded. Names are taken in any case.
        """
        if channel not in self.channels:
            raise ValueError(f"{self.name} has channels {self.channels}, not {channel}")
        for field, allowed in (("waveform", WAVEFORMS), ("mode", MODES)):
            if field in changes:
                name = str(changes[field]).strip().lower()
                if name not in allowed:
                    raise ValueError(
                        f"unknown {field} {changes[field]!r}; allowed: {', '.join(allowed)}"
                    )
                changes[field] = name
        with self._entry_lock:  # two entry points (console, GUI) may type at once
            t_ns = self.hub.clock.now_ns()
            base = self._entered.get(channel, DEFAULT_SETTINGS).model_dump()
            base.update(changes, channel=channel)
            settings = StimSettings.model_validate(base)
            self._entered[channel] = settings
            self._pending.put((settings, t_ns))
        return settings

    def _connect(self) -> None:
        self._set_state(DeviceState.STREAMING, "manual entry")

    def _service(self, timeout_s: float) -> None:
        try:
            settings, t_ns = self._pending.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._recorder.update(settings, t_ns, origin="manual")

    def _disconnect(self) -> None:
        # Entries made while stopping are still recorded.
        while True:
            try:
                settings, t_ns = self._pending.get_nowait()
            except queue.Empty:
                return
            self._recorder.update(settings, t_ns, origin="manual")
