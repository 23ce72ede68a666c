"""`StimulatorDriver`: reads a stimulator's settings over a serial link, never changes them."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

import serial

from needlelab.config import StimSerialConfig
from needlelab.devices.base import Device, DeviceError
from needlelab.devices.codecs import StimProtocol, wire_read_error
from needlelab.devices.stim import StimSettingsRecorder
from needlelab.events import DeviceInfoEvent
from needlelab.hub import Hub
from needlelab.profiles import Query, StimulatorProfile, read_profile
from needlelab.streams import StreamSpec

log = logging.getLogger(__name__)


class ReadOnlyViolation(RuntimeError):
    """Something tried to send a stimulator bytes that are not a read of its protocol family, or
    not one of its profile's queries."""


class StimulatorDriver(Device):
    """A stimulator (or a bridge) that reports its settings over serial, per a driver profile.

    The port is opened with `serial.serial_for_url`, so a device path, a pseudo-terminal,
    `socket://127.0.0.1:PORT`, `loop://` and `spy://` all work; DTR and RTS are set as the
    profile says before it opens. The driver sends the profile's connect queries, then its poll
    queries on their schedule, and records every settings reply or unsolicited change message.
    Every write goes through `_send`, which refuses any bytes that do not decode as exactly one
    read of the profile's protocol family, or that are not one of the profile's encoded queries:
    needlelab never changes a stimulator's output. On every connect a `device.info` event
    records the profile's content hash, the exact bytes allowed and the control lines.
    """

    RECOVERABLE = (DeviceError, OSError, serial.SerialException)

    def __init__(self, config: StimSerialConfig, hub: Hub) -> None:
        super().__init__(config, hub)
        self.stim_config = config
        self.profile, self.profile_file = read_profile(config.profile, StimulatorProfile)
        self.protocol = StimProtocol(self.profile)
        self.channels = list(config.channels)
        self.recorder = StimSettingsRecorder(self, self.channels, self.profile.transport.latency_ns)
        self.identity: dict[str, Any] = {}
        self._identity_recorded: dict[str, Any] | None = None
        # In the order they are sent: what the device.info event lists.
        allowed = [
            self.protocol.encode_query(q, ch)
            for q in self.profile.queries
            for ch in (self.channels if q.per_channel else [self.channels[0]])
        ]
        for data in allowed:  # the profile loader refused these already; never trust one place
            self._check_read(data)
        self._allowed_list = list(dict.fromkeys(allowed))
        self._allowed_writes = frozenset(allowed)
        self._port: Any = None
        t = self.profile.transport
        bits = 1 + t.bytesize + (t.parity != "N") + t.stopbits  # start, data, parity, stop
        self._byte_ns = bits * 1e9 / t.baudrate  # one byte's time on the line
        self._last_message_ns = -(2**62)  # host time given to the last message
        self._last_read_ns = -(2**62)  # when the last read that returned bytes returned
        self._next_poll: dict[str, float] = {}
        self.bytes_written = 0

    def streams(self) -> list[StreamSpec]:
        return list(self.recorder.specs.values())

    def device_info(self) -> dict[str, Any]:
        """What the `device.info` event of a connect says: the profile by name and content, the
        exact bytes the driver may write (hex) and the control lines it sets."""
        t = self.profile.transport
        return {
            "profile": self.profile.profile,
            "profile_path": str(self.profile_file.path),
            "profile_sha256": self.profile_file.sha256,
            "family": t.framing.type,
            "allowed_writes_hex": [data.hex() for data in self._allowed_list],
            "dtr": t.dtr,
            "rts": t.rts,
            "port": self.stim_config.port,
        }

    # -- the only way out --------------------------------------------------------------------------
    def _check_read(self, data: bytes) -> None:
        """Refuse bytes that are not exactly one read of the profile's protocol family."""
        why = wire_read_error(self.profile.transport.framing, data)
        if why is not None:
            raise ReadOnlyViolation(
                f"{self.name}: refusing to send {data!r}: {why} "
                f"({self.profile.transport.framing.type} family)"
            )

    def _send(self, data: bytes) -> None:
        """Write bytes that are a read of the family AND one of the profile's queries, or nothing.

        Two checks, either of which alone keeps writes out: the family's read form, decoded from
        the bytes themselves, and the exact byte strings of the profile's queries.
        """
        self._check_read(data)
        if data not in self._allowed_writes:
            raise ReadOnlyViolation(
                f"{self.name}: refusing to send {data!r}: not a read-only "
                f"query of profile {self.profile.profile}"
            )
        if self._port is None:
            raise DeviceError("port not open")
        self._port.write(data)
        self.bytes_written += len(data)

    def _send_query(self, query: Query) -> None:
        for ch in self.channels if query.per_channel else [self.channels[0]]:
            self._send(self.protocol.encode_query(query, ch))

    # -- hooks -----------------------------------------------------------------------------------
    def _connect(self) -> None:
        url = self.stim_config.port
        if url is None:
            raise DeviceError("no port configured")
        t = self.profile.transport
        try:
            # Not opened yet: pyserial would otherwise raise DTR and RTS as it opens.
            self._port = serial.serial_for_url(
                url,
                do_not_open=True,
                baudrate=t.baudrate,
                bytesize=t.bytesize,
                parity=t.parity,
                stopbits=t.stopbits,
                timeout=0.05,
                write_timeout=1.0,
            )
        except ValueError as exc:  # pyserial's answer to a malformed URL
            raise DeviceError(f"bad port {url!r}: {exc}") from None
        try:
            self._port.dtr = t.dtr
            self._port.rts = t.rts
            self._port.open()
            self._emit_event(DeviceInfoEvent(info=self.device_info()))
            self.protocol.codec.reset()
            for query in self.profile.queries:
                if query.when == "connect":
                    self._send_query(query)
        except BaseException:
            self._disconnect()  # a half-opened port (and a spy:// log file) must not leak
            raise
        now = time.monotonic()
        self._next_poll = {q.name: now for q in self.profile.queries if q.when == "poll"}

    def _local_link(self) -> bool:
        # A device path (a pty, /dev/ttyUSB0, COM3) or a loopback socket: a failed open is free.
        return port_is_local(self.stim_config.port or "")

    def _probe(self) -> bool | None:
        # A device path is back when it exists again (a pty's link is made atomically).
        port = self.stim_config.port or ""
        return os.path.exists(port) if port.startswith("/") else None

    def _poll_period_s(self, query: Query) -> float:
        ms = self.stim_config.poll_interval_ms or query.every_ms or 1000
        return ms / 1000.0

    def _service(self, timeout_s: float) -> None:
        port = self._port
        if port is None:
            raise DeviceError("port not open")
        now = time.monotonic()
        for query in self.profile.queries:
            due = self._next_poll.get(query.name)
            if due is not None and now >= due:
                self._send_query(query)
                # Keep the schedule on its grid, but never queue up missed polls.
                self._next_poll[query.name] = max(due + self._poll_period_s(query), now)
        if not port.in_waiting:
            # Wait for bytes only until the next poll is due: a longer wait (the port's own
            # timeout) sent each poll late, two at once, and left the unit unasked between.
            due = min(self._next_poll.values(), default=math.inf)
            wait = round(min(timeout_s, max(0.0, due - time.monotonic())), 4)
            if port.timeout != wait:
                port.timeout = wait
        data = port.read(port.in_waiting or 1)
        if not data:
            return
        t_read_ns = self.hub.clock.now_ns()
        previous_read_ns, self._last_read_ns = self._last_read_ns, t_read_ns
        messages, malformed = self.protocol.decode(data)
        if malformed:
            resyncs = self.protocol.take_resyncs()
            self._count_malformed(malformed, f"{malformed} in {data[:40]!r}", resyncs)
        for message in messages:
            # Messages of one read did not arrive at once: each ended `wire_end` bytes into
            # it, and the bytes after it took their time on the line. None came before the
            # previous read returned (it took all that was there), which bounds a link faster
            # than its baud rate (a pty, USB CDC); times stay strictly increasing.
            behind_ns = round((len(data) - message.wire_end) * self._byte_ns)
            t_host_ns = max(t_read_ns - behind_ns, previous_read_ns, self._last_message_ns + 1)
            self._last_message_ns = t_host_ns
            if message.kind == "identity":
                self.identity = message.fields
                self._mark_alive(t_host_ns)
                if message.fields != self._identity_recorded:  # once, and again if it changes
                    self._identity_recorded = message.fields
                    self._emit_event(DeviceInfoEvent(info={"identity": message.fields}))
            else:
                self.recorder.update(message.settings(), t_host_ns)

    def _disconnect(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        # pyserial's socket:// close() skips socket.close() when shutdown() fails, which it does
        # once the peer has gone, and spy://...?file=X never closes X: close both ourselves.
        sock = getattr(port, "_socket", None)
        spy_output = getattr(getattr(port, "formatter", None), "output", None)
        try:
            port.close()
        except (OSError, serial.SerialException) as exc:
            log.debug("closing %s: %s", self.name, exc)
        if sock is not None:
            sock.close()
        if spy_output is not None and spy_output not in (sys.stderr, sys.stdout):
            spy_output.close()


def port_is_local(url: str) -> bool:
    """Whether a pyserial port is on this machine: a device path, `loop://`, or a socket or
    RFC 2217 server on the loopback address (`spy://` as the port it wraps)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return True
    if scheme == "loop":
        return True
    if scheme == "spy":
        return port_is_local(rest.split("?", 1)[0])
    host = rest.split("?", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")
