"""Lab Streaming Layer: needlelab's streams as LSL outlets, and the network rules LSL runs under.

LSL is off unless the config says `[lsl] enabled = true` (or `needlelab record --lsl`). By
default liblsl resolves streams with UDP multicast and broadcast on every interface; a session
carries patient data, so needlelab configures liblsl for this machine only (IPv6 off, resolve
scope `machine`, multicast on 127.0.0.1 with TTL 0) through `pylsl.set_config_content()`, before
any other LSL call in the process (`pylsl_module`). Sharing on a LAN is a deliberate config
choice (`share_on_lan = true`) and logs a warning that patient data will be on the network.
Even then, and even on loopback, an outlet's TCP data port listens on all interfaces: that is
liblsl's, and the reason LAN sharing is opt-in.

`LslPublisher` publishes every stream of a session: regular streams as float32 outlets at their
nominal rate, irregular ones (stimulator, caliper) at rate 0, and every event as a JSON string
on a `Markers` outlet; channel labels and units in `<desc>`. Times are the session's, on LSL's
clock (both are the system's monotonic clock; the offset between them is measured once).
"""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import Any

from needlelab.config import LslConfig
from needlelab.events import Event
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
"""liblsl's configuration for this machine only (../shared/reference/formats-and-sync.md).

`KnownPeers = {127.0.0.1}` is ours: on loopback the resolver's "multicast" to 127.0.0.1 is
unicast, and of the outlets of one process only the last bound socket receives it, so another
process (LabRecorder) found one stream of needlelab's. With 127.0.0.1 as a known peer the
resolver also asks every outlet on its own port, still without leaving the machine."""

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
                log.warning(
                    "LSL shares this session's streams on the network: patient data will be "
                    "visible to every machine on the LAN"
                )
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

    def __init__(self, hub: Hub, config: LslConfig, session_id: str) -> None:
        self.pylsl = pylsl_module(config.share_on_lan)
        self.hub = hub
        self.session_id = session_id
        self.offset_s = lsl_clock_offset_s(self.pylsl)
        self.anchor_s = hub.clock.anchor_monotonic_ns / 1e9
        self._outlets: dict[str, Any] = {}
        self._totals: dict[str, int] = {}
        markers = self.pylsl.StreamInfo(
            "needlelab events", "Markers", 1, 0.0, "string", f"needlelab:{session_id}:events"
        )
        self.markers: Any = self.pylsl.StreamOutlet(markers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lsl-publisher", daemon=True)
        hub.subscribe(self._on_event)
        self.pushed = 0

    def lsl_time(self, t_ns: int | float) -> float:
        """A session time (ns) on LSL's clock (s)."""
        return float(t_ns) / 1e9 + self.anchor_s + self.offset_s

    def start(self) -> None:
        """Start publishing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing and close the outlets."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        # Dropping the outlets closes them: no other program can find this session's streams.
        self._outlets.clear()
        self.markers = None

    def _on_event(self, event: Event) -> None:
        # Called on the emitting thread; liblsl's push is thread-safe and does not block.
        markers = self.markers
        if markers is None:  # stopped
            return
        text = event_json(event)
        markers.push_sample([text], self.lsl_time(event.t_ns))

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self.publish_new()

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
            t_ns, values = ring.latest(min(total - seen, ring.capacity))
            self._totals[name] = total
            stamps = t_ns / 1e9 + self.anchor_s + self.offset_s
            self._outlets[name].push_chunk(values.astype("float32").tolist(), stamps.tolist())
            self.pushed += len(t_ns)
