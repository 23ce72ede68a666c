"""Session configuration: strict pydantic models, loaded from TOML with one-line errors."""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PATIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
"""Pseudonymous patient ids: short, no spaces, no path separators (they end up in file names)."""

DEVICE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


# Which floor of a stream's arrivals its latency is above: "least" (the lowest of all: a radio's
# or a UART's floor is sharp) or "typical" (a low quantile of 100 ms stretches' lowest, for a
# link whose floor moves with the machine's load, as a simulated radio's does; calibrate it
# with the same statistic). See needlelab.clock.typical_floor.
LatencyFloor = Literal["least", "typical"]


class ConfigError(Exception):
    """A config could not be loaded. `lines` holds one human-readable line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _pyserial_url_schemes() -> list[str]:
    """The URL schemes pyserial's `serial_for_url` knows (its `serial.urlhandler` modules)."""
    import serial.urlhandler

    return sorted(
        m.name.removeprefix("protocol_")
        for m in pkgutil.iter_modules(serial.urlhandler.__path__)
        if m.name.startswith("protocol_")
    )


def port_problem(port: str) -> str | None:
    """What is wrong with a serial port's syntax, or None: a device path (whether it exists is
    only known once the unit is plugged in) or a pyserial URL (`socket://HOST:PORT`, `loop://`,
    `spy://PORT`, ...). Nothing is opened."""
    if not port.strip():
        return "empty; give a device path (/dev/ttyUSB0, COM3) or a pyserial URL"
    if "://" not in port:
        return None
    scheme = port.split("://", 1)[0].lower()
    known = _pyserial_url_schemes()
    if scheme not in known:
        return f"unknown port URL scheme {scheme!r}; pyserial knows: {', '.join(known)}"
    parts = urlsplit(port)
    if scheme in ("socket", "rfc2217"):
        try:
            number = parts.port
        except ValueError:  # not a number, or out of 0-65535
            number = None
        if not parts.hostname or number is None:
            return f"expected {scheme}://HOST:PORT with PORT 0-65535"
    if scheme in ("spy", "alt"):  # wrappers around another port
        inner = parts.netloc + parts.path
        if not inner:
            return f"expected {scheme}://PORT (a device path or another URL)"
        return port_problem(inner)
    return None


# bumble.transport.open_transport's schemes (bumble 0.0.236; it keeps no list to import), and
# those of them that need parameters after the colon.
BUMBLE_SCHEMES = (
    "android-emulator", "android-netsim", "file", "hci-socket", "pty", "pyusb", "serial",
    "tcp-client", "tcp-server", "udp", "unix", "unix-client", "unix-server", "usb", "vhci",
    "ws-client", "ws-server",
)  # fmt: skip
_BUMBLE_NEEDS_PARAMETERS = frozenset(BUMBLE_SCHEMES) - {
    "android-emulator", "android-netsim", "hci-socket", "pty", "vhci",
}  # fmt: skip


def bumble_transport_problem(spec: str) -> str | None:
    """What is wrong with a bumble transport spec's syntax, or None. `local:NAME` is needlelab's
    in-process link; anything else is bumble's `SCHEME[:[METADATA]PARAMETERS]`. Nothing is
    opened."""
    expected = (
        "allowed: local:NAME, unix:PATH, tcp-client:HOST:PORT or another bumble transport ("
        + ", ".join(BUMBLE_SCHEMES)
        + ")"
    )
    scheme, _, rest = spec.partition(":")
    if scheme == "local":
        return None if rest else f"{expected}: local needs a NAME"
    if scheme not in BUMBLE_SCHEMES:
        return f"unknown transport scheme {scheme!r}; {expected}"
    rest = re.sub(r"^\[[^\]]*\]", "", rest)  # bumble's optional [key=value,...] metadata
    if scheme in _BUMBLE_NEEDS_PARAMETERS and not rest:
        return f"{scheme} needs parameters after '{scheme}:'; {expected}"
    if scheme in ("tcp-client", "tcp-server"):
        host, _, number = rest.rpartition(":")
        if not host or not re.fullmatch(r"[0-9]{1,5}", number) or int(number) > 65535:
            return f"expected {scheme}:HOST:PORT with PORT 0-65535"
    return None


class SessionSection(_Strict):
    """Who and where: the pseudonymous patient id and the output folder."""

    patient_id: str = Field(pattern=PATIENT_ID_PATTERN)
    out_dir: Path = Path("recordings")
    commit_interval_ms: int = Field(50, ge=10, le=100)
    operator: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9 ._-]*$")
    # The protocol template the session follows: a shipped name or a .toml path.
    protocol: str | None = Field(None, pattern=r"^([a-z0-9][a-z0-9_.-]{0,63}|.+\.toml)$")
    notes: str = Field("", max_length=2000)
    # The mains frequency where the session is recorded (Hz): BIDS `PowerLineFrequency`.
    power_line_hz: Literal[50, 60] | None = None


class FaultSpec(_Strict):
    """A fault the simulator injects: at `at_s` after a recorder first reached it (a BLE
    simulator: a central connected; a stimulator: its first query), repeated every `every_s` if
    set."""

    kind: Literal["garbage", "truncate", "stall", "disconnect", "duplicate"]
    at_s: float = Field(ge=0)
    every_s: float | None = Field(None, gt=0)
    count: int = Field(1, ge=1, le=1_000_000)  # messages cut or sent twice, or bytes of garbage
    duration_s: float = Field(0.0, ge=0, le=600)  # stall / disconnect length


class StimSimulatorConfig(_Strict):
    """Serve a simulated stimulator for this device on a pseudo-terminal or loopback TCP."""

    transport: Literal["pty", "tcp"] = "pty"
    pattern: Literal["clinical", "random"] = "clinical"
    seed: int = 0
    faults: list[FaultSpec] = Field(default_factory=list)
    # On: the output stays off until the simulator's control channel switches it on (the demo's
    # simulated clinician, `SimulatorSet.control`), runs `pattern` while on, off when told.
    control: bool = False


class DeviceBase(_Strict):
    """Fields every device has."""

    name: str = Field(pattern=DEVICE_NAME_PATTERN)
    stall_timeout_s: float = Field(2.0, ge=0.2, le=60)
    reconnect_min_s: float = Field(0.2, ge=0.01, le=60)
    reconnect_max_s: float = Field(5.0, ge=0.1, le=600)


class StimSerialConfig(DeviceBase):
    """A stimulator (or bridge) that reports its settings over a serial link."""

    kind: Literal["stim_serial"]
    # A shipped profile name, or the path of a profile file (for profile authors).
    profile: str = Field(pattern=r"^([a-z0-9][a-z0-9_.-]{0,63}|.+\.toml)$")
    port: str | None = None  # a device path or a pyserial URL (socket://, loop://, spy://)
    poll_interval_ms: int | None = Field(None, ge=20, le=60_000)
    # The unit's channels to record: 1-16, as every stimulator settings record is numbered.
    channels: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=lambda: [1], min_length=1, max_length=16
    )
    simulator: StimSimulatorConfig | None = None

    @field_validator("port")
    @classmethod
    def _port_syntax(cls, value: str | None) -> str | None:
        problem = None if value is None else port_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("channels")
    @classmethod
    def _channels_once(cls, value: list[int]) -> list[int]:
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"channels {twice} are listed twice; list each channel once")
        return value

    @model_validator(mode="after")
    def _port_or_simulator(self) -> StimSerialConfig:
        if (self.port is None) == (self.simulator is None):
            raise ValueError("give exactly one of 'port' (real device) or [simulator] (simulated)")
        return self


class StimManualConfig(DeviceBase):
    """A stimulator with no data port: the clinician enters its settings by hand."""

    kind: Literal["stim_manual"]
    channels: int = Field(1, ge=1, le=4)


class EmgSimulatorConfig(_Strict):
    """Serve a simulated BLE EMG sensor in-process (a bumble peripheral on a local link)."""

    seed: int = 0
    # The sensor crystal's rate error: positive runs fast (more samples per true second).
    drift_ppm: float = Field(0.0, ge=-1000, le=1000)
    jitter_ms: float = Field(0.0, ge=0, le=100)  # one-sided arrival jitter
    connection_interval_ms: float = Field(15.0, ge=7.5, le=100)
    loss: float = Field(0.0, ge=0, le=0.5)  # probability a notification is lost
    clock_offset_s: float = Field(0.0, ge=0, le=4000)  # the device clock's reading at start
    # Stimulation artefacts from a simulated stimulator of the same session: its device name.
    artefacts_from: str | None = Field(None, pattern=DEVICE_NAME_PATTERN)
    artefacts_channel: int = Field(1, ge=1, le=16)
    faults: list[FaultSpec] = Field(default_factory=list)
    # A Myo not told never-sleep sleeps (sends nothing) this long after its first connection,
    # as a real one does without motion; None: it never sleeps.
    sleep_after_s: float | None = Field(None, gt=0, le=3600)
    battery_drop_every_s: float | None = Field(None, gt=0, le=3600)  # battery -1 % each time


class BleDeviceConfig(DeviceBase):
    """Fields every Bluetooth LE device has: how to find it and which bleak backend to use."""

    profile: str = Field(pattern=r"^([a-z0-9][a-z0-9_.-]{0,63}|.+\.toml)$")
    address: str | None = None  # the device address (or, on macOS, its UUID)
    advertised_name: str | None = Field(None, min_length=1, max_length=64)
    backend: Literal["native", "bumble"] = "native"
    bumble_transport: str | None = None  # "local:NAME", "tcp-client:127.0.0.1:PORT", "unix:PATH"
    connect_timeout_s: float = Field(10.0, ge=1, le=120)
    # The link's known fixed latency (radio + host stack), subtracted from arrival times before
    # the clock fit: a one-sided fit finds the floor of arrival latency, and this is that floor.
    # Calibrate it once per adapter and device with a stimulation-artefact recording.
    latency_us: float = Field(0.0, ge=0, le=1_000_000)
    latency_floor: LatencyFloor = "least"

    @field_validator("bumble_transport")
    @classmethod
    def _transport_syntax(cls, value: str | None) -> str | None:
        problem = None if value is None else bumble_transport_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def _check_findable(self, simulated: bool) -> None:
        if not simulated:
            if self.address is None and self.advertised_name is None:
                raise ValueError("give 'address' or 'advertised_name' (or a [simulator])")
            if self.backend == "bumble" and self.bumble_transport is None:
                raise ValueError("backend 'bumble' needs 'bumble_transport'")


class HardwareFilters(_Strict):
    """The filters a sensor applies before it sends (from its data sheet): BIDS
    `HardwareFilters`."""

    highpass_hz: float | None = Field(None, gt=0, le=10_000)
    lowpass_hz: float | None = Field(None, gt=0, le=100_000)
    notch_hz: float | None = Field(None, gt=0, le=1000)


class EmgBleConfig(BleDeviceConfig):
    """A surface-EMG sensor over Bluetooth LE, read with bleak."""

    kind: Literal["emg_ble"]
    muscle: str = Field("", max_length=64)  # e.g. "L3 multifidus right": names the channels
    # How the electrodes are referenced, e.g. "bipolar, 20 mm inter-electrode distance":
    # BIDS `EMGReference`.
    reference: str = Field("", max_length=200, pattern=r"^[A-Za-z0-9 ,.;:()/+_-]*$")
    hardware_filters: HardwareFilters | None = None
    simulator: EmgSimulatorConfig | None = None

    @model_validator(mode="after")
    def _findable(self) -> EmgBleConfig:
        self._check_findable(self.simulator is not None)
        return self


class CaliperSimulatorConfig(_Strict):
    """Serve a simulated BLE caliper in-process: a TPD session's distances and button presses."""

    seed: int = 0
    press_every_s: float = Field(1.5, gt=0.05, le=60)
    faults: list[FaultSpec] = Field(default_factory=list)
    # On: no presses of its own; it presses the distances its control channel sends (the demo's
    # simulated clinician setting each TPD trial's distance), and `press_every_s` is unused.
    control: bool = False


class CaliperBleConfig(BleDeviceConfig):
    """A digital caliper over Bluetooth LE (two-point discrimination distances)."""

    kind: Literal["caliper_ble"]
    simulator: CaliperSimulatorConfig | None = None

    @model_validator(mode="after")
    def _findable(self) -> CaliperBleConfig:
        self._check_findable(self.simulator is not None)
        return self


class LslInletConfig(DeviceBase):
    """Record a Lab Streaming Layer stream another program publishes (an EEG amplifier, a task
    on another machine), found by its name, type or source_id; its time stamps are mapped onto
    the session clock with LSL's time correction."""

    kind: Literal["lsl_inlet"]
    stream_name: str | None = None
    stream_type: str | None = None
    source_id: str | None = None
    resolve_timeout_s: float = Field(5.0, gt=0, le=120)

    @model_validator(mode="after")
    def _findable(self) -> LslInletConfig:
        if not (self.stream_name or self.stream_type or self.source_id):
            raise ValueError("give stream_name, stream_type or source_id to find the stream")
        return self


DeviceConfig = Annotated[
    StimSerialConfig | StimManualConfig | EmgBleConfig | CaliperBleConfig | LslInletConfig,
    Field(discriminator="kind"),
]
"""Any device config, discriminated on `kind`."""

DEVICE_KINDS = frozenset(
    get_args(model.model_fields["kind"].annotation)[0]
    for model in get_args(get_args(DeviceConfig)[0])
)
"""Every `kind` a device config may have."""


LUMBAR_LEVELS = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]
DEFAULT_DESCRIPTORS = [
    "sharp", "dull", "ache", "tingling", "pressure", "electric", "warmth", "spreading",
]  # fmt: skip
MAX_LEVELS = 10  # one key each: 1-9 and 0
MAX_DESCRIPTORS = 12  # one key each: F1-F12


class LocalizationConfig(_Strict):
    """What the clinician picks from when logging needle sites and localization answers.

    Each region is an ordered list of levels, cranial to caudal: level errors are counted in
    steps of that list. A region has at most 10 levels, so each is one key (1-9, 0).
    """

    regions: dict[str, list[str]] = Field(default_factory=lambda: {"lumbar": list(LUMBAR_LEVELS)})
    region: str = "lumbar"  # the session's region
    muscles: list[str] = Field(
        default_factory=lambda: ["multifidus", "erector spinae", "quadratus lumborum"]
    )
    descriptors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DESCRIPTORS), max_length=MAX_DESCRIPTORS
    )

    @model_validator(mode="after")
    def _levels_fit_the_keys(self) -> LocalizationConfig:
        if self.region not in self.regions:
            raise ValueError(f"region {self.region!r} is not one of {sorted(self.regions)}")
        for name, levels in self.regions.items():
            if not 1 <= len(levels) <= MAX_LEVELS or len(set(levels)) != len(levels):
                raise ValueError(
                    f"region {name!r} needs 1 to {MAX_LEVELS} distinct levels (one key each); "
                    "split a longer region in two"
                )
        return self

    @property
    def levels(self) -> list[str]:
        """The session region's levels."""
        return self.regions[self.region]


PEDAL_KEYS_ALLOWED = (
    "F13-F24, PageUp, PageDown, Home, End, Insert or Pause, alone or with Ctrl+ or Shift+; "
    "or Ctrl+ a letter, digit or F-key (not Ctrl+Z)"
)
_PEDAL_BASE = r"F(?:1[3-9]|2[0-4])|PageUp|PageDown|Home|End|Insert|Pause"
_PEDAL_KEY = re.compile(
    rf"(?:Ctrl\+)?(?:Shift\+)?(?:{_PEDAL_BASE})|Ctrl\+(?:[A-Y0-9]|(?:Shift\+)?F(?:[1-9]|1[0-2]))"
)


def pedal_key_problem(key: str) -> str | None:
    """Why `key` cannot be a pedal key, or None. A pedal key must work whatever has the focus,
    typing included, so it cannot be printable or one of the grammar's own keys (letters,
    digits, Space, Return, Escape, Tab, F1-F12, Alt+ anything, Ctrl+Z, Ctrl+Return)."""
    if _PEDAL_KEY.fullmatch(key):
        return None
    return f"{key!r} cannot be a pedal key (the answer grammar or typing uses it)"


class MonitorKeys(_Strict):
    """`[monitor.keys]`: more keys for the localization's actions, most often a USB foot pedal's
    (pedals send the keystrokes they are set to send). Each works wherever the focus is,
    besides the grammar's own key (Space, Return, Ctrl+Return, Ctrl+Z)."""

    prompt: list[str] = Field(default_factory=lambda: ["F13"])
    commit: list[str] = Field(default_factory=lambda: ["F14"])
    correct: list[str] = Field(default_factory=list)
    undo: list[str] = Field(default_factory=list)

    @field_validator("prompt", "commit", "correct", "undo")
    @classmethod
    def _pedal_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            problem = pedal_key_problem(key)
            if problem:
                raise ValueError(f"{problem}; allowed: {PEDAL_KEYS_ALLOWED}")
        return keys

    @model_validator(mode="after")
    def _one_action_per_key(self) -> MonitorKeys:
        seen: dict[str, str] = {}
        for action in ("prompt", "commit", "correct", "undo"):
            for key in getattr(self, action):
                if key in seen:
                    raise ValueError(f"{key!r} is given to {seen[key]} and to {action}: one each")
                seen[key] = action
        return self


class MonitorConfig(_Strict):
    """The live monitor's defaults."""

    window_s: float = Field(10.0, ge=1, le=120)  # rolling window of the traces
    refresh_hz: float = Field(60.0, ge=5, le=120)
    rms: bool = False  # RMS envelope over the traces
    keys: MonitorKeys = Field(default_factory=MonitorKeys)


class LslConfig(_Strict):
    """Lab Streaming Layer outlets: off unless enabled; this machine only unless shared."""

    enabled: bool = False
    # On: liblsl's default network settings, every interface; patient data on the LAN.
    share_on_lan: bool = False
    # A regular stream's samples wait this long before they are published, so the clock model
    # that stamps them has the arrivals around them, not only those before (the file keeps the
    # model it published; a longer wait, closer to the full fit's times).
    delay_s: float = Field(1.0, ge=0, le=10)


class SessionConfig(_Strict):
    """A whole session: who, where, which devices, and what the clinician logs."""

    session: SessionSection
    devices: list[DeviceConfig] = Field(default_factory=list)
    localization: LocalizationConfig = Field(default_factory=LocalizationConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    lsl: LslConfig = Field(default_factory=LslConfig)

    @model_validator(mode="after")
    def _unique_device_names(self) -> SessionConfig:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"device name {device.name!r} is used twice; names must be unique")
            seen.add(device.name)
        return self

    @model_validator(mode="after")
    def _artefact_sources_exist(self) -> SessionConfig:
        simulated_stims = {
            d.name for d in self.devices if isinstance(d, StimSerialConfig) and d.simulator
        }
        for device in self.devices:
            if not isinstance(device, EmgBleConfig) or device.simulator is None:
                continue
            source = device.simulator.artefacts_from
            if source is not None and source not in simulated_stims:
                raise ValueError(
                    f"{device.name}: artefacts_from {source!r} must name a simulated stimulator "
                    f"of this session (one of: {', '.join(sorted(simulated_stims)) or 'none'})"
                )
        return self


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in DEVICE_KINDS or "[" in str(part):
            continue  # pydantic puts the union tag in the path; the user never wrote it
        else:
            path += f".{part}" if path else str(part)
    return path or "(whole file)"


_PATTERN_WORDS = {
    PATIENT_ID_PATTERN: "1-32 letters, digits, '_' or '-', starting with a letter or digit "
    "(a pseudonymous id, never a name)",
    DEVICE_NAME_PATTERN: "1-32 lower-case letters, digits or '_', starting with a letter",
}


def _message(err: Any) -> str:
    """pydantic's message, with the allowed values said once and in the user's terms."""
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; unknown fields are not allowed)"
    if kind == "missing":
        return "missing (required)"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"not allowed; allowed: {_PATTERN_WORDS.get(pattern, f'text matching {pattern}')}"
    if kind == "union_tag_invalid":
        return f"unknown kind; allowed: {ctx.get('expected_tags')}"
    if kind == "path_type":
        return "must be a folder path (text)"
    msg = msg.removeprefix("Value error, ")
    for key in ("expected", "expected_tags"):
        if key in ctx and str(ctx[key]) not in msg:
            return f"{msg}; allowed: {ctx[key]}"
    return str(msg)


def format_validation_error(source: str, exc: ValidationError) -> list[str]:
    """Turn a pydantic error into one line per problem: file, field, bad value, what is allowed."""
    lines = []
    for err in exc.errors():
        field = _field_path(tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":
            field += f".{err['ctx']['discriminator'].strip(chr(39))}"
        value = ""
        if err["type"] == "union_tag_invalid":
            value = f" (got {err['ctx']['tag']!r})"
        elif err["type"] != "missing" and not isinstance(err.get("input"), dict | list):
            value = f" (got {err['input']!r})"
        lines.append(f"{source}: {field}: {_message(err)}{value}")
    return lines


def parse_config(data: dict[str, Any], source: str = "<config>") -> SessionConfig:
    """Validate an already-parsed config mapping."""
    try:
        return SessionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's contents; `ConfigError` with one line if it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def load_config(path: str | Path) -> SessionConfig:
    """Load and validate a session config file; relative `out_dir` stays relative to the CWD."""
    return parse_config(read_toml(path), str(path))


def config_json(config: SessionConfig) -> str:
    """The validated config as JSON, for embedding in a recording."""
    return config.model_dump_json()
