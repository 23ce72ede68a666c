"""A simulated stimulator unit served on a pseudo-terminal or loopback TCP.

The unit's settings follow a clinical (or seeded random) pattern; it answers its profile's
queries, sends unsolicited change messages, and can inject faults: garbage bytes, truncated
messages, duplicated messages, a stall (silent but connected) and a disconnect (the port goes
away for a while). Every message it sends is noted by kind in `wire` (`WireLog`). It logs every
byte it receives, so tests can prove the driver only ever sent read-only queries.

It is a unit that would obey: it carries out its protocol family's real write commands (set a
channel's parameters, switch an output, stop all; drivers/README.md, "Write commands"), and
notes every command that is not a read in `writes()` and in the process-wide
`writes_received()`, which needlelab's pytest plugin checks after every test: a write that
reaches a simulated unit fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import select
import socket
import struct
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TextIO

from pydantic import ValidationError

from needlelab.config import FaultSpec, StimSimulatorConfig
from needlelab.devices.codecs import StimProtocol
from needlelab.events import StimSettings
from needlelab.profiles import FieldRule, LineFraming, Message, StimulatorProfile, load_stim_profile
from needlelab.sim.faults import FaultSchedule, WireLog, garbage_pieces, truncated

MAX_PENDING_BYTES = 8 << 20  # what a unit buffers for a link nobody reads; beyond it, drop
STOP_FLUSH_S = 0.5  # how long stop() waits for queued bytes to leave (every logged byte is sent)


@dataclass(frozen=True)
class SentMessage:
    """One message the unit put on the wire."""

    t_mono_ns: int
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class ReceivedWrite:
    """Something other than a read that reached a simulated unit: a write command (carried out
    if the unit knows it and its values are valid), or bytes that are no message at all."""

    t_mono_ns: int
    unit: str  # which simulator: its profile and where it was served
    wire: bytes  # the line without its ending, the frame's id + data, or the undecodable bytes
    command: str | None  # the write command's name; None if it is not one the unit knows
    obeyed: bool  # whether the unit carried it out

    def __str__(self) -> str:
        what = self.command or "an unknown command or malformed bytes"
        done = "obeyed" if self.obeyed else "not obeyed"
        return f"{self.unit} received {self.wire!r}: {what}, {done}"


_writes_lock = threading.Lock()
_writes_everywhere: list[ReceivedWrite] = []


def writes_received() -> list[ReceivedWrite]:
    """Every write that reached any simulated stimulator of this process so far, in order."""
    with _writes_lock:
        return list(_writes_everywhere)


# The line family's write commands (drivers/README.md, "Write commands"). Fields in this order,
# each optional, at least one; values in the units and resolution of the STAT/CHG lines.
ASCII_SET = re.compile(
    rb"SET CH(?P<channel>\d{1,2})(?: F=(?P<frequency_hz>\d{1,5}(?:\.\d{1,3})?))?"
    rb"(?: PW=(?P<pulse_width_us>\d{1,5}))?(?: I=(?P<intensity_ma>\d{1,3}(?:\.\d{1,2})?))?"
    rb"(?: W=(?P<waveform>BI|MONO))?(?: M=(?P<mode>CONT|BRST))?(?: OUT=(?P<output_on>[01]))?"
)
ASCII_STOP = b"STOP"
_ASCII_VALUES: dict[str, Any] = {
    "frequency_hz": float,
    "pulse_width_us": float,
    "intensity_ma": float,
    "waveform": {b"BI": "biphasic", b"MONO": "monophasic"}.__getitem__,
    "mode": {b"CONT": "continuous", b"BRST": "burst"}.__getitem__,
    "output_on": lambda raw: raw == b"1",
}

# The frame family's write commands: id -> (name, struct layout of the data after the id).
FRAME_SET_CHANNEL, FRAME_SET_OUTPUT, FRAME_STOP_ALL = 0x40, 0x41, 0x42
FRAME_WRITES = {
    FRAME_SET_CHANNEL: ("SET_CHANNEL", "<BHHHBB"),  # ch, 0.1 Hz, us, 10 uA, wave, mode
    FRAME_SET_OUTPUT: ("SET_OUTPUT", "<BB"),  # ch, output 0/1
    FRAME_STOP_ALL: ("STOP_ALL", ""),
}


class StimUnitModel:
    """The simulated unit's settings over time, per channel.

    `clinical`: off → set 2 Hz (sometimes 100 Hz) and a pulse width → output on → ramp the
    intensity in 0.5 mA steps to a tolerance level → hold a few seconds (sometimes switching
    frequency) → ramp down → off, and again. `random`: a random setting changes every 0.3–2 s.
    All values sit on the protocols' resolution (0.1 Hz, 1 µs, 0.01 mA) so they round-trip.

    With `running=False` (a unit under the control channel's hand) nothing changes until
    `switch(True)`: the pattern then starts afresh, as from power-on, and `switch(False)` turns
    every channel's output off (intensity 0) and stops it there.
    """

    def __init__(self, channels: list[int], pattern: str, seed: int, running: bool = True) -> None:
        self.rng = random.Random(seed)
        self.pattern = pattern
        self.running = running
        self.settings = {
            ch: StimSettings(
                channel=ch,
                frequency_hz=2.0,
                pulse_width_us=250.0,
                intensity_ma=0.0,
                output_on=False,
            )
            for ch in channels
        }
        self._state = dict.fromkeys(channels, "off")
        self._target = dict.fromkeys(channels, 0.0)
        self._next = {ch: 0.3 + 0.4 * i for i, ch in enumerate(channels)}
        self._hold_until = dict.fromkeys(channels, 0.0)

    def switch(self, on: bool, t_s: float) -> list[StimSettings]:
        """The clinician's hand at `t_s`: start the pattern (as from power-on) or turn every
        output off and hold it off; the channels whose settings changed."""
        changed = []
        self.running = on
        for i, ch in enumerate(self.settings):
            self._state[ch] = "off"
            self._next[ch] = t_s + 0.4 * i  # the first channel at once, as at power-on
            old = self.settings[ch]
            new = old if on else old.model_copy(update={"intensity_ma": 0.0, "output_on": False})
            if new != old:
                self.settings[ch] = new
                changed.append(new)
        return changed

    def step(self, t_s: float) -> list[StimSettings]:
        """Advance to `t_s` seconds after start; the channels whose settings changed."""
        changed: list[StimSettings] = []
        if not self.running:
            return changed
        for ch, due in self._next.items():
            if t_s < due:
                continue
            old = self.settings[ch]
            new, wait_s = (
                self._clinical(ch, old, t_s) if self.pattern == "clinical" else self._random(old)
            )
            self._next[ch] = t_s + wait_s
            if new != old:
                self.settings[ch] = new
                changed.append(new)
        return changed

    def _clinical(self, ch: int, s: StimSettings, t_s: float) -> tuple[StimSettings, float]:
        rng, state = self.rng, self._state[ch]
        if state == "off":
            self._state[ch] = "ramp"
            self._target[ch] = rng.choice([6.0, 8.0, 10.0, 12.5, 15.0, 18.0, 22.5])
            return s.model_copy(
                update={
                    "frequency_hz": rng.choice([2.0, 2.0, 2.0, 4.0, 100.0]),
                    "pulse_width_us": float(rng.choice([100, 150, 200, 250, 300, 400])),
                    "waveform": "biphasic",
                    "mode": rng.choice(["continuous", "continuous", "burst"]),
                    "output_on": True,
                    "intensity_ma": 0.5,
                }
            ), 0.3
        if state == "ramp":
            level = min(s.intensity_ma + 0.5, self._target[ch])
            if level >= self._target[ch]:
                self._state[ch] = "hold"
                self._hold_until[ch] = t_s + rng.uniform(2.0, 5.0)
            return s.model_copy(update={"intensity_ma": level}), 0.3
        if state == "hold":
            if t_s >= self._hold_until[ch]:
                self._state[ch] = "down"
                return s, 0.2
            if rng.random() < 0.25:  # "dense-disperse": switch low/high frequency
                return s.model_copy(
                    update={"frequency_hz": 100.0 if s.frequency_hz < 50 else 2.0}
                ), 1.0
            return s, 1.0
        level = max(s.intensity_ma - 1.0, 0.0)
        if level == 0.0:
            self._state[ch] = "off"
            return s.model_copy(update={"intensity_ma": 0.0, "output_on": False}), rng.uniform(
                1.0, 3.0
            )
        return s.model_copy(update={"intensity_ma": level}), 0.2

    def _random(self, s: StimSettings) -> tuple[StimSettings, float]:
        rng = self.rng
        what = rng.choice(["frequency_hz", "pulse_width_us", "intensity_ma", "output_on", "mode"])
        value: Any = {
            "frequency_hz": round(rng.uniform(2.0, 100.0), 1),
            "pulse_width_us": float(rng.randrange(100, 401, 10)),
            "intensity_ma": round(rng.uniform(0.0, 30.0) * 2) / 2,
            "output_on": not s.output_on,
            "mode": rng.choice(["continuous", "burst"]),
        }[what]
        return s.model_copy(update={what: value}), rng.uniform(0.3, 2.0)


class _Link:
    """A byte link to the driver: a pty master or a TCP connection, with an output buffer."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.dropped = 0
        self.generation = 0  # +1 for each new connection: a receiver starts afresh

    def fds(self) -> list[int]:
        raise NotImplementedError

    def is_connected(self) -> bool:
        raise NotImplementedError

    def read(self, fd: int) -> bytes:
        raise NotImplementedError

    def _write_some(self, data: bytes) -> int:
        raise NotImplementedError

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> bool:
        """Queue bytes for the wire; False (and dropped) if the queue is full."""
        if len(self.pending) + len(data) > MAX_PENDING_BYTES:
            self.dropped += len(data)
            return False
        self.pending += data
        return True

    def flush(self) -> None:
        while self.pending and self.is_connected():
            try:
                n = self._write_some(bytes(self.pending[:65536]))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.pending.clear()
                return
            if n <= 0:
                return
            del self.pending[:n]


class _PtyLink(_Link):
    """A pseudo-terminal whose slave is reachable at a stable symlink across reopenings."""

    def __init__(self, link_path: Path) -> None:
        super().__init__()
        self.link_path = link_path
        self.master: int | None = None
        self.slave: int | None = None

    def open(self) -> None:
        self.generation += 1
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: bytes pass as they are
        os.set_blocking(self.master, False)
        tmp = self.link_path.with_name(self.link_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link_path)  # atomic: a driver never sees a half-made link

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = None
        self.pending.clear()
        # Gone means gone: a reconnecting driver must not open a stale or reused /dev/pts/N.
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()

    def fds(self) -> list[int]:
        return [self.master] if self.master is not None else []

    def is_connected(self) -> bool:
        return self.master is not None

    def read(self, fd: int) -> bytes:
        try:
            return os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return b""

    def _write_some(self, data: bytes) -> int:
        assert self.master is not None
        return os.write(self.master, data)


class _TcpLink(_Link):
    """A loopback TCP server with one client at a time."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]

    def close(self) -> None:
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()
        self.conn = self.listener = None
        self.pending.clear()

    def fds(self) -> list[int]:
        return [s.fileno() for s in (self.listener, self.conn) if s is not None]

    def is_connected(self) -> bool:
        return self.conn is not None

    def read(self, fd: int) -> bytes:
        if self.listener is not None and fd == self.listener.fileno():
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return b""
            if self.conn is not None:  # a new client replaces the old (a driver reconnecting)
                self.conn.close()
            conn.setblocking(False)
            self.conn = conn
            self.generation += 1
            self.pending.clear()
            return b""
        assert self.conn is not None
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.conn.close()
            self.conn = None
        return data

    def _write_some(self, data: bytes) -> int:
        assert self.conn is not None
        return self.conn.send(data)


class SimulatedStim:
    """A simulated stimulator on a pty (`url` is a stable path) or TCP (`socket://127.0.0.1:N`).

    Runs on its own thread from `start()` to `stop()`. Faults from the config run on their
    schedule; `inject()` applies one now. With `control` in its config it waits, output off,
    for `set_output()`: the front-panel hand of the demo's clinician.
    """

    def __init__(
        self,
        profile: StimulatorProfile,
        sim: StimSimulatorConfig,
        channels: list[int],
        workdir: Path,
        name: str = "stim",
        tcp_port: int = 0,
        log_file: TextIO | None = None,
        received_file: BinaryIO | None = None,
        profile_source: str | Path | None = None,
    ) -> None:
        self.profile = profile
        # The name or path the profile was loaded from: what a driver's config must name.
        self.profile_source = str(profile_source) if profile_source else profile.profile
        self.sim = sim
        self.channels = list(channels)
        self.protocol = StimProtocol(profile)  # device side: decodes queries, encodes messages
        self.model = StimUnitModel(self.channels, sim.pattern, sim.seed, running=not sim.control)
        self._switches: queue.SimpleQueue[tuple[bool, threading.Event]] = queue.SimpleQueue()
        self.rng = random.Random(sim.seed + 1)
        self.link: _Link = (
            _PtyLink(Path(workdir) / f"{name}.tty")
            if sim.transport == "pty"
            else _TcpLink(tcp_port)
        )
        self.log_file = log_file
        self.received_file = received_file
        self._received = bytearray()
        self._rx_generation = 0
        self._writes: list[ReceivedWrite] = []
        self._sent: list[SentMessage] = []
        self._changes: list[tuple[int, StimSettings]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.faults = FaultSchedule(sim.faults)
        self._stalled_until = 0.0
        self._down_until = 0.0
        self._replies: dict[str, Message] = {}
        self._change: str | None = None
        self._identity: dict[str, Any] = {}
        self._plan_replies()
        self.injected_malformed = 0  # messages the driver must count as malformed
        self.wire = WireLog()  # every message sent, by kind: the truth for data-quality counts
        self._duplicate = 0  # messages still to send twice (the `duplicate` fault)
        self.queries_answered = 0
        self._t0 = 0.0
        self._faults_t0: float | None = None  # when a recorder first sent a query

    # -- public ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """What the driver opens: the pty's stable path, or `socket://127.0.0.1:PORT`."""
        if isinstance(self.link, _PtyLink):
            return str(self.link.link_path)
        assert isinstance(self.link, _TcpLink)
        return f"socket://127.0.0.1:{self.link.port}"

    def start(self) -> SimulatedStim:
        """Open the link and start serving."""
        self.link.open()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sim-stim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the link, after the bytes already queued have gone out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        # Every message in the sent log must have reached the wire: tests compare the two.
        deadline = time.monotonic() + STOP_FLUSH_S
        while self.link.pending and self.link.is_connected() and time.monotonic() < deadline:
            self.link.flush()
            if self.link.pending:
                time.sleep(0.005)
        self.link.close()

    def __enter__(self) -> SimulatedStim:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_output(self, on: bool, timeout_s: float = 2.0) -> bool:
        """The simulated clinician's hand on the unit's own controls (not the driver's link):
        start the pattern or switch every output off. Returns once the unit has done it (its
        change messages queued), or False after `timeout_s` if it is not serving."""
        done = threading.Event()
        self._switches.put((on, done))
        return done.wait(timeout_s)

    def inject(self, fault: FaultSpec) -> None:
        """Apply a fault now (its `at_s`/`every_s` are ignored); callable from any thread."""
        self.faults.inject(fault)

    def received_bytes(self) -> bytes:
        """Every byte the unit has received from the driver."""
        with self._lock:
            return bytes(self._received)

    def sent_log(self) -> list[SentMessage]:
        """Every message the unit has sent, in order."""
        with self._lock:
            return list(self._sent)

    def changes(self) -> list[tuple[int, StimSettings]]:
        """Every settings change of the unit: (monotonic ns, new settings)."""
        with self._lock:
            return list(self._changes)

    def writes(self) -> list[ReceivedWrite]:
        """Every write command (or undecodable bytes) the unit received, in order."""
        with self._lock:
            return list(self._writes)

    # -- thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            t_s = now - self._t0
            self._apply_due_faults(now)
            if self._down_until and now >= self._down_until:
                try:
                    self.link.open()
                    self._down_until = 0.0
                except OSError:  # e.g. the TCP port was taken meanwhile: try again shortly
                    self.link.close()
                    self._down_until = now + 0.1
            while not self._switches.empty():
                on, done = self._switches.get_nowait()
                for settings in self.model.switch(on, t_s):
                    self._changed(settings)
                done.set()
            for settings in self.model.step(t_s):
                self._changed(settings)
            self.link.flush()
            fds = self.link.fds()
            if not fds:
                self._stop.wait(0.01)
                continue
            writable = fds if self.link.pending and self.link.is_connected() else []
            readable, _, _ = select.select(fds, writable, [], 0.01)
            for fd in readable:
                data = self.link.read(fd)
                if data:
                    self._on_bytes(data)

    def _on_bytes(self, data: bytes) -> None:
        if self._faults_t0 is None:
            self._faults_t0 = time.monotonic()
        with self._lock:
            self._received += data
        if self.received_file is not None:
            self.received_file.write(data)
            self.received_file.flush()
        if self.link.generation != self._rx_generation:  # a new connection starts afresh
            self._rx_generation = self.link.generation
            self.protocol.codec.reset()
        payloads, malformed = self.protocol.codec.feed(data)
        if malformed:  # not a read either: noted like a write (what the unit makes of it varies)
            self._note_write(data, None, obeyed=False)
        stalled = time.monotonic() < self._stalled_until  # hears everything, says nothing
        for payload in payloads:
            match = self.protocol.match_query(payload, self.channels)
            if match is None:
                if self.profile.transport.framing.read_error(payload) is not None:
                    self._note_write(payload, *self._obey(payload))
                continue  # else a read this unit does not serve: ignored, as a unit would
            if stalled:
                continue
            query, channel = match
            self.queries_answered += 1
            reply = self._replies[query.name]
            if reply.kind == "identity":
                self._send(reply.name, self._identity)
            else:
                self._send(reply.name, self._settings_fields(self.model.settings[channel]))

    # -- write commands --------------------------------------------------------------------------
    def _note_write(self, wire: bytes, command: str | None, obeyed: bool) -> None:
        entry = ReceivedWrite(
            time.monotonic_ns(), f"{self.profile.profile} at {self.url}", wire, command, obeyed
        )
        with self._lock:
            self._writes.append(entry)
        with _writes_lock:
            _writes_everywhere.append(entry)
        if self.log_file is not None:
            record = {"command": command, "wire": wire.hex(), "obeyed": obeyed}
            self.log_file.write(json.dumps({"t_mono_ns": entry.t_mono_ns, "write": record}) + "\n")
            self.log_file.flush()

    def _obey(self, payload: bytes) -> tuple[str | None, bool]:
        """Carry out a write command of the unit's protocol family; (its name, whether done)."""
        if self.protocol.is_line:
            if payload == ASCII_STOP:
                return "STOP", self._stop_all()
            m = ASCII_SET.fullmatch(payload)
            if m is None:
                return None, False
            update = {
                k: _ASCII_VALUES[k](v) for k, v in m.groupdict().items() if v and k in _ASCII_VALUES
            }
            return "SET", bool(update) and self._set(int(m["channel"]), update)
        name, layout = FRAME_WRITES.get(payload[0], (None, ""))
        if name is None:
            return None, False
        try:
            values = struct.unpack(layout, payload[1:])
        except struct.error:
            return name, False
        if payload[0] == FRAME_STOP_ALL:
            return name, self._stop_all()
        if payload[0] == FRAME_SET_OUTPUT:
            channel, output = values
            return name, output in (0, 1) and self._set(channel, {"output_on": output == 1})
        channel, freq, width, current, wave, mode = values
        if wave not in (0, 1) or mode not in (0, 1):
            return name, False
        update = {
            "frequency_hz": freq / 10,
            "pulse_width_us": float(width),
            "intensity_ma": current / 100,
            "waveform": "biphasic" if wave else "monophasic",
            "mode": "burst" if mode else "continuous",
        }
        return name, self._set(channel, update)

    def _set(self, channel: int, update: dict[str, Any]) -> bool:
        """Change one channel's settings as a write says; False if the unit cannot."""
        old = self.model.settings.get(channel)
        if old is None:
            return False
        try:
            new = StimSettings.model_validate({**old.model_dump(), **update})
        except ValidationError:
            return False
        if new != old:
            self.model.settings[channel] = new
            self._changed(new)
        return True

    def _stop_all(self) -> bool:
        for channel, settings in self.model.settings.items():
            if settings.output_on:
                self._set(channel, {"output_on": False})
        return True

    def _changed(self, settings: StimSettings) -> None:
        """A channel's settings changed: note it, and tell the host if the profile says how."""
        with self._lock:
            self._changes.append((time.monotonic_ns(), settings))
        if self._change is not None:
            self._send(self._change, self._settings_fields(settings))

    def _plan_replies(self) -> None:
        """Which message answers each query, and what the unit sends on a change.

        Query X is answered by message X if the profile has one; otherwise a per-channel query
        by the first settings message, and a query for the whole unit by the identity message.
        Changes go out as message "change", if the profile has it (else the unit only answers).
        """
        messages = {m.name: m for m in self.profile.messages}
        settings = [m for m in self.profile.messages if m.kind == "settings"]
        identity = [m for m in self.profile.messages if m.kind == "identity"]
        for query in self.profile.queries:
            if query.name in messages:
                reply = messages[query.name]
            elif query.per_channel or not identity:
                reply = settings[0]
            else:
                reply = identity[0]
            self._replies[query.name] = reply
        change = messages.get("change")
        self._change = change.name if change is not None and change.kind == "settings" else None
        used = [*self._replies.values(), *([change] if self._change and change else [])]
        if isinstance(self.profile.transport.framing, LineFraming):
            for message in used:
                if message.format is None:
                    raise ValueError(
                        f"profile {self.profile.profile}: message {message.name!r} has no "
                        "'format', so the simulator cannot send it"
                    )
        self._identity = {
            name: _example_value(rule)
            for name, rule in (identity[0].fields.items() if identity else [])
        }

    @staticmethod
    def _settings_fields(s: StimSettings) -> dict[str, Any]:
        return s.model_dump()

    def _send(self, message: str, fields: dict[str, Any], copy: bool = False) -> None:
        if not self.link.is_connected() or time.monotonic() < self._stalled_until:
            return
        if not self.link.send(self.protocol.encode_message(message, fields)):
            return  # nobody reads the link: like a real unit, the message is lost, not logged
        self.wire.sent("duplicate" if copy else "valid")
        entry = SentMessage(time.monotonic_ns(), message, fields)
        with self._lock:
            self._sent.append(entry)
        if self.log_file is not None:
            self.log_file.write(
                json.dumps({"t_mono_ns": entry.t_mono_ns, "message": message, "fields": fields})
                + "\n"
            )
            self.log_file.flush()
        if self._duplicate and not copy:  # the `duplicate` fault: the same message, right after
            self._duplicate -= 1
            self._send(message, fields, copy=True)

    # -- faults ----------------------------------------------------------------------------------
    def _apply_due_faults(self, now: float) -> None:
        # Scheduled faults run on the time since a recorder first sent a query, not since the
        # unit started: how long the recorder takes to open the port (a latency probe of the BLE
        # links before it, a busy machine) does not move them. Injected ones apply at once.
        since = -1.0 if self._faults_t0 is None else now - self._faults_t0
        for fault in self.faults.due(since):
            self._apply(fault, now)

    def _apply(self, fault: FaultSpec, now: float) -> None:
        framing = self.profile.transport.framing
        if fault.kind == "stall":
            self._stalled_until = now + fault.duration_s
        elif fault.kind == "disconnect":
            if self.link.is_connected() or self.link.fds():
                self.link.close()
            self._down_until = now + max(fault.duration_s, 0.01)
        elif fault.kind == "garbage":
            self._send_raw_malformed(garbage_pieces(framing, fault.count, self.rng))
        elif fault.kind == "duplicate":
            self._duplicate += fault.count
        elif fault.kind == "truncate":
            pieces = []
            for _ in range(fault.count):
                ch = self.rng.choice(self.channels)
                whole = self.protocol.encode_message(
                    "status", self._settings_fields(self.model.settings[ch])
                )
                pieces.append(truncated(whole, framing))
            self._send_raw_malformed(pieces)

    def _send_raw_malformed(self, pieces: list[bytes]) -> None:
        if not self.link.is_connected() or time.monotonic() < self._stalled_until:
            return
        sent = sum(self.link.send(piece) for piece in pieces)
        self.injected_malformed += sent
        self.wire.sent("malformed", sent)


def _example_value(rule: FieldRule) -> Any:
    """A plausible value for an identity field: the unit calls itself SIMSTIM, version 1."""
    if rule.type == "const":
        return rule.value
    if rule.type == "enum":
        return next(iter(rule.map.values()))
    if rule.type == "bool":
        return True
    if rule.type == "str":
        return "SIMSTIM"
    return 1


def start_simulated_stim(
    profile: str | Path,
    sim: StimSimulatorConfig,
    workdir: Path,
    channels: list[int] | None = None,
    name: str = "stim",
) -> SimulatedStim:
    """Start a simulated unit for a profile, in-process on its own thread; `.url` to connect."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SimulatedStim(
        load_stim_profile(profile), sim, channels or [1], workdir, name=name, profile_source=profile
    ).start()
