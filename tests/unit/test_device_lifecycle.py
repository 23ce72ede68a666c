"""The Device base lifecycle over a real loopback TCP link: stall, link loss, reconnect, gaps.

The driver here is the smallest possible one (a line of text = one sample), so what is under test
is the base class: watchdog, backoff, state events, gap events and malformed counting.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.config import DeviceBase
from needlelab.devices.base import Device, DeviceState
from needlelab.events import DeviceStateEvent, GapEvent
from needlelab.hub import Hub
from needlelab.streams import StreamKind, StreamSpec
from needlelab.testing.plugin import wait_until

RATE_HZ = 100.0


class LineDevice(Device):
    """Reads `<number>\\n` lines from a TCP server; anything else is malformed."""

    def __init__(self, config: DeviceBase, hub: Hub, port: int) -> None:
        super().__init__(config, hub)
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.spec = StreamSpec(
            f"{self.name}.v", "Test", ("v",), ("au",), StreamKind.REGULAR, RATE_HZ, device=self.name
        )

    def streams(self) -> list[StreamSpec]:
        return [self.spec]

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        self.sock.settimeout(0.05)
        self.buf = b""

    def _service(self, timeout_s: float) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return
        if not data:
            raise ConnectionError("peer closed")
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        now = self.hub.clock.now_ns()
        good = []
        for line in lines:
            try:
                good.append(float(line))
            except ValueError:
                self._count_malformed(detail=repr(line[:20]))
        if good:
            self._emit_samples(self.spec, np.array(good, np.float32)[:, None], now)

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class LineServer:
    """A loopback server that sends a line every 10 ms; it can go silent or drop the client."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.drop = threading.Event()
        self.accepting = threading.Event()
        self.accepting.set()
        self.garbage: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="line-server")
        self.thread.start()

    def _run(self) -> None:
        conn: socket.socket | None = None
        i = 0
        while not self.stop.is_set():
            if conn is None:
                if not self.accepting.is_set():
                    time.sleep(0.01)
                    continue
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
            if self.drop.is_set():
                conn.close()
                conn = None
                self.drop.clear()
                continue
            if not self.silent.is_set():
                payload = b"".join(self.garbage) + f"{i}\n".encode()
                self.garbage.clear()
                try:
                    conn.sendall(payload)
                except OSError:
                    conn.close()
                    conn = None
                    continue
                i += 1
            time.sleep(0.01)
        if conn is not None:
            conn.close()
        self.listener.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)


@pytest.fixture
def server() -> Iterator[LineServer]:
    srv = LineServer()
    yield srv
    srv.close()


def make(server: LineServer, **overrides: float) -> tuple[Hub, LineDevice, list[object]]:
    hub = Hub(SessionClock())
    events: list[object] = []
    hub.subscribe(events.append)
    config = DeviceBase(
        name="dev",
        stall_timeout_s=overrides.get("stall", 0.5),
        reconnect_min_s=0.05,
        reconnect_max_s=0.4,
    )
    return hub, LineDevice(config, hub, server.port), events


def states(events: list[object]) -> list[str]:
    return [e.state for e in events if isinstance(e, DeviceStateEvent)]


def test_stall_is_detected_then_recovered_with_a_gap(server: LineServer) -> None:
    hub, dev, events = make(server)
    dev.start()
    try:
        wait_until(lambda: dev.stats.samples > 10)
        server.silent.set()
        silent_at = hub.clock.now_ns()
        wait_until(lambda: dev.state is DeviceState.STALLED or "stalled" in states(events), 3.0)
        detected = hub.clock.now_ns() - silent_at
        assert detected < 2.0e9  # the watchdog sees a stall within 2 s (timeout here 0.5 s)
        time.sleep(0.3)
        server.silent.clear()
        wait_until(lambda: any(isinstance(e, GapEvent) for e in events))
    finally:
        dev.stop()
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.stream == "dev.v" and "no data" in gap.reason
    assert 0.5e9 < gap.end_ns - gap.start_ns < 3e9
    assert gap.samples_lost == round((gap.end_ns - gap.start_ns) * RATE_HZ / 1e9) - 1
    seq = states(events)
    assert seq[:2] == ["connecting", "streaming"]
    assert seq.index("stalled") < seq.index("reconnecting") < len(seq) - 2
    assert seq[-2:] == ["streaming", "closed"]
    assert dev.stats.reconnects >= 1


def test_link_loss_reconnects_with_backoff(server: LineServer) -> None:
    _hub, dev, events = make(server, stall=5.0)
    dev.start()
    try:
        wait_until(lambda: dev.stats.samples > 5)
        server.accepting.clear()  # refuse reconnects for a while: backoff must grow
        server.drop.set()
        wait_until(lambda: dev.state is DeviceState.RECONNECTING)
        time.sleep(0.8)
        before = dev.stats.samples
        server.accepting.set()
        wait_until(lambda: dev.stats.samples > before + 5)
    finally:
        dev.stop()
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert len(gaps) == 1 and "link lost" in gaps[0].reason
    assert dev.state is DeviceState.CLOSED
    assert states(events)[-1] == "closed"


def test_malformed_input_is_counted_never_fatal(server: LineServer) -> None:
    _hub, dev, _events = make(server)
    dev.start()
    try:
        wait_until(lambda: dev.stats.samples > 3)
        server.garbage.extend([b"\x00\xffjunk\n", b"12abc\n", b"\n"])
        wait_until(lambda: dev.stats.malformed == 3)
        before = dev.stats.samples
        wait_until(lambda: dev.stats.samples > before + 3)
    finally:
        dev.stop()
    assert dev.stats.malformed == 3
    assert dev.state is DeviceState.CLOSED


def test_outage_open_at_stop_is_closed_with_a_gap(server: LineServer) -> None:
    hub, dev, events = make(server, stall=0.3)
    dev.start()
    wait_until(lambda: dev.stats.samples > 3)
    server.silent.set()
    wait_until(lambda: "stalled" in states(events))
    dev.stop()
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert len(gaps) == 1
    assert gaps[0].end_ns <= hub.clock.now_ns()
