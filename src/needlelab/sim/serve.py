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
true sample times against a central's arrivals, and the floor of the difference. `link_floor`
holds what was measured (None when no EMG sensor is simulated: no latency is declared then).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from needlelab.config import CaliperBleConfig, EmgBleConfig, SessionConfig, StimSerialConfig
from needlelab.events import StimSettings
from needlelab.sim.ble_peripheral import SimulatedBleDevice
from needlelab.sim.link_probe import LinkFloor
from needlelab.sim.stim_server import SimulatedStim, start_simulated_stim

BleMode = Literal["local", "unix", "tcp"]


class SimulatorSet:
    """The simulators of one session; `start()` returns {device name: config updates}."""

    def __init__(
        self, config: SessionConfig, workdir: Path, ble: BleMode = "local", tag: str = "sim"
    ) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.ble_mode = ble
        self.tag = tag  # makes in-process link names unique per session
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
        except BaseException:
            self.stop()
            raise
        return endpoints

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
        declare it as every BLE endpoint's `latency_us` (the caliper's link is the same kind)."""
        emg = next(
            (d for d in self.config.devices if isinstance(d, EmgBleConfig) and d.simulator), None
        )
        if emg is None or self._ble_loop is None:
            return
        from needlelab.ble.bumble_backend import forget_local_link
        from needlelab.profiles import load_emg_profile
        from needlelab.sim.emg_sensor import SimulatedEmgSensor
        from needlelab.sim.link_probe import probe_floor

        assert emg.simulator is not None
        quiet = emg.simulator.model_copy(update={"faults": [], "loss": 0.0, "artefacts_from": None})
        link = f"{self.tag}-{emg.name}-probe"
        twin = SimulatedEmgSensor(load_emg_profile(emg.profile), quiet, link, f"Probe-{emg.name}")
        hci = len(self._hci)

        async def serve(sensor: SimulatedEmgSensor) -> str:
            return await self._serve(sensor, f"{emg.name}-probe")

        try:
            self.link_floor = self._ble_loop.run(probe_floor(twin, serve), timeout_s=30)
        finally:
            with contextlib.suppress(Exception):
                self._ble_loop.run(twin.stop(), timeout_s=5)
            for transport in self._hci[hci:]:
                with contextlib.suppress(Exception):
                    self._ble_loop.run(transport.close(), timeout_s=5)
            del self._hci[hci:]
            forget_local_link(link)
            (self.workdir / f"{emg.name}-probe.hci").unlink(missing_ok=True)
        if self.link_floor is None:
            raise RuntimeError("the simulated link's latency probe received no frame")
        for endpoint in endpoints.values():
            if "bumble_transport" in endpoint:
                endpoint["latency_us"] = round(max(self.link_floor.floor_us, 0.0), 1)

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

    def stop(self) -> None:
        """Stop every simulator; safe to call twice."""
        from needlelab.ble.bumble_backend import forget_local_link

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

    def start(self) -> dict[str, dict[str, Any]]:
        """Start the process; the endpoints it printed. Raises `RuntimeError` if it failed."""
        from needlelab.config import config_json

        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._proc = subprocess.Popen(
            [
                sys.executable, "-m", "needlelab.cli", "sim", "session", "-",
                "--ble", "unix", "--workdir", str(self.workdir), "--truth", str(self._truth_path),
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

    def kill(self) -> None:
        """SIGKILL the process, as a crash would end it (fault tests); no truth is written."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def stop(self) -> None:
        """SIGTERM the process, wait, and read its truth file; safe to call twice."""
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
