"""Lab Streaming Layer: needlelab's streams as LSL outlets, and the network rules LSL runs under.

LSL is off unless the config says `[lsl] enabled = true` (or `needlelab record --lsl`). By
default liblsl resolves streams with UDP multicast and broadcast on every interface; a session
carries patient data, so needlelab configures liblsl's stream discovery for this machine only
(IPv6 off, resolve scope `machine`, multicast on 127.0.0.1 with TTL 0) through
`pylsl.set_config_content()`, before any other LSL call in the process (`pylsl_module`).

That config cannot keep the streams themselves on this machine: liblsl binds every outlet's TCP
data port and UDP service port to the any-address (0.0.0.0, or :: with IPv6), whatever the config
says (its `[multicast] ListenAddress` applies to the discovery responders only; no option
exists for the others, see `LOOPBACK_CONFIG`). So whenever LSL is on, the publisher measures
this process's listening sockets from /proc once its outlets exist (`listening_sockets`) and
says what it found: one log line naming each socket, and an `lsl.exposed` warning event in the
session file. Sharing on a LAN is the deliberate choice (`share_on_lan = true`: liblsl's own
network settings); then the event records it as deliberate and the line is an acknowledgement.

`LslPublisher` publishes every stream of a session: regular streams as float32 outlets at their
nominal rate, irregular ones (stimulator, caliper) at rate 0, and every event as a JSON string
on a `Markers` outlet; channel labels and units in `<desc>`. Times are the session's, on LSL's
clock (both are the system's monotonic clock; the offset between them is measured once).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from needlelab.clock import ClockSegment, published_times
from needlelab.config import LslConfig
from needlelab.events import ClockPublishedEvent, Event, WarningEvent
from needlelab.hub import Hub
from needlelab.record.reader import event_json
from needlelab.streams import StreamKind, StreamSpec

log = logging.getLogger(__name__)

LOOPBACK_CONFIG = """\
[ports]
IPv6 = disable

[multicast]
ResolveScope = machine
Interfaces = {127.0.0.1}
ListenAddress = 127.0.0.1
TTLOverride = 0

[lab]
KnownPeers = {127.0.0.1}
"""
"""liblsl's configuration for stream discovery on this machine only.

`KnownPeers = {127.0.0.1}` is ours: on loopback the resolver's "multicast" to 127.0.0.1 is
unicast, and of the outlets of one process only the last bound socket receives it, so another
process (LabRecorder) found one stream of needlelab's. With 127.0.0.1 as a known peer the
resolver also asks every outlet on its own port, still without leaving the machine.

What it cannot do: keep the data on this machine. Measured with the bundled liblsl 1.18.0, each
outlet listens on TCP 0.0.0.0 (data), UDP 0.0.0.0 (time and info queries) and UDP
127.0.0.1:16571 (discovery, the only one `ListenAddress` moves). liblsl binds the first two with
asio's `endpoint(protocol, port)`, which is the any-address (liblsl's src/socket_utils.cpp,
`bind_port_in_range_`, as of 1.17.7), and the 1.18.0 library reads no config key that could
change it (its keys: `strings liblsl.so`)."""

LIBLSL_MULTICAST_PORT = 16571
"""liblsl's default `[ports] MulticastPort`, where each outlet's discovery responder listens
(the loopback config keeps it)."""

SETTLE_S = 1.0
"""Outlets appear as devices connect; their sockets are reported once no outlet was added for
this long: one report per burst of new outlets, not one per stream."""

LSL_HINT = (
    "LSL needs pylsl and its liblsl: pip install 'needlelab[lsl]' (pylsl bundles liblsl for "
    "x86-64 Linux with glibc >= 2.35, macOS and Windows; elsewhere install liblsl yourself and "
    "point PYLSL_LIB at it)"
)

_lock = threading.Lock()
_configured: str | None = None  # "loopback" or "lan", once liblsl has been configured


class LslUnavailable(RuntimeError):
    """pylsl or liblsl cannot be loaded here, or LSL was configured differently already."""


def pylsl_module(share_on_lan: bool | None = False) -> ModuleType:
    """pylsl, with liblsl configured before anything else touches it (once per process).

    `share_on_lan` None takes the process's configuration as it is (loopback if none yet)."""
    global _configured
    if share_on_lan is None:
        share_on_lan = _configured == "lan"
    mode = "lan" if share_on_lan else "loopback"
    with _lock:
        try:
            import pylsl
        except (ImportError, OSError, RuntimeError) as exc:
            raise LslUnavailable(f"{LSL_HINT} ({type(exc).__name__}: {exc})") from None
        if _configured is None:
            if share_on_lan:
                log.info("LSL runs with liblsl's own network settings ([lsl] share_on_lan)")
            else:
                pylsl.set_config_content(LOOPBACK_CONFIG)
            _configured = mode
        elif _configured != mode:
            raise LslUnavailable(
                f"LSL is already configured for {_configured} in this process; restart to use "
                f"{mode}"
            )
        module: ModuleType = pylsl
        return module


# -- what this process listens on ----------------------------------------------------------------
@dataclass(frozen=True)
class ListeningSocket:
    """A socket of this process that takes connections or datagrams from others: a TCP socket in
    LISTEN, or a bound UDP socket without a peer (it receives from any sender)."""

    protocol: str  # "TCP" or "UDP"
    address: str  # as bound: 0.0.0.0 and :: are every interface
    port: int
    purpose: str = ""  # what it is for, where known

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach it."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {host}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        """The socket as stored in an event."""
        return {"protocol": self.protocol, "address": self.address, "port": self.port,
                "loopback": self.loopback, "purpose": self.purpose}  # fmt: skip


_TCP_LISTEN = 0x0A  # the kernel's TCP_LISTEN in /proc/net/tcp's `st` column


def _proc_address(text: str) -> tuple[str, int]:
    """An address:port of /proc/net/{tcp,udp}[6]: hex words in the machine's byte order."""
    host, port = text.rsplit(":", 1)
    packed = b"".join(struct.pack("=I", int(host[i : i + 8], 16)) for i in range(0, len(host), 8))
    return str(ipaddress.ip_address(packed)), int(port, 16)


def listening_sockets(proc: Path = Path("/proc")) -> list[ListeningSocket] | None:
    """This process's listening sockets, read from /proc (Linux); None where they cannot be read
    (another platform, no /proc)."""
    if not sys.platform.startswith("linux"):
        return None
    fd_dir = proc / "self" / "fd"
    inodes: set[int] = set()
    try:
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:  # closed since the listing
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        return None
    found: list[ListeningSocket] = []
    for table, protocol in (("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP")):
        try:
            rows = (proc / "self" / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        except OSError:
            return None
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or int(fields[9]) not in inodes:
                continue
            if protocol == "TCP" and int(fields[3], 16) != _TCP_LISTEN:
                continue
            if protocol == "UDP" and _proc_address(fields[2])[1] != 0:
                continue  # connected: it takes datagrams from its peer only
            address, port = _proc_address(fields[1])
            found.append(ListeningSocket(protocol, address, port))
    return sorted(set(found), key=lambda s: (s.protocol, s.port, s.address))


def exposure_warning(
    sockets: list[ListeningSocket] | None, deliberate: bool
) -> tuple[int, WarningEvent | None]:
    """The log level and `lsl.exposed` warning for the listening sockets of a process with LSL
    on (None: they could not be measured); no warning when all of them are on loopback."""
    if sockets is None:
        message = (
            f"LSL is on, and this process's listening sockets cannot be measured on "
            f"{sys.platform} (needlelab reads them from /proc on Linux): liblsl binds each "
            "outlet's TCP data port and UDP service port to every interface, so any machine "
            "that reaches this one can read the session's streams"
        )
        if not deliberate:
            message += "; turn LSL off, or set [lsl] share_on_lan = true if this is meant"
        event = WarningEvent(
            code="lsl.exposed", message=message, source="lsl",
            details={"deliberate": deliberate, "measured": False, "sockets": []},
        )  # fmt: skip
        return (logging.INFO if deliberate else logging.WARNING), event
    named = ", ".join(f"{s} ({s.purpose or 'other'})" for s in sockets)
    beyond = [s for s in sockets if not s.loopback]
    if not beyond:
        return logging.INFO, None
    if deliberate:
        message = (
            f"LSL shares this session on the network as configured ([lsl] share_on_lan = true): "
            f"this process listens on {named}; any machine that reaches "
            f"{'it' if len(beyond) == 1 else 'them'} can read the session's streams"
        )
    else:
        message = (
            f"LSL is on and listens beyond this machine: {named}; any machine that reaches "
            "this one can read the session's streams on those not on loopback (liblsl cannot "
            "bind them to loopback): turn LSL off, firewall these ports, or set [lsl] "
            "share_on_lan = true if this is meant"
        )
    event = WarningEvent(
        code="lsl.exposed", message=message, source="lsl",
        details={"deliberate": deliberate, "measured": True,
                 "sockets": [s.as_dict() for s in sockets]},
    )  # fmt: skip
    return (logging.INFO if deliberate else logging.WARNING), event


def outlet_ports(outlet: Any) -> dict[str, int]:
    """An outlet's ports as liblsl advertises them (v4data_port, v4service_port, v6...)."""
    xml = outlet.get_info().as_xml()
    return {
        key: int(value)
        for key, value in re.findall(r"<(v[46](?:data|service)_port)>(\d+)</", xml)
        if int(value)
    }


def lsl_clock_offset_s(pylsl: ModuleType) -> float:
    """LSL's clock minus the system monotonic clock, in seconds (about 0 on Linux)."""
    best = None
    for _ in range(5):
        before = time.monotonic()
        lsl_now = pylsl.local_clock()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, lsl_now - (before + after) / 2)
    assert best is not None
    return float(best[1])


def stream_info(pylsl: ModuleType, spec: StreamSpec, session_id: str) -> Any:
    """An LSL StreamInfo for a needlelab stream, with channels in `<desc>`."""
    regular = spec.kind is StreamKind.REGULAR
    info = pylsl.StreamInfo(
        spec.name, spec.type, spec.channel_count, spec.nominal_rate_hz if regular else 0.0,
        "float32", f"needlelab:{session_id}:{spec.name}",
    )  # fmt: skip
    channels = info.desc().append_child("channels")
    for label, unit in zip(spec.channels, spec.units, strict=True):
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("unit", unit)
        channel.append_child_value("type", spec.type)
    info.desc().append_child("acquisition").append_child_value("manufacturer", "needlelab")
    return info


class LslPublisher:
    """Publishes a session's streams and events as LSL outlets from its own thread."""

    POLL_S = 0.005
    MARKERS = "needlelab events"

    REFIT_S = 0.5
    """How often a regular stream's live clock model is refitted for the stamps."""
    FIT_POINTS = 20_000
    """Arrivals (since the stream's last gap) the stamps' clock model is fitted to."""

    def __init__(
        self,
        hub: Hub,
        config: LslConfig,
        session_id: str,
        clock_of: Callable[[str, int], ClockSegment | None] | None = None,
    ) -> None:
        self.pylsl = pylsl_module(config.share_on_lan)
        self.hub = hub
        # The recorder's live clock model of a regular stream (the `StreamClock` fit of its
        # arrivals): its samples are stamped with it `delay_s` after they arrive, and each stretch
        # stamped with one model is recorded as a `clock.published` event, which readers apply:
        # the file's times are the stamps LSL recorders got.
        self.clock_of = clock_of
        self.delay_ns = round(config.delay_s * 1e9)
        self._models: dict[str, tuple[float, ClockSegment]] = {}  # stream: (fitted at, model)
        self._pieces: dict[str, ClockPublishedEvent] = {}  # stream: the stretch being stamped
        self._last_stamp: dict[str, tuple[int, int]] = {}  # stream: (last stamp, its index)
        self.session_id = session_id
        self.deliberate = config.share_on_lan
        self.offset_s = lsl_clock_offset_s(self.pylsl)
        self.anchor_s = hub.clock.anchor_monotonic_ns / 1e9
        self._outlets: dict[str, Any] = {}
        self._totals: dict[str, int] = {}
        self._purposes: dict[tuple[str, int], str] = {
            ("UDP", LIBLSL_MULTICAST_PORT): "LSL discovery"
        }
        self._reported: frozenset[tuple[str, str, int]] | None = None
        self._report_due: float | None = None
        markers = self.pylsl.StreamInfo(
            self.MARKERS, "Markers", 1, 0.0, "string", f"needlelab:{session_id}:events"
        )
        self.markers: Any = self.pylsl.StreamOutlet(markers)
        self._learn_ports(self.MARKERS, self.markers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lsl-publisher", daemon=True)
        hub.subscribe(self._on_event)
        self.pushed = 0
        self.report_exposure()  # the markers outlet's sockets, before any device starts

    def _learn_ports(self, stream: str, outlet: Any) -> None:
        for key, port in outlet_ports(outlet).items():
            what = "data" if "data" in key else "time and info queries"
            self._purposes[("TCP" if "data" in key else "UDP", port)] = f"LSL {what}: {stream}"

    def report_exposure(self) -> WarningEvent | None:
        """Measure this process's listening sockets and, if some are new since the last report,
        log one line naming each and record an `lsl.exposed` warning; the warning, if any."""
        sockets = listening_sockets()
        if sockets is not None:
            sockets = [
                ListeningSocket(s.protocol, s.address, s.port,
                                self._purposes.get((s.protocol, s.port), ""))
                for s in sockets
            ]  # fmt: skip
            seen = frozenset((s.protocol, s.address, s.port) for s in sockets)
            if self._reported is not None and seen <= self._reported:
                return None
            self._reported = seen
        elif self._reported is not None:
            return None  # cannot measure: said once
        else:
            self._reported = frozenset()
        level, warning = exposure_warning(sockets, self.deliberate)
        if warning is None:
            assert sockets is not None
            log.log(level, "LSL listens on this machine only: %s", ", ".join(map(str, sockets)))
            return None
        log.log(level, "%s", warning.message)
        stamped = self.hub.emit(warning)
        assert isinstance(stamped, WarningEvent)
        return stamped

    def lsl_time(self, t_ns: int | float) -> float:
        """A session time (ns) on LSL's clock (s)."""
        return float(t_ns) / 1e9 + self.anchor_s + self.offset_s

    def start(self) -> None:
        """Start publishing."""
        self._thread.start()

    def stop(self) -> None:
        """Push the last samples, stop publishing and close the outlets (reporting any sockets
        not reported yet)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        # Only once the thread is gone: two callers of publish_new could both create an outlet
        # for a new stream, or push the same samples twice.
        self.publish_new()
        for stream in list(self._pieces):
            self._record(stream)
        if self._report_due is not None:
            self._report_due = None
            self.report_exposure()
        # Dropping the outlets closes them: no other program can find this session's streams.
        self._outlets.clear()
        self.markers = None

    def _on_event(self, event: Event) -> None:
        # Called on the emitting thread; liblsl's push is thread-safe and does not block.
        markers = self.markers
        if markers is None or isinstance(event, ClockPublishedEvent):  # stopped; its own record
            return
        text = event_json(event)
        markers.push_sample([text], self.lsl_time(event.t_ns))

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self.publish_new()
            due = self._report_due
            if due is not None and time.monotonic() >= due:
                self._report_due = None
                self.report_exposure()

    def publish_new(self) -> None:
        """Push every sample that reached the rings since the last call."""
        for name, spec in self.hub.streams.items():
            ring = self.hub.ring(name)
            total = ring.total
            seen = self._totals.get(name, 0)
            if total == seen:
                continue
            if name not in self._outlets:
                self._outlets[name] = self.pylsl.StreamOutlet(
                    stream_info(self.pylsl, spec, self.session_id), 32, 360
                )
                self._learn_ports(name, self._outlets[name])
                self._report_due = time.monotonic() + SETTLE_S
            index, t_ns, values = ring.latest_indexed(min(total - seen, ring.capacity))
            if spec.kind is StreamKind.REGULAR and self.clock_of is not None:
                if not self._stop.is_set():
                    # Only samples that arrived `delay_s` ago: their model has what came after.
                    late = np.flatnonzero(t_ns > self.hub.clock.now_ns() - self.delay_ns)
                    ready = int(late[0]) if len(late) else len(t_ns)
                    index, t_ns, values = index[:ready], t_ns[:ready], values[:ready]
                model = self._model(name)
                if model is None and not self._stop.is_set():
                    continue  # the first blocks wait (in the ring) for the stream's clock model
                if not len(index):
                    continue
                if model is not None:
                    t_ns = self._stamp(name, model, index)
            self._totals[name] = seen + len(index)
            # Never a step back (arrival times of an unfitted stream can).
            last = self._last_stamp.get(name)
            t_ns = np.maximum.accumulate(
                np.maximum(t_ns, np.iinfo(np.int64).min if last is None else last[0])
            )
            self._last_stamp[name] = (int(t_ns[-1]), int(index[-1]))
            stamps = t_ns / 1e9 + self.anchor_s + self.offset_s
            self._outlets[name].push_chunk(values.astype("float32").tolist(), stamps.tolist())
            self.pushed += len(t_ns)

    def _stamp(self, stream: str, model: ClockSegment, index: np.ndarray) -> np.ndarray:
        """The stamps of samples `index` under `model`, extending the stretch stamped with it
        (or recording the last stretch and starting one from the last stamp)."""
        piece = self._pieces.get(stream)
        same = piece is not None and (piece.x0, piece.offset_ns, piece.period_ns) == (
            model.x0, model.offset_ns, model.period_ns,
        )  # fmt: skip
        if piece is None or not same:
            self._record(stream)
            floor_ns, floor_x = self._last_stamp.get(
                stream, (np.iinfo(np.int64).min // 4, int(index[0]) - 1)
            )
            piece = ClockPublishedEvent(
                stream=stream, x_from=int(index[0]), x_to=int(index[-1]), x0=model.x0,
                offset_ns=model.offset_ns, period_ns=model.period_ns, floor_ns=floor_ns,
                floor_x=floor_x, source="lsl",
            )  # fmt: skip
        self._pieces[stream] = piece.model_copy(update={"x_to": int(index[-1])})
        return published_times(
            index, piece.x0, piece.offset_ns, piece.period_ns, piece.floor_ns, piece.floor_x
        )

    def _record(self, stream: str) -> None:
        """Store the stretch last stamped with one model (readers give its samples those times)."""
        piece = self._pieces.pop(stream, None)
        if piece is not None:
            self.hub.emit(piece)

    def _model(self, stream: str) -> ClockSegment | None:
        """The stream's live clock model, refitted at most every `REFIT_S`."""
        now = time.monotonic()
        cached = self._models.get(stream)
        if cached is not None and now - cached[0] < self.REFIT_S:
            return cached[1]
        assert self.clock_of is not None
        model = self.clock_of(stream, self.FIT_POINTS)
        if model is not None:
            self._models[stream] = (now, model)
            return model
        return cached[1] if cached is not None else None
