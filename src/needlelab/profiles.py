"""Driver profiles: TOML files that describe a device model's wire protocol.

A stimulator profile (`StimulatorProfile`) says how bytes are framed (text lines or binary
frames), which read-only queries the driver may send and when, and how each reply or unsolicited
message becomes typed settings (a regex with named groups for lines, a message id and a `struct`
layout for frames; per-field scale, offset, enum map or constant). The driver code is generic;
the profile carries the device's facts. Profiles live in the top-level `drivers/` folder of a
source tree, and in `needlelab/_drivers/` inside an installed wheel; drivers/README.md documents
the format.
"""

from __future__ import annotations

import hashlib
import re
import string
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from needlelab.config import ConfigError, format_validation_error
from needlelab.resources import drivers_dir

ProfileT = TypeVar("ProfileT", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- what a read is, per protocol family ---------------------------------------------------------
# Defined here, in code, and never by a profile: a profile only picks its family, so it cannot
# declare its own notion of "read" (drivers/README.md, "Read-only by grammar").

ASCII_READ_FORM = re.compile(
    r"(?:\*[A-Za-z]{1,8}"  # an IEEE 488.2 common query: *IDN?, *OPC?
    r"|:?[A-Za-z]{1,12}[0-9]{0,3}(?::[A-Za-z]{1,12}[0-9]{0,3})*)"  # STAT?, MEAS:CURR?, S1?
    r"\?"  # the command word ends in '?': what makes it a query
    r"(?: [A-Za-z0-9.+-]{1,16}(?:,[A-Za-z0-9.+-]{1,16})*)?"  # arguments: STAT? 1, X? 1,2
)
"""The line family's read form, matched against a whole line (without its ending), ASCII only.

A command word (`*` and 1-8 letters, or 1-12 letters and up to 3 digits, `:`-separated levels)
that ends in `?`, then optionally one space and comma-separated arguments of letters, digits,
`.`, `+`, `-`. Nothing else: no `;` (a second command), no `=`, no other spaces or control
characters."""

FRAME_READ_IDS = range(0x01, 0x40)
"""The frame family's read command ids (0x01-0x3F): requests and the unit's replies to them."""

FRAME_WRITE_IDS = range(0x40, 0x80)
"""The frame family's write command ids (0x40-0x7F): commands that change a unit's state.
0x00 and 0x80-0xFF are reserved; only ids in `FRAME_READ_IDS` are reads."""

FRAME_START, FRAME_STOP, FRAME_ESCAPE, FRAME_ESCAPE_XOR = 0xF0, 0x0F, 0x81, 0x55
_FRAME_BYTES = {
    "start": FRAME_START,
    "stop": FRAME_STOP,
    "escape": FRAME_ESCAPE,
    "escape_xor": FRAME_ESCAPE_XOR,
}
# The frame family's framing bytes are fixed, so a frame means the same to the unit and to the
# read check: with other framing bytes a read's data could carry a raw write frame unstuffed.


class LineFraming(_Strict):
    """Text lines: one message per line."""

    type: Literal["line"]
    line_ending: Literal["\n", "\r\n", "\r"] = "\n"
    encoding: Literal["ascii", "utf-8", "latin-1"] = "ascii"
    max_line_bytes: int = Field(256, ge=8, le=65536)

    def read_error(self, payload: bytes) -> str | None:
        """Why a line (without its ending) is not a read of the line family; None if it is."""
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            return "not ASCII"
        if ASCII_READ_FORM.fullmatch(text) is None:
            return (
                "not a read: a line query is one command word ending in '?' and its arguments "
                "(e.g. '*IDN?', 'STAT? 1'; drivers/README.md, \"Read-only by grammar\")"
            )
        return None


class FrameFraming(_Strict):
    """Binary frames: start byte, stuffed payload + CRC, stop byte (ScienceMode style)."""

    type: Literal["frame"]
    start: int = FRAME_START
    stop: int = FRAME_STOP
    escape: int = FRAME_ESCAPE
    escape_xor: int = FRAME_ESCAPE_XOR
    crc: Literal["crc16-ccitt-false"] = "crc16-ccitt-false"
    max_packet_bytes: int = Field(69, ge=5, le=4096)

    @field_validator("start", "stop", "escape", "escape_xor")
    @classmethod
    def _family_bytes(cls, value: int, info: ValidationInfo) -> int:
        family = _FRAME_BYTES[str(info.field_name)]
        if value != family:
            raise ValueError(
                f"must be 0x{family:02X}: the frame family's framing bytes are fixed "
                f"(start 0x{FRAME_START:02X}, stop 0x{FRAME_STOP:02X}, escape "
                f"0x{FRAME_ESCAPE:02X}, escape_xor 0x{FRAME_ESCAPE_XOR:02X})"
            )
        return value

    def worst_case_bytes(self, payload_bytes: int) -> int:
        """The longest a frame with this payload can be on the wire (every byte stuffed)."""
        return 2 + 2 * (payload_bytes + 2)

    @staticmethod
    def read_error(payload: bytes) -> str | None:
        """Why a frame payload (id + data) is not a read of the frame family; None if it is."""
        if not payload:
            return "empty"
        if payload[0] not in FRAME_READ_IDS:
            kind = "a write" if payload[0] in FRAME_WRITE_IDS else "a reserved"
            return (
                f"not a read: id 0x{payload[0]:02X} is {kind} command id; reads are "
                f"0x{FRAME_READ_IDS[0]:02X}-0x{FRAME_READ_IDS[-1]:02X} "
                '(drivers/README.md, "Read-only by grammar")'
            )
        return None


class Transport(_Strict):
    """Serial settings and the framing of messages."""

    baudrate: int = Field(115200, ge=300, le=12_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    # The modem control lines, set before the port opens and on every reopen. Off by default:
    # a reader has nothing to signal, and some units reset or change state when DTR rises.
    dtr: bool = False
    rts: bool = False
    latency_ns: int = Field(0, ge=0, le=1_000_000_000)  # known host latency of a message
    framing: Annotated[LineFraming | FrameFraming, Field(discriminator="type")]


class Query(_Strict):
    """A read-only query the driver may send: the only bytes it ever writes.

    `send` is text for line framing (the line ending is added) or hex for frame framing (the
    payload: message id + data; the frame, stuffing and CRC are added). `{channel}` (text) or
    `{channel:02x}` (hex) is filled per channel when `per_channel` is true.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    send: str = Field(min_length=1, max_length=200)
    when: Literal["connect", "poll"]
    every_ms: int | None = Field(None, ge=20, le=600_000)
    per_channel: bool = False

    @field_validator("send")
    @classmethod
    def _only_channel_placeholder(cls, value: str) -> str:
        try:
            value.format(channel=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"the only placeholder allowed is {{channel}} (or {{channel:02x}}): {exc!r}"
            ) from None
        return value

    @model_validator(mode="after")
    def _poll_has_period(self) -> Query:
        if self.when == "poll" and self.every_ms is None:
            raise ValueError("a poll query needs every_ms")
        return self

    def text(self, channel: int = 1) -> str:
        """`send` with the channel filled in (text for lines, hex for frames)."""
        return self.send.format(channel=channel)


QUERY_CHANNELS = range(1, 17)
"""Every channel a query may be filled in for (what a session config allows)."""


def _query_is_a_read(query: Query, info: ValidationInfo) -> Query:
    """Refuse a query that is not a read of its profile's protocol family, on any channel."""
    transport = info.data.get("transport")
    if not isinstance(transport, Transport):
        return query  # the transport's own error is reported
    framing = transport.framing
    for channel in QUERY_CHANNELS if query.per_channel else [1]:
        text = query.text(channel)
        where = f" (on channel {channel}: {text!r})" if channel > 1 else ""
        if isinstance(framing, LineFraming):
            if not text.isascii():  # the read form is ASCII, whatever the line encoding
                raise ValueError(f"query {query.name!r}: send = {query.send!r} is not ASCII")
            payload = text.encode("ascii")
        else:
            try:
                payload = bytes.fromhex(text)
            except ValueError:
                raise ValueError(
                    f"query {query.name!r}: send = {query.send!r}{where} must be hex "
                    '(e.g. "10{channel:02x}") for frame framing'
                ) from None
        why = framing.read_error(payload)
        if why is not None:
            raise ValueError(f"query {query.name!r}: send = {query.send!r}{where} is {why}")
    return query


class FieldRule(_Strict):
    """How one raw field becomes a typed value: `value * scale + offset`, a lookup, or a constant.

    `const` is for what a device does not report (a single-channel unit's channel number, a
    fixed waveform): the field is not on the wire and always takes `value`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["int", "float", "str", "bool", "enum", "const"] = "float"
    scale: float = 1.0
    offset: float = 0.0
    map: dict[str, str] = Field(default_factory=dict)  # enum: raw text/number -> name
    true: list[str] = Field(default_factory=lambda: ["1", "ON", "on", "true"], min_length=1)
    false: list[str] = Field(default_factory=lambda: ["0", "OFF", "off", "false"], min_length=1)
    value: str | int | float | bool | None = None  # const only

    @model_validator(mode="after")
    def _consistent(self) -> FieldRule:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.type == "enum" and not self.map:
            raise ValueError("an enum field needs a 'map' of raw values to names")
        if (self.type == "const") != (self.value is not None):
            raise ValueError("'value' is for (and required by) type 'const'")
        return self

    @property
    def on_wire(self) -> bool:
        """Whether the field is read from the message (every type but `const`)."""
        return self.type != "const"

    def convert(self, raw: str | bytes | int | float | None) -> Any:
        """Convert a raw field; raises ValueError/KeyError on a value the rule cannot take."""
        if self.type == "const":
            return self.value
        if raw is None:
            raise ValueError("missing field")
        if isinstance(raw, bytes):  # fixed-size text in a binary layout, NUL-padded
            raw = raw.rstrip(b"\0").decode("ascii")
        if self.type == "enum":
            return self.map[str(raw)]
        if self.type == "bool":
            text = str(raw)
            if text in self.true:
                return True
            if text in self.false:
                return False
            raise ValueError(f"{text!r} is neither true {self.true} nor false {self.false}")
        if self.type == "str":
            return str(raw)
        number = float(raw) * self.scale + self.offset
        if self.type == "int":
            return round(number)
        # 373 * 0.1 is 37.300000000000004: round away the scaling error, not the resolution.
        return round(number, 9) if self.scale != 1.0 else number


SETTINGS_FIELDS = (
    "channel",
    "frequency_hz",
    "pulse_width_us",
    "intensity_ma",
    "waveform",
    "mode",
    "output_on",
)


class Message(_Strict):
    """A message the device sends: a reply or an unsolicited change.

    Line framing: `match` is a regex whose named groups are the fields. Frame framing: `id` is the
    message id byte and `layout` a `struct` format of the data after it, whose values are the
    `fields` in order. `format` (line) is how the simulator writes the message.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["settings", "identity"] = "settings"
    match: str | None = None
    format: str | None = None
    id: int | None = Field(None, ge=0, le=255)
    layout: str | None = None
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    @field_validator("match")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("layout")
    @classmethod
    def _layout_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                struct.calcsize(value)
            except struct.error as exc:
                raise ValueError(f"not a valid struct layout: {exc}") from None
        return value

    @property
    def wire_fields(self) -> list[str]:
        """The fields carried by the message, in order (all but the `const` ones)."""
        return [name for name, rule in self.fields.items() if rule.on_wire]

    @model_validator(mode="after")
    def _fields_cover_settings(self) -> Message:
        if self.kind == "settings":
            missing = [f for f in SETTINGS_FIELDS if f not in self.fields]
            if missing:
                raise ValueError(f"a settings message needs rules for {missing}")
        wire = self.wire_fields
        if self.layout is not None and len(
            struct.unpack(self.layout, bytes(struct.calcsize(self.layout)))
        ) != len(wire):
            raise ValueError(
                f"layout {self.layout!r} and the non-const fields {wire} must have the same "
                "number of values"
            )
        if self.match is not None:
            groups = re.compile(self.match).groupindex
            missing = [f for f in wire if f not in groups]
            if missing:
                raise ValueError(f"'match' has no named group for fields {missing}")
        if self.format is not None:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(self.format) if f}
            except ValueError as exc:
                raise ValueError(f"'format' is not a valid format string: {exc}") from None
            unknown = sorted(names - set(wire))
            if unknown:
                raise ValueError(f"'format' names {unknown}, which are not non-const fields")
        return self


class StimulatorProfile(_Strict):
    """A stimulator model's wire protocol, as a driver profile."""

    profile: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    device_type: Literal["stimulator"]
    description: str = ""
    transport: Transport
    # Every query is checked against its family's read form (after `transport`, which it needs).
    queries: list[Annotated[Query, AfterValidator(_query_is_a_read)]] = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)

    @model_validator(mode="after")
    def _messages_fit_framing(self) -> StimulatorProfile:
        framing = self.transport.framing
        for kind, names in (
            ("query", [q.name for q in self.queries]),
            ("message", [m.name for m in self.messages]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{kind} names must be unique; used twice: {twice}")
        if isinstance(framing, LineFraming):
            for m in self.messages:
                if m.match is None:
                    raise ValueError(f"message {m.name!r}: line framing needs 'match'")
            for q in self.queries:
                wire = q.text(16).encode(framing.encoding, errors="replace")
                if framing.line_ending.encode() in wire or len(wire) > framing.max_line_bytes:
                    raise ValueError(
                        f"query {q.name!r}: 'send' must be one line of at most "
                        f"{framing.max_line_bytes} bytes"
                    )
            return self
        ids = [m.id for m in self.messages]
        twice_ids = sorted({hex(i) for i in ids if i is not None and ids.count(i) > 1})
        if twice_ids:
            raise ValueError(f"message ids must be unique; used twice: {twice_ids}")
        for m in self.messages:
            if m.id is None or m.layout is None:
                raise ValueError(f"message {m.name!r}: frame framing needs 'id' and 'layout'")
            worst = framing.worst_case_bytes(1 + struct.calcsize(m.layout))
            if worst > framing.max_packet_bytes:
                raise ValueError(
                    f"message {m.name!r}: up to {worst} bytes on the wire, more than "
                    f"max_packet_bytes {framing.max_packet_bytes}"
                )
        for q in self.queries:  # hex and a read on every channel: checked per query above
            payload = bytes.fromhex(q.text(16 if q.per_channel else 1))
            if framing.worst_case_bytes(len(payload)) > framing.max_packet_bytes:
                raise ValueError(f"query {q.name!r}: longer than max_packet_bytes")
        return self


def find_profile(name_or_path: str | Path) -> Path:
    """The file of a shipped profile name, or the given path if it is a file."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if path.is_file():
            return path
        raise ConfigError([f"{path}: no such profile file"])
    shipped = drivers_dir() / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in drivers_dir().glob("*.toml"))
    raise ConfigError([f"{name_or_path}: no such driver profile; shipped profiles: {known}"])


@dataclass(frozen=True)
class ProfileFile:
    """Where a loaded profile came from: its file and the SHA-256 of the file's bytes."""

    path: Path
    sha256: str


def read_profile(name_or_path: str | Path, model: type[ProfileT]) -> tuple[ProfileT, ProfileFile]:
    """Load and validate a profile by shipped name or path, with the file it came from (hashed
    from the very bytes that were parsed); ConfigError on problems."""
    path = find_profile(name_or_path)
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    try:
        profile = model.model_validate(data)
    except ValidationError as exc:
        # pydantic puts the framing's union tag in the field path ("framing.line.max_line_bytes");
        # the author wrote "framing.max_line_bytes".
        lines = [
            re.sub(r"\.framing\.(line|frame)\b", ".framing", line)
            for line in format_validation_error(str(path), exc)
        ]
        raise ConfigError(lines) from None
    return profile, ProfileFile(path, hashlib.sha256(raw).hexdigest())


def load_profile(name_or_path: str | Path, model: type[ProfileT]) -> ProfileT:
    """Load and validate a profile by shipped name or path; ConfigError on problems."""
    return read_profile(name_or_path, model)[0]


def load_stim_profile(name_or_path: str | Path) -> StimulatorProfile:
    """Load a stimulator profile by shipped name or path."""
    return load_profile(name_or_path, StimulatorProfile)


_FIELD_NAME = r"^[a-z][a-z0-9_]{0,31}$"


def _hex_bytes(value: str) -> str:
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{value!r} is not hex bytes") from None
    if not 1 <= len(data) <= 20:  # one ATT write without long-write support: at most 20 bytes
        raise ValueError(f"{value!r}: {len(data)} bytes, not 1-20")
    return value


class BleWrite(_Strict):
    """A command written once on every connect (the Myo's never-sleep), after `start_payload`."""

    name: str = Field(pattern=_FIELD_NAME)
    characteristic: str
    payload: Annotated[str, AfterValidator(_hex_bytes)]


class BleInfo(_Strict):
    """A readable characteristic of device facts, read on every connect: its bytes unpacked with
    a little-endian `struct` layout into the named fields (an `Ns` field is stored as hex)."""

    name: str = Field(pattern=_FIELD_NAME)
    characteristic: str
    layout: str
    fields: list[Annotated[str, Field(pattern=_FIELD_NAME)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _layout_fits_fields(self) -> BleInfo:
        if not self.layout.startswith("<"):
            raise ValueError(f"info {self.name!r}: layout must be little-endian (start with '<')")
        try:
            items = len(struct.unpack(self.layout, bytes(struct.calcsize(self.layout))))
        except struct.error as exc:
            raise ValueError(
                f"info {self.name!r}: bad struct layout {self.layout!r}: {exc}"
            ) from None
        if items != len(self.fields):
            raise ValueError(
                f"info {self.name!r}: layout {self.layout!r} has {items} values "
                f"but {len(self.fields)} fields are named"
            )
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"info {self.name!r}: field names repeat")
        return self

    def unpack(self, data: bytes) -> dict[str, int | str]:
        """The fields of a read value (`struct.error` if its length is not the layout's)."""
        values = struct.unpack(self.layout, data)
        return {
            name: v.hex() if isinstance(v, bytes) else v
            for name, v in zip(self.fields, values, strict=True)
        }


class BleGatt(_Strict):
    """Where a BLE sensor's data and facts live in its GATT table."""

    service: str
    data: list[str] = Field(min_length=1, max_length=8)  # notify characteristics, in turn order
    battery: str | None = None  # a readable characteristic with one byte of percent
    battery_poll_s: float = Field(60.0, ge=0.2, le=3600)  # re-read this often (and on notify)
    control_service: str | None = None  # the service of the commands and info (else `service`)
    start_write: str | None = None  # characteristic that starts streaming (Myo set-mode)
    start_payload: Annotated[str, AfterValidator(_hex_bytes)] | None = None  # written on connect
    writes: list[BleWrite] = Field(default_factory=list, max_length=8)  # after start_payload
    info: list[BleInfo] = Field(default_factory=list, max_length=8)  # read on connect

    @model_validator(mode="after")
    def _names_unique(self) -> BleGatt:
        for what, names in (
            ("writes", [w.name for w in self.writes]),
            ("info", [i.name for i in self.info]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"gatt.{what}: names repeat: {names}")
        if (self.start_write is None) != (self.start_payload is None):
            raise ValueError("gatt: start_write and start_payload go together")
        return self


class EmgFrame(_Strict):
    """How notifications become samples."""

    format: Literal["needlelab-ref", "myo-raw", "ascii-value"]
    channels: int = Field(ge=1, le=64)
    rate_hz: float = Field(gt=0, le=20_000)
    samples_per_frame: int = Field(1, ge=1, le=255)
    scale_uv: float = Field(1.0, gt=0)  # µV per count (or `unit` per count)
    unit: str = Field("uV", pattern=r"^(uV|mV|au)$")  # "au": uncalibrated device units
    counter_bits: Literal[0, 8, 16, 32] = 0  # 0: the device has no sequence counter
    device_clock_bits: Literal[0, 32] = 0  # µs device clock in each frame (0: none)


class EmgProfile(_Strict):
    """A BLE surface-EMG sensor: GATT layout and frame format."""

    profile: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    device_type: Literal["emg"]
    description: str = ""
    latency_ns: int = Field(0, ge=0)  # the floor of host arrival latency
    gatt: BleGatt
    frame: EmgFrame


def load_emg_profile(name_or_path: str | Path) -> EmgProfile:
    """Load an EMG sensor profile by shipped name or path."""
    return load_profile(name_or_path, EmgProfile)


class CaliperFrame(_Strict):
    """How caliper notifications become readings."""

    format: Literal["sylvac-simple", "needlelab-caliper"]
    scale_mm: float = Field(gt=0)  # millimetres per count


class CaliperProfile(_Strict):
    """A BLE digital caliper: GATT layout and reading format."""

    profile: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    device_type: Literal["caliper"]
    description: str = ""
    latency_ns: int = Field(0, ge=0)
    gatt: BleGatt
    frame: CaliperFrame


def load_caliper_profile(name_or_path: str | Path) -> CaliperProfile:
    """Load a caliper profile by shipped name or path."""
    return load_profile(name_or_path, CaliperProfile)


PROFILE_MODELS: dict[str, type[StimulatorProfile | EmgProfile | CaliperProfile]] = {
    "stimulator": StimulatorProfile,
    "emg": EmgProfile,
    "caliper": CaliperProfile,
}
"""The profile model of each `device_type`."""


def load_any_profile(
    path: str | Path, device_type: object
) -> StimulatorProfile | EmgProfile | CaliperProfile:
    """Load a profile file whose `device_type` was read from it; ConfigError on problems, one of
    them a device type that is not known."""
    model = PROFILE_MODELS.get(str(device_type))
    if model is None:
        raise ConfigError(
            [f"{path}: device_type: {device_type!r} is not one of {sorted(PROFILE_MODELS)}"]
        )
    return load_profile(path, model)
