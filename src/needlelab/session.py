"""A recording session: devices, simulators, hub and writer wired together from one config.

The same object runs headless (`needlelab record`, `needlelab demo`) and under the monitor.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from needlelab import __version__
from needlelab.clinic.localization import Localization
from needlelab.clinic.protocol import Protocol, load_protocol
from needlelab.clinic.run import ProtocolRun
from needlelab.clock import ClockSegment, SessionClock
from needlelab.config import (
    SessionConfig,
    config_json,
)
from needlelab.devices import Device, create_device
from needlelab.devices.stim_manual import ManualStimulator
from needlelab.events import MarkerEvent, RecordingEvent
from needlelab.hub import Hub
from needlelab.preflight import (
    CannotWriteError,
    missing_folders,
    preflight,
    remove_empty_folders,
)
from needlelab.record import RecordingError, SessionMeta, SessionWriter, session_file_name

if TYPE_CHECKING:
    from needlelab.lsl import LslPublisher
    from needlelab.sim.serve import SimulatorProcess, SimulatorSet

log = logging.getLogger(__name__)


class SessionFileError(RecordingError, CannotWriteError):
    """The session file could not be created (the folder is read-only, full or gone); nothing
    is left behind."""


@dataclass(frozen=True)
class DeviceStatus:
    """One device's health line for progress displays."""

    name: str
    state: str
    samples: int
    malformed: int
    gaps: int
    reconnects: int


class Session:
    """Everything one recording needs, started and stopped together.

    Simulated devices (a `[simulator]` table in the device config) get their simulator started
    first and the real driver is pointed at it: the driver cannot tell. The simulators run
    in-process (the default: fast, for tests) or, with `separate_simulators`, in a child process
    (`needlelab sim session`), which is the path hardware takes: a serial port and a Bluetooth
    controller outside this process.
    """

    def __init__(
        self,
        config: SessionConfig,
        out_dir: Path | None = None,
        separate_simulators: bool = False,
        lsl: bool | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir if out_dir is not None else config.session.out_dir)
        self.lsl_enabled = config.lsl.enabled if lsl is None else lsl
        # Everything a recording would reject is rejected here, before any file exists
        # (`ConfigError`, `CannotWriteError`): the same check as `needlelab check`.
        preflight(config, out_dir=self.out_dir, lsl=self.lsl_enabled)
        self.clock = SessionClock()
        self.hub = Hub(self.clock, ring_seconds=max(30.0, config.monitor.window_s))
        self.session_id = uuid.uuid4().hex
        self.path = self.out_dir / session_file_name(
            config.session.patient_id, self.clock.anchor_wall_ns
        )
        self.devices: dict[str, Device] = {}
        self.separate_simulators = separate_simulators
        self.simulators: SimulatorSet | SimulatorProcess | None = None
        self._endpoints: dict[str, dict[str, Any]] | None = None
        self._simulators_started = False
        self._sim_dir: tempfile.TemporaryDirectory[str] | None = None
        self._writer: SessionWriter | None = None
        self._stopped = threading.Event()
        self.error: str | None = None
        self.start_failure: Exception | None = None  # why the last start() failed, if it did
        self.paused = False
        # The needling and localization log: one per session, whoever drives it (the monitor,
        # the console, a script). It takes entries only while the file is being written.
        self.localization = Localization(
            self.hub, config.localization, closed="not recording yet (press Start)"
        )
        # The protocol the session follows (checked now: a bad template fails before any file
        # exists); its run starts with the recording.
        self.protocol: Protocol | None = None
        if config.session.protocol:
            self.protocol = load_protocol(config.session.protocol, config.localization)
        self.protocol_run: ProtocolRun | None = None
        self.lsl: LslPublisher | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the file, start the writer, the simulators and the devices.

        If it fails, the file goes too unless something was recorded in it: a file that cannot
        be created raises `SessionFileError` and leaves nothing; a later failure stops the
        session and re-raises. `start_failure` keeps the exception either way.
        """
        self.start_failure = None
        new_folders = missing_folders(self.out_dir)
        meta = SessionMeta(
            session_id=self.session_id,
            patient_id=self.config.session.patient_id,
            anchor_monotonic_ns=self.clock.anchor_monotonic_ns,
            anchor_wall_ns=self.clock.anchor_wall_ns,
            config_json=config_json(self.config),
            software_version=__version__,
        )
        writer = SessionWriter(
            self.path,
            self.hub,
            meta,
            commit_interval_s=self.config.session.commit_interval_ms / 1e3,
        )
        writer.on_error = self._on_writer_error
        try:
            writer.start()
        except RecordingError as exc:
            remove_empty_folders(new_folders)
            detail = str(exc)
            if "--out" not in detail:  # the writer's own words when the disk failed it
                detail += (
                    ": the disk is full, a file-size limit was reached or the drive is gone; "
                    "nothing was recorded and no file is left. Free disk space or record to "
                    "another folder with --out"
                )
            self.start_failure = SessionFileError(detail)
            raise self.start_failure from None
        self._writer = writer
        try:
            self._start_sources()
        except Exception as exc:
            self.start_failure = exc
            self.stop("start failed")
            self._discard_if_empty(new_folders)
            raise

    def _start_sources(self) -> None:
        """Everything after the file: the start event, the protocol run, LSL, the simulators
        and the devices."""
        self.hub.emit(RecordingEvent(action="start", source="session"))
        self.localization.open()
        if self.protocol is not None:
            self.protocol_run = ProtocolRun(self.hub, self.localization, self.protocol)
        if self.lsl_enabled:
            from needlelab.lsl import LslPublisher, LslUnavailable

            try:
                self.lsl = LslPublisher(self.hub, self.config.lsl, self.session_id, self.live_clock)
            except LslUnavailable as exc:
                raise RuntimeError(f"LSL is enabled but cannot run: {exc}") from None
            self.lsl.start()
        endpoints = self.start_simulators()
        for device_config in self.config.devices:
            if device_config.name in endpoints:
                # model_copy skips validation on purpose: the config stays "simulated" in
                # the file; only the live driver learns the simulator's address.
                device_config = device_config.model_copy(update=endpoints[device_config.name])
            device = create_device(device_config, self.hub)
            self.devices[device.name] = device
            device.start()

    def _discard_if_empty(self, new_folders: list[Path]) -> None:
        """After a failed start: remove the stopped file if no sample reached it (it holds only
        its own header then), and the folders made for it if they are empty."""
        try:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                recorded = conn.execute("SELECT EXISTS (SELECT 1 FROM blocks)").fetchone()[0]
        except sqlite3.Error:
            return  # unreadable: keep it for `needlelab verify` to say what it is
        if recorded:
            return
        for leftover in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            leftover.unlink(missing_ok=True)
        remove_empty_folders(new_folders)

    def start_simulators(self) -> dict[str, dict[str, Any]]:
        """Start the simulators of simulated devices, once: before the recording when a preview
        connects to them (the recording then reuses them). Their endpoints by device name."""
        if self._endpoints is None:
            self._simulators_started = True
            self._endpoints = self._start_simulators()
        return self._endpoints

    def _stop_simulators(self) -> None:
        if not self._simulators_started:
            return
        self._simulators_started = False
        self._endpoints = None
        if self.simulators is not None:
            with contextlib.suppress(Exception):
                self.simulators.stop()
        if self._sim_dir is not None:
            self._sim_dir.cleanup()
            self._sim_dir = None

    def _start_simulators(self) -> dict[str, dict[str, Any]]:
        """Start the simulators of simulated devices; their endpoints by device name."""
        if not any(getattr(d, "simulator", None) for d in self.config.devices):
            return {}
        from needlelab.sim.serve import SimulatorProcess, SimulatorSet

        self._sim_dir = tempfile.TemporaryDirectory(prefix="needlelab-sim-")
        workdir = Path(self._sim_dir.name)
        if self.separate_simulators:
            self.simulators = SimulatorProcess(self.config, workdir)
        else:
            self.simulators = SimulatorSet(self.config, workdir, tag=self.session_id)
        return self.simulators.start()

    def _on_writer_error(self, error: RecordingError) -> None:
        self.localization.close("the recording failed")
        self.error = str(error)
        self._stopped.set()

    def stop(self, reason: str = "") -> None:
        """Stop devices and simulators, flush and close the file. Safe to call twice."""
        if self._writer is None:
            self._stop_simulators()  # a preview's: the recording never started
            return
        # Entries end before the file does: one taken now is in it, a later one is refused.
        self.localization.close("the recording has stopped")
        for device in self.devices.values():
            device.stop()
        if self.lsl is not None:
            self.lsl.stop()  # after the last samples
            self.lsl = None
        self._stop_simulators()
        self.hub.emit(RecordingEvent(action="stop", reason=reason, source="session"))
        writer, self._writer = self._writer, None
        writer.stop()
        if writer.error is not None and self.error is None:
            self.error = str(writer.error)
        self._stopped.set()

    def wait(
        self,
        duration_s: float | None,
        tick_s: float = 0.5,
        on_tick: Callable[[float], None] | None = None,
        stop_requested: threading.Event | None = None,
    ) -> None:
        """Block until `duration_s` has passed, a stop is requested, or the writer failed."""
        stop_requested = stop_requested or threading.Event()
        start_ns = self.clock.now_ns()
        while not (self._stopped.is_set() or stop_requested.is_set()):
            elapsed = (self.clock.now_ns() - start_ns) / 1e9
            if duration_s is not None and elapsed >= duration_s:
                break
            remaining = tick_s if duration_s is None else min(tick_s, duration_s - elapsed)
            stop_requested.wait(max(0.0, remaining))
            if on_tick is not None:
                on_tick((self.clock.now_ns() - start_ns) / 1e9)

    @property
    def recording(self) -> bool:
        """Whether the file is open and being written."""
        return self._writer is not None

    def pause(self) -> None:
        """Mark a pause: a `recording` event. Data keep being written (nothing is ever dropped);
        readers and the report leave paused stretches out where it matters."""
        if self.recording and not self.paused:
            self.paused = True
            self.hub.emit(RecordingEvent(action="pause", source="clinician"))

    def resume(self) -> None:
        """Mark the end of a pause: a `recording` event."""
        if self.recording and self.paused:
            self.paused = False
            self.hub.emit(RecordingEvent(action="resume", source="clinician"))

    def live_clock(self, stream: str, points: int = 2000) -> ClockSegment | None:
        """A clock-model fit of a regular stream's latest `points` arrivals (None if too few)."""
        writer = self._writer
        return writer.live_clock(stream, points) if writer is not None else None

    # -- clinician input -------------------------------------------------------------------------
    def mark(self, text: str) -> None:
        """Record a free clinician note."""
        self.hub.emit(MarkerEvent(text=text, source="clinician"))

    def manual_stimulator(self, name: str | None = None) -> ManualStimulator:
        """The manual-entry stimulator called `name` (or the only one)."""
        manual = [d for d in self.devices.values() if isinstance(d, ManualStimulator)]
        if name is not None:
            manual = [d for d in manual if d.name == name]
        if len(manual) != 1:
            raise ValueError(
                "no such manual stimulator"
                if not manual
                else "several manual stimulators; name one"
            )
        return manual[0]

    def status(self) -> list[DeviceStatus]:
        """Health of every device, for progress lines."""
        return [
            DeviceStatus(
                d.name,
                d.stats.state.value,
                d.stats.samples,
                d.stats.malformed,
                d.stats.gaps,
                d.stats.reconnects,
            )
            for d in self.devices.values()
        ]
