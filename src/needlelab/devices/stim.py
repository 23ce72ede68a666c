"""What every stimulator source shares: its stream layout and change detection."""

from __future__ import annotations

import numpy as np

from needlelab.devices.base import Device
from needlelab.events import StimSettings, StimSettingsEvent
from needlelab.streams import StreamKind, StreamSpec

STIM_CHANNELS = ("frequency_hz", "pulse_width_us", "intensity_ma", "output_on")
STIM_UNITS = ("Hz", "us", "mA", "bool")


def stim_stream_spec(device: str, channel: int, latency_ns: int = 0) -> StreamSpec:
    """The irregular numeric stream of one stimulator channel's settings, `<device>.ch<k>`."""
    return StreamSpec(
        name=f"{device}.ch{channel}",
        type="Stim",
        channels=STIM_CHANNELS,
        units=STIM_UNITS,
        kind=StreamKind.IRREGULAR,
        dtype="float32",
        device=device,
        latency_ns=latency_ns,
    )


class StimSettingsRecorder:
    """Turns settings readings of a stimulator into samples and `stim.settings` change events.

    Every reading becomes a sample of the channel's stream (so the settings trace is continuous
    and a stall is visible); a `stim.settings` event with the full snapshot is recorded only when
    a setting differs from the last reading of that channel.
    """

    def __init__(self, device: Device, channels: list[int], latency_ns: int = 0) -> None:
        self.device = device
        self.specs = {ch: stim_stream_spec(device.name, ch, latency_ns) for ch in channels}
        self.current: dict[int, StimSettings] = {}
        self.ignored = 0  # readings of channels not configured for recording

    def update(self, settings: StimSettings, t_host_ns: int, origin: str = "driver") -> bool:
        """Record a reading; returns True if it changed the channel's settings."""
        spec = self.specs.get(settings.channel)
        if spec is None:  # a channel this session does not record
            self.ignored += 1
            return False
        t_ns = t_host_ns - spec.latency_ns
        row = np.array(
            [
                [
                    settings.frequency_hz,
                    settings.pulse_width_us,
                    settings.intensity_ma,
                    float(settings.output_on),
                ]
            ],
            dtype=np.float32,
        )
        self.device._emit_samples(spec, row, t_host_ns, np.array([t_ns], dtype=np.int64))
        if self.current.get(settings.channel) == settings:
            return False
        self.current[settings.channel] = settings
        self.device._emit_event(
            StimSettingsEvent(
                t_ns=t_ns, settings=settings, origin="manual" if origin == "manual" else "driver"
            )
        )
        return True
