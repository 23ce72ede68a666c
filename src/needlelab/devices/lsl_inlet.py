"""`LslInlet`: record a stream another program publishes on the Lab Streaming Layer.

The stream is resolved by name, type or source_id (on this machine only unless the session
shares LSL on the LAN, see `needlelab.lsl`). A numeric stream with a nominal rate becomes a
regular stream `<device>.lsl` at that rate, whose blocks carry the sender's time stamp of their
last sample as their arrival time, so the session's clock model is fitted to the sender's clock;
one without a rate becomes an irregular stream with one session time per sample; string streams
(markers from a task program) become `marker` events from the device. Times: the sender's LSL
time stamp plus the inlet's `time_correction()` is this machine's LSL clock, which is its
monotonic clock (offset measured once), then the session anchor is taken off. A lost stream
(the sender closed its outlet or went away) is a link loss: a gap, then the stream is resolved
again like any device reconnecting; the samples the sender stamped in between are counted as
lost from its time stamps and the rate (inferred).
"""

from __future__ import annotations

import numpy as np

from needlelab.config import LslInletConfig
from needlelab.devices.base import Device, DeviceError
from needlelab.events import MarkerEvent
from needlelab.hub import Hub
from needlelab.lsl import LslUnavailable, lsl_clock_offset_s, pylsl_module
from needlelab.streams import StreamKind, StreamSpec

RESOLVE_SLICE_S = 1.0
"""How long one resolve attempt waits, so a stop is seen while the stream is being looked for
(liblsl needs about 0.5 s here to hear from every outlet of a process on loopback)."""


def lost_error(pylsl: object) -> type[Exception]:
    """pylsl's `LostError` (at the top level in older pylsl, in `pylsl.util` since 1.17)."""
    error = getattr(pylsl, "LostError", None) or pylsl.util.LostError  # type: ignore[attr-defined]
    assert isinstance(error, type) and issubclass(error, Exception)
    return error


class LslInlet(Device):
    """A device that is another program's LSL outlet."""

    def __init__(self, config: LslInletConfig, hub: Hub) -> None:
        super().__init__(config, hub)
        self.lsl_config = config
        self.spec: StreamSpec | None = None
        self._inlet: object | None = None
        self._strings = False
        self.WATCHDOG = False  # until the stream is known to be regular
        try:
            self.pylsl = pylsl_module(share_on_lan=None)
        except LslUnavailable as exc:
            raise DeviceError(str(exc)) from None
        self.offset_s = lsl_clock_offset_s(self.pylsl)
        self._lost_error = lost_error(self.pylsl)
        self._last_stamp: float | None = None  # sender's stamp of the last sample recorded

    def streams(self) -> list[StreamSpec]:
        return [self.spec] if self.spec is not None else []

    def _connect(self) -> None:
        c = self.lsl_config
        prop, value = next(
            (p, v)
            for p, v in (("name", c.stream_name), ("type", c.stream_type),
                         ("source_id", c.source_id))
            if v
        )  # fmt: skip
        matches: list[object] = []
        waited = 0.0
        while not matches and waited < c.resolve_timeout_s and not self._stop.is_set():
            found = self.pylsl.resolve_byprop(prop, value, 1, RESOLVE_SLICE_S)
            waited += RESOLVE_SLICE_S
            matches = [
                info for info in found
                if (not c.stream_name or info.name() == c.stream_name)
                and (not c.stream_type or info.type() == c.stream_type)
                and (not c.source_id or info.source_id() == c.source_id)
            ]  # fmt: skip
        if not matches:
            raise DeviceError(f"no LSL stream with {prop} {value!r} in {c.resolve_timeout_s:g} s")
        inlet = self.pylsl.StreamInlet(matches[0], max_buflen=360, recover=False)
        try:
            info = inlet.info(timeout=c.resolve_timeout_s)
        except self._lost_error as exc:
            raise DeviceError(f"the LSL stream went away ({exc})") from None
        self._strings = info.channel_format() == self.pylsl.cf_string
        rate = float(info.nominal_srate())
        self.WATCHDOG = rate > 0
        if not self._strings and self.spec is None:
            labels, units = [], []
            channel = info.desc().child("channels").child("channel")
            for k in range(info.channel_count()):
                labels.append(channel.child_value("label") or f"ch{k + 1}")
                units.append(channel.child_value("unit") or "")
                channel = channel.next_sibling()
            self.spec = StreamSpec(
                name=f"{self.name}.lsl",
                type=info.type() or "LSL",
                channels=tuple(labels),
                units=tuple(units),
                kind=StreamKind.REGULAR if rate > 0 else StreamKind.IRREGULAR,
                nominal_rate_hz=rate,
                dtype="float64",
                device=self.name,
            )
            # Known only now: declared on connecting, not when the device starts.
            self.hub.add_stream(self.spec)
        try:
            inlet.time_correction(timeout=c.resolve_timeout_s)  # the first estimate takes a moment
        except self._lost_error as exc:
            raise DeviceError(f"the LSL stream went away ({exc})") from None
        self._inlet = inlet

    def _service(self, timeout_s: float) -> None:
        inlet = self._inlet
        assert inlet is not None
        try:
            samples, stamps = inlet.pull_chunk(timeout=min(timeout_s, 0.2))  # type: ignore[attr-defined]
            if not stamps:
                return
            correction = inlet.time_correction(timeout=1.0)  # type: ignore[attr-defined]
        except self._lost_error as exc:
            raise DeviceError(f"the LSL stream went away ({exc})") from None
        anchor = self.hub.clock.anchor_monotonic_ns
        sender_s = np.asarray(stamps, dtype=np.float64) + correction
        t_ns = ((sender_s - self.offset_s) * 1e9 - anchor).astype(np.int64)
        now = self.hub.clock.now_ns()
        if self._strings:
            for text, t in zip(samples, t_ns, strict=True):
                self._emit_event(
                    MarkerEvent(t_ns=int(t), text=str(text[0])[:2000], source=self.name)
                )
            self._mark_alive(now)
            return
        spec = self.spec
        assert spec is not None
        values = np.asarray(samples, dtype=np.float64)
        if spec.kind is StreamKind.IRREGULAR:
            self._emit_samples(spec, values, now, t_ns)
            return
        # The sender stamped every sample: its stamps, not our arrival, time the block, and a
        # jump in them (an outlet that went away and came back) numbers the samples after it.
        first_index = self._next_index(spec.name)
        if self._last_stamp is not None:
            missed = round((float(sender_s[0]) - self._last_stamp) * spec.nominal_rate_hz) - 1
            first_index += max(0, missed)
        self._last_stamp = float(sender_s[-1])
        self._emit_samples(spec, values, int(t_ns[-1]), first_index=first_index)

    def _disconnect(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            inlet.close_stream()  # type: ignore[attr-defined]
