"""`SimulatorSet`: every simulated device of a session config, served together.

A session config marks a device as simulated with a `[simulator]` table. The set starts a
simulator for each and returns its endpoint: the config fields a driver needs to reach it (a
serial URL, or a bleak backend, bumble transport and advertised name), exactly what a config
for the real device would say.

BLE simulators are reached in one of three ways (`ble`):

- `local`: an in-process bumble link per device (`local:NAME`), for tests and in-process runs;
- `unix`: a bumble controller per device serving HCI on a unix socket in `workdir`, for a
  separate simulator process (`needlelab sim session`), the path a real adapter takes;
- `tcp`: the same on a loopback TCP port (127.0.0.1 only).

A simulated EMG sensor with `artefacts_from` is handed the named simulated stimulator's settings
history, so its artefacts follow that unit's pulses; `truth()` returns the histories for sync
checks.

Each BLE endpoint's `latency_us` is measured, not declared: before the endpoints are handed out,
the set calibrates the link as a real setup would be calibrated once with a reference
(`needlelab.sim.link_probe`): a twin of the first EMG sensor over the same kind of link, its
true sample times against a central's arrivals, and the typical floor of the difference
(`clock.typical_floor`; the EMG endpoints get `latency_floor = "typical"`, so their clock fit
uses the same statistic). `link_floor` holds what was measured (None when no EMG sensor is
simulated: no latency is declared then).

`control()` is the simulated clinician's hand on a device's own controls, never the driver's
link: a stimulator with `control` switched on or off, a caliper with `control` pressed on a
distance. A `SimulatorProcess` forwards it to its child over a unix socket in its workdir
(JSON lines, `ControlServer`); needlelab's drivers never see it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from needlelab.config import CaliperBleConfig, EmgBleConfig, SessionConfig, StimSerialConfig
from needlelab.events import StimSettings
from needlelab.sim.ble_peripheral import SimulatedBleDevice
from needlelab.sim.link_probe import LinkFloor
from needlelab.sim.stim_server import SimulatedStim, start_simulated_stim

BleMode = Literal["local", "unix", "tcp"]


class SimulatorControlError(ValueError):
    """A control command a simulator cannot carry out (unknown device, no control, bad value)."""


def control_message(device: str, output: bool | None, press_mm: float | None) -> dict[str, Any]:
    """One control command as sent over the control socket."""
    message: dict[str, Any] = {"device": device}
    if output is not None:
        message["output"] = output
    if press_mm is not None:
        message["press_mm"] = press_mm
    return message


class SimulatorSet:
    """The simulators of one session; `start()` returns {device name: config updates}.

    With `control_path`, `start()` also serves `control()` on a unix socket there (for the
    parent of a `needlelab sim session` process)."""

    def __init__(
        self,
        config: SessionConfig,
        workdir: Path,
        ble: BleMode = "local",
        tag: str = "sim",
        control_path: Path | None = None,
    ) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.ble_mode = ble
        self.tag = tag  # makes in-process link names unique per session
        self.control_path = control_path
        self._control_server: ControlServer | None = None
        self.stims: dict[str, SimulatedStim] = {}
        self.ble_devices: dict[str, SimulatedBleDevice] = {}
        self._ble_loop: Any = None
        self._hci: list[Any] = []  # bumble server transports of unix/tcp mode
        self._truth: dict[str, list[tuple[int, StimSettings]]] = {}
        self.link_floor: LinkFloor | None = None

    def start(self) -> dict[str, dict[str, Any]]:
        """Start every simulator; the endpoint of each simulated device. Stops all on failure."""
        endpoints: dict[str, dict[str, Any]] = {}
        try:
            # Stimulators first: an EMG simulator may follow one's pulses.
            for device in self.config.devices:
                if isinstance(device, StimSerialConfig) and device.simulator is not None:
                    self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    sim = start_simulated_stim(
                        device.profile,
                        device.simulator,
                        self.workdir,
                        device.channels,
                        device.name,
                    )
                    self.stims[device.name] = sim
                    endpoints[device.name] = {"port": sim.url}
            for device in self.config.devices:
                if isinstance(device, EmgBleConfig | CaliperBleConfig) and device.simulator:
                    endpoints[device.name] = self._start_ble(device)
            self._calibrate(endpoints)
            if self.control_path is not None:
                self._control_server = ControlServer(self, self.control_path)
        except BaseException:
            self.stop()
            raise
        return endpoints

    def control(
        self, device: str, *, output: bool | None = None, press_mm: float | None = None
    ) -> None:
        """Switch a controlled stimulator's output on or off (`output`: returns once the unit
        did), or press a controlled caliper on `press_mm`; `SimulatorControlError` if the
        device has no such control."""
        self.apply(control_message(device, output, press_mm))

    def apply(self, message: dict[str, Any]) -> None:
        """Carry out one control message ({"device", "output" | "press_mm"})."""
        device = message.get("device")
        if device in self.stims and set(message) == {"device", "output"}:
            stim = self.stims[device]
            if not stim.sim.control or not isinstance(message["output"], bool):
                raise SimulatorControlError(f"stimulator {device!r} takes no output control")
            if not stim.set_output(message["output"]):
                raise SimulatorControlError(f"stimulator {device!r} did not answer its control")
            return
        sensor = self.ble_devices.get(str(device))
        if sensor is not None and set(message) == {"device", "press_mm"}:
            from needlelab.sim.caliper import SimulatedCaliper

            mm = message["press_mm"]
            if not isinstance(sensor, SimulatedCaliper) or not sensor.sim.control:
                raise SimulatorControlError(f"{device!r} is no caliper with control")
            if not isinstance(mm, int | float) or not 0 <= mm <= 300:
                raise SimulatorControlError(f"press_mm must be 0-300 mm, not {mm!r}")
            sensor.press(float(mm))
            return
        raise SimulatorControlError(f"no simulated device takes the control {message!r}")

    def _start_ble(self, device: EmgBleConfig | CaliperBleConfig) -> dict[str, Any]:
        from needlelab.ble.loop import BleLoop

        if self._ble_loop is None:
            self._ble_loop = BleLoop.acquire()
        link = f"{self.tag}-{device.name}"
        advertised = f"Sim-{device.name}"
        sensor = self._make_ble(device, link, advertised)
        self.ble_devices[device.name] = sensor  # before serving: stop() cleans up a failed start
        transport = self._ble_loop.run(self._serve(sensor, device.name), timeout_s=10)
        return {
            "backend": "bumble",
            "bumble_transport": transport,
            "advertised_name": advertised,
        }

    def _calibrate(self, endpoints: dict[str, dict[str, Any]]) -> None:
        """Measure the link's latency floor with a twin of the first simulated EMG sensor and
        declare it as every BLE endpoint's `latency_us` (the caliper's link is the same kind),
        and as the typical floor for the EMG sensors' clock fits."""
        emgs = [d for d in self.config.devices if isinstance(d, EmgBleConfig) and d.simulator]
        emg = emgs[0] if emgs else None
        emg_names = {d.name for d in emgs}
        if emg is None or self._ble_loop is None:
            return
        from needlelab.ble.bumble_backend import forget_local_link
        from needlelab.profiles import load_emg_profile
        from needlelab.sim.emg_sensor import SimulatedEmgSensor
        from needlelab.sim.link_probe import PROBE_ATTEMPTS, probe_floor

        assert emg.simulator is not None
        quiet = emg.simulator.model_copy(update={"faults": [], "loss": 0.0, "artefacts_from": None})
        floors: list[LinkFloor] = []
        for attempt in range(PROBE_ATTEMPTS):
            link = f"{self.tag}-{emg.name}-probe{attempt}"
            twin = SimulatedEmgSensor(
                load_emg_profile(emg.profile), quiet, link, f"Probe-{emg.name}"
            )
            hci = len(self._hci)

            async def serve(sensor: SimulatedEmgSensor) -> str:
                return await self._serve(sensor, f"{emg.name}-probe")

            try:
                floor = self._ble_loop.run(probe_floor(twin, serve), timeout_s=30)
            finally:
                with contextlib.suppress(Exception):
                    self._ble_loop.run(twin.stop(), timeout_s=5)
                for transport in self._hci[hci:]:
                    with contextlib.suppress(Exception):
                        self._ble_loop.run(transport.close(), timeout_s=5)
                del self._hci[hci:]
                forget_local_link(link)
                (self.workdir / f"{emg.name}-probe.hci").unlink(missing_ok=True)
            if floor is not None:
                floors.append(floor)
                if not floor.queued(quiet.connection_interval_ms, quiet.jitter_ms):
                    break
        self.link_floor = min(floors, key=lambda f: f.floor_us) if floors else None
        if self.link_floor is None:
            raise RuntimeError("the simulated link's latency probe received no frame")
        for name, endpoint in endpoints.items():
            if "bumble_transport" in endpoint:
                endpoint["latency_us"] = round(max(self.link_floor.floor_us, 0.0), 1)
                if name in emg_names:  # the floor of a regular stream's clock fit
                    endpoint["latency_floor"] = "typical"

    def _make_ble(
        self, device: EmgBleConfig | CaliperBleConfig, link: str, advertised: str
    ) -> SimulatedBleDevice:
        if isinstance(device, EmgBleConfig):
            from needlelab.profiles import load_emg_profile
            from needlelab.sim.emg_sensor import SimulatedEmgSensor

            assert device.simulator is not None
            source = device.simulator.artefacts_from
            history = self.stims[source].changes if source is not None else None
            return SimulatedEmgSensor(
                load_emg_profile(device.profile), device.simulator, link, advertised, history
            )
        from needlelab.profiles import load_caliper_profile
        from needlelab.sim.caliper import SimulatedCaliper

        assert device.simulator is not None
        return SimulatedCaliper(
            load_caliper_profile(device.profile), device.simulator, link, advertised
        )

    async def _serve(self, sensor: SimulatedBleDevice, name: str) -> str:
        """Start a BLE simulator; the bumble transport spec a central uses to reach it."""
        await sensor.start()
        if self.ble_mode == "local":
            return f"local:{sensor.link_name}"
        from bumble.transport import open_transport
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        from needlelab.ble.bumble_backend import local_link
        from needlelab.sim.ble_peripheral import CentralController

        if self.ble_mode == "unix":
            path = self.workdir / f"{name}.hci"
            path.unlink(missing_ok=True)
            transport = await open_transport(f"unix-server:{path}")
            spec = f"unix:{path}"
        else:
            sock = socket.create_server(("127.0.0.1", 0))
            transport = await open_tcp_server_transport_with_socket(sock)
            spec = f"tcp-client:127.0.0.1:{sock.getsockname()[1]}"
        self._hci.append(transport)
        # The central's controller lives here, on the peripheral's link; the app is its host.
        CentralController(
            f"hci-{name}", host_source=transport.source, host_sink=transport.sink,
            link=local_link(sensor.link_name),
        )  # fmt: skip
        return spec

    def truth(self) -> dict[str, list[tuple[int, StimSettings]]]:
        """Each simulated stimulator's settings history: (monotonic ns, settings)."""
        return {name: sim.changes() for name, sim in self.stims.items()} or self._truth

    def frames_truth(self, device: str) -> dict[str, Any] | None:
        """A simulated EMG sensor's `truth()` (its frames as sent; None: no such sensor)."""
        from needlelab.sim.emg_sensor import SimulatedEmgSensor

        sensor = self.ble_devices.get(device)
        return sensor.truth() if isinstance(sensor, SimulatedEmgSensor) else None

    def stop(self) -> None:
        """Stop every simulator; safe to call twice."""
        from needlelab.ble.bumble_backend import forget_local_link

        if self._control_server is not None:
            server, self._control_server = self._control_server, None
            server.close()
        if self._ble_loop is not None:
            loop, self._ble_loop = self._ble_loop, None
            try:
                for sensor in self.ble_devices.values():
                    with contextlib.suppress(Exception):
                        loop.run(sensor.stop(), timeout_s=5)
                for transport in self._hci:
                    with contextlib.suppress(Exception):
                        loop.run(transport.close(), timeout_s=5)
            finally:
                loop.release()
        self._hci.clear()
        for sensor in self.ble_devices.values():
            forget_local_link(sensor.link_name)
        for sim in self.stims.values():
            with contextlib.suppress(Exception):
                sim.stop()
        self._truth = self.truth()
        self.stims.clear()


class ControlServer:
    """`SimulatorSet.apply` on a unix socket: one JSON object a line in, `{"ok": true}` or
    `{"error": "..."}` a line out. Owner-only (the socket lives in the set's 0700 workdir)."""

    def __init__(self, sims: SimulatorSet, path: Path) -> None:
        open_requests: set[socket.socket] = set()
        self._open = open_requests

        class Handler(socketserver.StreamRequestHandler):
            def setup(self) -> None:
                super().setup()
                open_requests.add(self.request)

            def finish(self) -> None:
                open_requests.discard(self.request)
                super().finish()

            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        message = json.loads(line)
                        if not isinstance(message, dict):
                            raise SimulatorControlError("a control message is a JSON object")
                        sims.apply(message)
                        reply: dict[str, Any] = {"ok": True}
                    except (ValueError, KeyError) as exc:  # JSON and control errors alike
                        reply = {"error": str(exc)}
                    self.wfile.write((json.dumps(reply) + "\n").encode())
                    self.wfile.flush()

        path.unlink(missing_ok=True)
        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.server.daemon_threads = False
        self.path = path
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="sim-control", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and end the open connections (their threads are joined)."""
        self.server.shutdown()
        self._thread.join(5)
        for request in list(self._open):
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
        self.server.server_close()
        self.path.unlink(missing_ok=True)


class SimulatorProcess:
    """A `SimulatorSet` in a separate process (`needlelab sim session`), BLE over unix sockets.

    The app then reaches its simulated devices exactly as it reaches hardware: a serial port and a
    Bluetooth controller in another process. Same interface as `SimulatorSet`.
    """

    def __init__(self, config: SessionConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self._proc: subprocess.Popen[str] | None = None
        self._truth_path = self.workdir / "truth.json"
        self._truth: dict[str, list[tuple[int, StimSettings]]] = {}
        self._frames: dict[str, dict[str, Any]] = {}
        self._control_path = self.workdir / "control.sock"
        self._control: socket.socket | None = None
        self._control_lock = threading.Lock()

    def start(self) -> dict[str, dict[str, Any]]:
        """Start the process; the endpoints it printed. Raises `RuntimeError` if it failed."""
        from needlelab.config import config_json

        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._proc = subprocess.Popen(
            [
                sys.executable, "-m", "needlelab.cli", "sim", "session", "-",
                "--ble", "unix", "--workdir", str(self.workdir), "--truth", str(self._truth_path),
                "--control", str(self._control_path),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(config_json(self.config))
        self._proc.stdin.close()
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self._proc.wait()
            raise RuntimeError(f"the simulator process failed: {err.strip() or 'no output'}")
        endpoints: dict[str, dict[str, Any]] = json.loads(line)
        return endpoints

    def truth(self) -> dict[str, list[tuple[int, StimSettings]]]:
        """Each simulated stimulator's settings history, once the process has stopped."""
        return self._truth

    def frames_truth(self, device: str) -> dict[str, Any] | None:
        """A simulated EMG sensor's frames as sent (`truth()`), once the process has stopped
        (None: no such sensor, or not stopped cleanly)."""
        return self._frames.get(device)

    def control(
        self, device: str, *, output: bool | None = None, press_mm: float | None = None
    ) -> None:
        """`SimulatorSet.control` in the child process, over its control socket."""
        message = json.dumps(control_message(device, output, press_mm)) + "\n"
        with self._control_lock:
            try:
                if self._control is None:
                    if self._proc is None:
                        raise SimulatorControlError("the simulator process is not running")
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(5)
                    sock.connect(str(self._control_path))
                    self._control = sock
                self._control.sendall(message.encode())
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = self._control.recv(4096)
                    if not chunk:
                        raise OSError("the simulator process closed its control socket")
                    reply += chunk
            except OSError as exc:
                self._close_control()
                raise SimulatorControlError(f"cannot reach the simulator process: {exc}") from None
        answer = json.loads(reply)
        if "error" in answer:
            raise SimulatorControlError(answer["error"])

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def kill(self) -> None:
        """SIGKILL the process, as a crash would end it (fault tests); no truth is written."""
        with self._control_lock:
            self._close_control()
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def stop(self) -> None:
        """SIGTERM the process, wait, and read its truth file; safe to call twice."""
        with self._control_lock:
            self._close_control()  # before the child stops: its server waits for connections
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors = proc.stderr.read() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        with contextlib.suppress(OSError, ValueError):
            self._truth = read_truth(self._truth_path)
        from needlelab.sim.emg_sensor import frames_truth_path

        for device in self.config.devices:
            with contextlib.suppress(OSError, ValueError):
                path = frames_truth_path(self._truth_path, device.name)
                self._frames[device.name] = json.loads(path.read_text(encoding="utf-8"))
        writes = [line for line in errors.splitlines() if "reached a simulated stimulator" in line]
        if writes:  # needlelab must only ever send reads: this is a bug, said loudly
            raise RuntimeError(writes[0])


def write_truth(path: Path, truth: dict[str, list[tuple[int, StimSettings]]]) -> None:
    """Save stimulator histories as JSON: {name: [[monotonic ns, settings], ...]}."""
    data = {n: [[t, s.model_dump()] for t, s in h] for n, h in truth.items()}
    path.write_text(json.dumps(data), encoding="utf-8")


def read_truth(path: Path) -> dict[str, list[tuple[int, StimSettings]]]:
    """Load what `write_truth` saved."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {n: [(int(t), StimSettings.model_validate(s)) for t, s in h] for n, h in data.items()}
