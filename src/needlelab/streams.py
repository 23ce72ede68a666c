"""Stream specifications and data chunks: what flows from devices through the hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt


class StreamKind(StrEnum):
    """How a stream's samples are spaced in time."""

    REGULAR = "regular"  # nominal sample rate; per-sample times come from a clock model
    IRREGULAR = "irregular"  # every sample carries its own time (settings, caliper readings)


if TYPE_CHECKING:
    from needlelab.config import LatencyFloor


@dataclass(frozen=True)
class StreamSpec:
    """What a stream is: its name, channels, units and sampling.

    `name` is unique in a session (`<device>.<stream>`, e.g. `stim.settings`). `dtype` is the numpy
    dtype of the stored values; every channel shares it.
    """

    name: str
    type: str  # content type, as in XDF/LSL: "EMG", "Stim", "Caliper", ...
    channels: tuple[str, ...]
    units: tuple[str, ...]
    kind: StreamKind = StreamKind.REGULAR
    nominal_rate_hz: float = 0.0
    dtype: str = "float32"
    device: str = ""
    # Host arrival latency known from the profile, subtracted from arrival times (irregular).
    latency_ns: int = 0
    latency_floor: LatencyFloor = "least"  # which floor `latency_ns` is above

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.units):
            raise ValueError(
                f"stream {self.name}: {len(self.channels)} channels but {len(self.units)} units"
            )
        if self.kind is StreamKind.REGULAR and self.nominal_rate_hz <= 0:
            raise ValueError(f"stream {self.name}: a regular stream needs nominal_rate_hz > 0")
        np.dtype(self.dtype)  # raises TypeError on a bad dtype

    @property
    def channel_count(self) -> int:
        """Number of channels."""
        return len(self.channels)


@dataclass(frozen=True)
class Chunk:
    """A block of samples from one stream, as it arrived.

    - `values` has shape (n, channel_count) and the stream's dtype.
    - `t_host_ns` is the session time at which the block arrived on the host (the raw clock fact).
    - `first_index` is the stream-wide index of the first sample (counts every sample ever produced,
      so a jump in index is a known loss).
    - `t_ns` are per-sample session times: required for irregular streams, optional for regular ones
      (whose times are derived from the clock model and the raw block times when read back).
    - `device_counter` / `device_t_us` keep the device's own sequence counter and clock, if any.
    """

    stream: str
    values: npt.NDArray[np.generic]
    t_host_ns: int
    first_index: int
    t_ns: npt.NDArray[np.int64] | None = None
    device_counter: int | None = None
    device_t_us: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"chunk values must be 2-D (n, channels), got {self.values.shape}")
        if self.t_ns is not None and self.t_ns.shape != (self.values.shape[0],):
            raise ValueError("chunk t_ns must have one time per sample")

    @property
    def n(self) -> int:
        """Number of samples in the block."""
        return int(self.values.shape[0])
