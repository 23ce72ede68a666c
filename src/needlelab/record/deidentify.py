"""De-identified views of a session, for sharing: `needlelab export --deidentify`.

`deidentify(session, key)` turns a loaded session into another `LoadedSession` that every
exporter writes as it writes any session, so each format (XDF, EDF+/BDF+, CSV, FIF, BIDS) gets
the same treatment and a new exporter gets it without knowing about it:

- **Patient id**: mapped through the key to a random pseudonym (8 letters and digits, also a
  valid BIDS subject label), the same one every time that patient is exported with that key.
- **Dates**: the session's wall-clock anchor moves by the patient's whole-day shift from the key,
  so every date an exporter derives from it (EDF+ start date, FIF `meas_date`, file names, BIDS
  dates) moves by the same number of days, and every session of that patient by the same
  amount. Time of day is kept, as BIDS recommends (shift dates "without completely removing
  time information, as time information can be useful for research purposes": pain and EMG
  vary over the day); session times (every sample and event) are untouched.
- **Strings**, by what they are (each field is named in `_RULES`): closed values (numbers,
  booleans, literals, ids) are kept; names from the clinic's vocabulary (the config's
  `[localization]` lists and the protocol template's sites, phases, movements) are kept where
  an event uses them, and replaced where a session-time edit put other text in their place;
  short machine names (device and stream names, waveform, LRJ stimulus ids) are kept when they
  are one token; free text in events (markers, response text, reasons, warning messages) is
  replaced by `[removed]` (left empty when it was empty, so a reader still sees where something
  was written), free text of the config and template (operator, notes, the protocol's
  description and note texts) is emptied; what identifies a unit or a place (ports, Bluetooth
  addresses, advertised names, transports, LSL stream names and source ids, `device.info`
  identity and serial fields, file paths) gets a placeholder or is dropped. A field with no
  rule keeps its numbers and literals and loses its text, so a new free-text field is never
  let through.
- Last, any kept string that still holds the original patient id or session date is replaced.

The key file (JSON, owner-only) maps each original patient id to its pseudonym and day shift,
and holds a secret from which de-identified session ids are derived. It is the only link back
to the patients: keep it apart from the exports (`export` refuses to put it inside the export
folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from inspect import isclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from needlelab.config import SessionConfig
from needlelab.events import Event, event_from_row
from needlelab.private import private_dir
from needlelab.record.export import ExportError, LoadedSession, StreamData
from needlelab.record.reader import UnknownEvent
from needlelab.record.writer import session_file_name
from needlelab.streams import StreamSpec

REMOVED = "[removed]"
"""What free text becomes in a de-identified export."""

KEY_FORMAT = "needlelab-deidentify-key"
KEY_VERSION = 1
PSEUDONYM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud safely
PSEUDONYM_LENGTH = 8
# A patient's first exported session lands on a random day in these years. EDF+ holds start
# dates from 1985 to 2084 only, so BIDS's "1925 or earlier" for shifted dates cannot hold for
# EDF; a date in the 1990s can never be a real needlelab recording, and leaves five years of
# room for sessions older than the first one exported.
SHIFT_TARGET = (dt.date(1990, 1, 1), dt.date(1999, 12, 31))
EDF_DATES = (dt.date(1985, 1, 1), dt.date(2084, 12, 31))
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Pseudonym:
    """What the key holds for one patient: the export id and the whole-day date shift."""

    patient_id: str
    shift_days: int


def default_key_path() -> Path:
    """Where the key lives when `--key` is not given: the user's data folder, apart from any
    recording or export (`$XDG_DATA_HOME/needlelab/deidentify-key.json`)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "needlelab" / "deidentify-key.json"


class DeidentifyKey:
    """The key file: original patient id -> pseudonym and day shift, plus the session-id secret.

    Created on first use (0600, its folder 0700); a key that others can read is refused. New
    patients are added under a lock and written atomically, so exports running side by side
    never give one patient two pseudonyms and a crash never leaves half a key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def pseudonym(self, original_id: str, session_date: dt.date) -> Pseudonym:
        """The patient's pseudonym, made (and saved) on first use: a random id, and a shift
        that puts this session on a random day of `SHIFT_TARGET`."""
        with self._locked():
            data = self._read()
            patients: dict[str, Any] = data["patients"]
            if original_id in patients:
                entry = patients[original_id]
                return Pseudonym(entry["id"], entry["shift_days"])
            taken = {p["id"] for p in patients.values()} | set(patients)
            new_id = original_id
            while new_id in taken or new_id == original_id:
                new_id = "".join(
                    secrets.choice(PSEUDONYM_ALPHABET) for _ in range(PSEUDONYM_LENGTH)
                )
            lo, hi = SHIFT_TARGET
            target = lo + dt.timedelta(days=secrets.randbelow((hi - lo).days + 1))
            entry = {"id": new_id, "shift_days": (target - session_date).days}
            patients[original_id] = entry
            self._write(data)
            return Pseudonym(new_id, entry["shift_days"])

    def session_id(self, original: str) -> str:
        """A de-identified session id: the same for every export of one session with this key,
        unrelated to the original without the key's secret."""
        with self._locked():
            data = self._read()
            if not self.path.exists():  # the secret must be the same next time
                self._write(data)
        secret = bytes.fromhex(data["secret"])
        return hmac.new(secret, f"session:{original}".encode(), hashlib.sha256).hexdigest()[:32]

    # -- the file ---------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        path = self.path
        try:
            info = path.stat()
        except FileNotFoundError:
            return {"format": KEY_FORMAT, "version": KEY_VERSION, "secret": secrets.token_hex(32),
                    "patients": {}}  # fmt: skip
        except OSError as exc:
            raise ExportError(f"cannot read the key {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise ExportError(f"the key {path} is not a file; give a file path with --key")
        if info.st_mode & 0o077:
            raise ExportError(
                f"the key {path} can be read by others (mode {info.st_mode & 0o777:04o}): "
                f"chmod 600 {path}, it links the exports back to the patients"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ExportError(f"cannot read the key {path}: {exc}") from None
        problem = _key_problem(data)
        if problem:
            raise ExportError(
                f"{path} is not a needlelab de-identification key ({problem}); give another "
                "--key, or restore this one from its backup"
            )
        return typing.cast(dict[str, Any], data)

    def _write(self, data: dict[str, Any]) -> None:
        path = self.path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)  # atomic: the old key or the new one, never half of either
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ExportError(f"cannot write the key {path}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the key's folder while the key is read and changed."""
        try:
            private_dir(self.path.parent)
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError as exc:
            raise ExportError(
                f"cannot use the key folder {self.path.parent}: {exc.strerror or exc}"
            ) from None
        try:
            try:
                import fcntl
            except ImportError:  # no advisory locks here: one export at a time
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _key_problem(data: Any) -> str:
    """What is wrong with a key file's content ("" if nothing)."""
    if not isinstance(data, dict) or data.get("format") != KEY_FORMAT:
        return f'no "format": "{KEY_FORMAT}"'
    if data.get("version") != KEY_VERSION:
        return f"version {data.get('version')!r}, this needlelab reads {KEY_VERSION}"
    if not isinstance(data.get("secret"), str) or not re.fullmatch(r"[0-9a-f]{64}", data["secret"]):
        return "its secret is damaged"
    patients = data.get("patients")
    if not isinstance(patients, dict):
        return "no patients table"
    for original, entry in patients.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str)
            or not re.fullmatch(r"[A-Za-z0-9]{1,32}", entry["id"])
            or type(entry.get("shift_days")) is not int
        ):
            return f"the entry of {original!r} is damaged"
    return ""


# -- refusals before anything is written -----------------------------------------------------------
def check_key_outside(key_path: Path, folder: Path) -> None:
    """Refuse a key inside the folder an export writes into (or the folder itself)."""
    key, out = key_path.resolve(), folder.resolve()
    if key == out or out in key.parents:
        raise ExportError(
            f"the key {key_path} would be inside the export folder {folder}: keep it apart "
            "(give --key a path outside it)"
        )


def check_name(what: str, name: str, session: LoadedSession) -> None:
    """Refuse an export name (file, folder, BIDS label) that holds the patient id or date."""
    if _identifying(session).search(name):
        raise ExportError(
            f"{what} {name!r} holds the patient id or the session date; a de-identified export "
            "is named without them (leave the name out to get '<pseudonym>_<shifted date>')"
        )


def prepare(
    session: LoadedSession,
    fmt: str,
    out: str | Path | None,
    bids: tuple[Path, str, str] | None,
    key_path: Path,
) -> tuple[LoadedSession, tuple[Path, str, str] | None]:
    """What `export(..., deidentify=KEY)` exports: the names and the key's place checked before
    anything is written (the key included), then the de-identified view; an empty BIDS subject
    becomes the pseudonym."""
    if bids is not None:
        root, subject, number = bids
        folder = Path(root)
        check_name("the BIDS root", folder.resolve().name, session)
        if subject:
            check_name("the BIDS subject", subject, session)
        check_name("the BIDS session", number, session)
    elif out is not None:
        target = Path(out)
        folder = target if fmt == "csv" else target.parent
        check_name("the export name", target.name, session)
    else:
        folder = session.path.parent
    check_key_outside(key_path, folder)
    view = deidentify(session, DeidentifyKey(key_path))
    if bids is not None and not bids[1]:
        bids = (bids[0], view.patient_id, bids[2])
    return view, bids


def _identifying(session: LoadedSession) -> re.Pattern[str]:
    """The original patient id as a whole token, and the session date as names write it."""
    start = session.start
    dates = {start.strftime(f) for f in ("%Y%m%d", "%Y-%m-%d", "%Y_%m_%d", "%d.%m.%Y", "%d.%m.%y")}
    words = [re.escape(session.patient_id), *map(re.escape, sorted(dates))]
    return re.compile(rf"(?<![A-Za-z0-9])({'|'.join(words)})(?![A-Za-z0-9])", re.IGNORECASE)


# -- the de-identified view ------------------------------------------------------------------------
def deidentify(session: LoadedSession, key: DeidentifyKey) -> LoadedSession:
    """A de-identified copy of `session` (see the module docstring): what every exporter writes
    for `needlelab export --deidentify`. The session itself is not changed."""
    pseudonym = key.pseudonym(session.patient_id, session.start.date())
    wall_ns = int(session.meta["anchor_wall_ns"]) + pseudonym.shift_days * DAY_NS
    shifted = dt.datetime.fromtimestamp(wall_ns / 1e9, tz=dt.UTC).date()
    if not EDF_DATES[0] <= shifted <= EDF_DATES[1]:
        raise ExportError(
            f"this session would be dated {shifted}, outside the {EDF_DATES[0].year}-"
            f"{EDF_DATES[1].year} that EDF+ holds (it is more than five years before the "
            "patient's first de-identified session); export it with a new --key"
        )
    scrub = _Scrubber(session, pseudonym.patient_id)
    meta = {
        "session_id": key.session_id(str(session.meta["session_id"])),
        "patient_id": pseudonym.patient_id,
        # The monotonic anchor is the recording machine's uptime: no use to anyone sharing data.
        "anchor_monotonic_ns": 0,
        "anchor_wall_ns": wall_ns,
        "config_json": "",
        "software_version": scrub.token(str(session.meta.get("software_version", ""))),
        "schema_version": session.meta.get("schema_version"),
        "closed_t_ns": session.meta.get("closed_t_ns"),
    }
    config = scrub.config(session.config)
    meta["config_json"] = json.dumps(config)
    streams: dict[str, StreamData] = {}
    for k, (name, stream) in enumerate(session.streams.items(), start=1):
        spec = scrub.spec(stream.spec, k)
        scrub.stream_names[name] = spec.name
        model = None if stream.clock_model is None else scrub.unknown(stream.clock_model, True)
        streams[spec.name] = dataclasses.replace(stream, spec=spec, clock_model=model)
    events = [scrub.event(e) for e in session.events]
    path = session.path.with_name(session_file_name(pseudonym.patient_id, wall_ns))
    return LoadedSession(path, meta, config, streams, events)


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,47}")
_UNIT = re.compile(r"[A-Za-z0-9µ°%/._^-]{0,16}")
_VOCAB_TEXT = re.compile(r"[A-Za-z0-9 _.,/()+-]{1,80}")
_WORD = re.compile(r"[A-Za-z0-9]+")
# Words every session may use beside its own vocabulary: sides, moments, orientations.
_FIXED_WORDS = frozenset(
    ["l", "r", "left", "right", "midline", "both", "bilateral", "unsure", "pre", "post",
     "during", "vertical", "horizontal", "emg"]
)  # fmt: skip

Rule = Callable[["_Scrubber", Any], Any]


def _keep(s: _Scrubber, value: Any) -> Any:
    return value


def _empty(s: _Scrubber, value: Any) -> Any:
    return "" if isinstance(value, str) else value


def _text(s: _Scrubber, value: Any) -> Any:
    return REMOVED if isinstance(value, str) and value else value


def _unit(s: _Scrubber, value: Any) -> Any:
    # Placeholders of the field's own form keep the config valid: the device is there, how it
    # was reached is not.
    return "removed" if isinstance(value, str) else value


def _address(s: _Scrubber, value: Any) -> Any:
    return "00:00:00:00:00:00" if isinstance(value, str) else value


def _transport(s: _Scrubber, value: Any) -> Any:
    return "unix:removed" if isinstance(value, str) else value


def _shipped(s: _Scrubber, value: Any) -> Any:
    # A shipped profile or protocol name is public; a file path can name a person or place.
    shipped = isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", value)
    return value if shipped and not value.endswith(".toml") else "removed.toml"


def _patient(s: _Scrubber, value: Any) -> Any:
    return s.pseudonym


def _out_dir(s: _Scrubber, value: Any) -> Any:
    return "recordings"


def _token(s: _Scrubber, value: Any) -> Any:
    return s.token(value) if isinstance(value, str) else value


def _vocab(s: _Scrubber, value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_vocab(s, v) for v in value]
    return value if not isinstance(value, str) or s.in_vocabulary(value) else REMOVED


def _muscle(s: _Scrubber, value: Any) -> Any:
    return value if not isinstance(value, str) or s.in_vocabulary(value) else ""


def _stream(s: _Scrubber, value: Any) -> Any:
    return s.stream_names.get(value, s.token(value)) if isinstance(value, str) else value


def _template(s: _Scrubber, value: Any) -> Any:
    from needlelab.clinic.protocol import Protocol

    return s.walk(Protocol, value) if isinstance(value, dict) else s.unknown(value)


def _device_info(s: _Scrubber, value: Any) -> Any:
    return s.device_info(value) if isinstance(value, dict) else {}


def _unknown(s: _Scrubber, value: Any) -> Any:
    return s.unknown(value)


_RULES: dict[tuple[str, str], Rule] = {
    # config: who, where, devices
    ("SessionSection", "patient_id"): _patient,
    ("SessionSection", "operator"): _empty,
    ("SessionSection", "notes"): _empty,
    ("SessionSection", "out_dir"): _out_dir,
    ("SessionSection", "protocol"): _shipped,
    ("DeviceBase", "name"): _keep,
    ("StimSerialConfig", "profile"): _shipped,
    ("StimSerialConfig", "port"): _unit,
    ("BleDeviceConfig", "profile"): _shipped,
    ("BleDeviceConfig", "address"): _address,
    ("BleDeviceConfig", "advertised_name"): _unit,
    ("BleDeviceConfig", "bumble_transport"): _transport,
    ("EmgBleConfig", "muscle"): _muscle,
    ("EmgBleConfig", "reference"): _keep,  # the montage, in a restricted alphabet
    ("EmgSimulatorConfig", "artefacts_from"): _keep,
    ("LslInletConfig", "stream_name"): _unit,
    ("LslInletConfig", "stream_type"): _unit,
    ("LslInletConfig", "source_id"): _unit,
    ("LocalizationConfig", "regions"): _keep,  # the clinic's vocabulary
    ("LocalizationConfig", "region"): _keep,
    ("LocalizationConfig", "muscles"): _keep,
    ("LocalizationConfig", "descriptors"): _keep,
    ("MonitorKeys", "prompt"): _keep,  # key names, validated against a fixed pattern
    ("MonitorKeys", "commit"): _keep,
    ("MonitorKeys", "correct"): _keep,
    ("MonitorKeys", "undo"): _keep,
    # protocol template (in the `protocol` event): the study's vocabulary is kept, prose is not
    ("ProtocolInfo", "name"): _keep,
    ("ProtocolInfo", "description"): _empty,
    ("Site", "name"): _keep,
    ("Site", "region"): _keep,
    ("Site", "level"): _keep,
    ("Site", "muscle"): _keep,
    ("Phase", "name"): _keep,
    ("Phase", "sites"): _keep,
    ("Phase", "site"): _keep,
    ("Phase", "movements"): _keep,
    ("Phase", "text"): _empty,
    # events
    ("EventBase", "source"): _token,
    ("StimSettings", "waveform"): _token,
    ("StimSettings", "mode"): _token,
    ("DeviceStateEvent", "reason"): _text,
    ("GapEvent", "stream"): _stream,
    ("GapEvent", "reason"): _text,
    ("MarkerEvent", "text"): _text,
    ("PhaseEvent", "name"): _vocab,
    ("RecordingEvent", "reason"): _text,
    ("NeedleSiteEvent", "region"): _vocab,
    ("NeedleSiteEvent", "level"): _vocab,
    ("NeedleSiteEvent", "muscle"): _vocab,
    ("ResponseEvent", "level"): _vocab,
    ("ResponseEvent", "descriptors"): _vocab,
    ("ResponseEvent", "text"): _text,
    ("CorrectionEvent", "reason"): _text,
    ("ProtocolEvent", "name"): _keep,
    ("ProtocolEvent", "template"): _template,
    ("TpdTrialEvent", "staircase"): _vocab,
    ("TpdTrialEvent", "site"): _vocab,
    ("LrjTrialEvent", "block"): _token,
    ("LrjTrialEvent", "stimulus"): _token,
    ("LrjTrialEvent", "body_part"): _token,
    ("NrsEvent", "when"): _token,
    ("RomEvent", "movement"): _vocab,
    ("RomEvent", "when"): _token,
    ("DeviceInfoEvent", "info"): _device_info,
    ("WarningEvent", "code"): _keep,  # a pattern-checked code, e.g. "disk.slow"
    ("WarningEvent", "message"): _text,
    ("WarningEvent", "details"): _unknown,
}
"""How each string-bearing field is de-identified, by (model, field); a model's own entry wins
over its bases'. Fields not listed: numbers, booleans and literals are kept, models and lists
are walked, and any other text is replaced (a new free-text field is never let through)."""

# `device.info` keys kept (everything else, like identity strings, serial numbers and addresses,
# identifies a unit and is dropped): profile facts, line settings, firmware and battery.
_DEVICE_INFO_KEPT = re.compile(
    r"profile(_(name|hash|sha256|content_hash))?|content_hash|allowed.*|dtr|rts|firmware.*|"
    r"battery.*|model|manufacturer|protocol|family"
)


class _Scrubber:
    """Applies `_RULES` to one session's config, streams and events."""

    def __init__(self, session: LoadedSession, pseudonym: str) -> None:
        self.pseudonym = pseudonym
        self.identifying = _identifying(session)
        self.stream_names: dict[str, str] = {}
        words: set[str] = set(_FIXED_WORDS)
        localization = session.config.get("localization")
        texts: list[Any] = []
        if isinstance(localization, dict):
            regions = localization.get("regions")
            if isinstance(regions, dict):
                texts += [*regions, *(v for levels in regions.values() for v in levels or [])]
            texts += [localization.get("region"), *(localization.get("muscles") or []),
                      *(localization.get("descriptors") or [])]  # fmt: skip
        for e in session.events:
            template = getattr(e, "template", None) if e.kind == "protocol" else None
            if isinstance(template, dict):
                for site in template.get("sites") or []:
                    if isinstance(site, dict):
                        texts += [site.get(k) for k in ("name", "region", "level", "muscle")]
                for phase in template.get("phases") or []:
                    if isinstance(phase, dict):
                        texts += [phase.get("name"), phase.get("site")]
                        texts += [*(phase.get("sites") or []), *(phase.get("movements") or [])]
        for text in texts:
            if isinstance(text, str):
                words.update(w.lower() for w in _WORD.findall(text))
        self.words = frozenset(words)

    # -- string classes ---------------------------------------------------------------------------
    def token(self, value: str) -> str:
        """A machine name: kept when it is one short token, replaced otherwise."""
        return value if not value or _TOKEN.fullmatch(value) else REMOVED

    def in_vocabulary(self, text: str) -> bool:
        """Whether `text` is made of the session's vocabulary words (and short numbers)."""
        if not text:
            return True
        return bool(_VOCAB_TEXT.fullmatch(text)) and all(
            w.lower() in self.words or (w.isdigit() and len(w) <= 3) for w in _WORD.findall(text)
        )

    def guard(self, value: Any) -> Any:
        """Replace any string left holding the original patient id or session date."""
        if isinstance(value, str):
            return REMOVED if self.identifying.search(value) else value
        if isinstance(value, list | tuple):
            return [self.guard(v) for v in value]
        if isinstance(value, dict):
            return {k: self.guard(v) for k, v in value.items() if not self.identifying.search(k)}
        return value

    # -- walking models ---------------------------------------------------------------------------
    def walk(self, cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
        """`data` (a model's JSON) with each field de-identified by its rule or its type."""
        out: dict[str, Any] = {}
        for name, value in data.items():
            field = cls.model_fields.get(name)
            rule = next(
                (_RULES[(c.__name__, name)] for c in cls.__mro__ if (c.__name__, name) in _RULES),
                None,
            )
            if rule is not None:
                out[name] = rule(self, value)
            elif field is None:  # a field of a newer version
                out[name] = self.unknown(value)
            else:
                out[name] = self.by_type(field.annotation, value)
        return out

    def by_type(self, annotation: Any, value: Any) -> Any:
        """A value de-identified by its declared type (for fields `_RULES` does not name)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            return self.by_type(args[0], value)
        if origin is typing.Literal:
            return value if value in args else self.unknown(value)
        if origin in (typing.Union, types.UnionType):
            models = [a for a in args if isclass(a) and issubclass(a, BaseModel)]
            if isinstance(value, dict) and models:
                kind = value.get("kind")
                for model in models:
                    literal = model.model_fields.get("kind")
                    if literal is None or kind in typing.get_args(literal.annotation):
                        return self.walk(model, value)
                return self.unknown(value)
            for member in args:
                if typing.get_origin(member) is typing.Literal and value in typing.get_args(member):
                    return value
            lists = [a for a in args if typing.get_origin(a) in (list, tuple)]
            if isinstance(value, list | tuple) and lists:
                return self.by_type(lists[0], value)
            return self.unknown(value)
        if isclass(annotation) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            return self.walk(annotation, value)
        if origin in (list, tuple) and isinstance(value, list | tuple):
            element = args[0] if args else Any
            return [self.by_type(element, v) for v in value]
        if origin is dict and isinstance(value, dict) and len(args) == 2:
            return {k: self.by_type(args[1], v) for k, v in value.items() if _TOKEN.fullmatch(k)}
        return self.unknown(value)

    def unknown(self, value: Any, machine: bool = False) -> Any:
        """A value of no known field: numbers kept, text replaced (`machine`: one-token names
        kept, as in clock models), containers walked, keys that are not names dropped."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.token(value) if machine else (REMOVED if value else "")
        if isinstance(value, list | tuple):
            return [self.unknown(v, machine) for v in value]
        if isinstance(value, dict):
            return {k: self.unknown(v, machine) for k, v in value.items()
                    if isinstance(k, str) and _TOKEN.fullmatch(k)}  # fmt: skip
        return REMOVED

    # -- the parts of a session -------------------------------------------------------------------
    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The stored config, de-identified (still a valid session config)."""
        out = self.guard(self.walk(SessionConfig, config))
        if isinstance(out.get("session"), dict):
            out["session"]["patient_id"] = self.pseudonym
        return typing.cast(dict[str, Any], out)

    def device_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """`device.info` facts that describe a kind of unit, not this unit (see
        `_DEVICE_INFO_KEPT`); everything else is dropped."""
        out: dict[str, Any] = {}
        for k, v in info.items():
            if isinstance(k, str) and _DEVICE_INFO_KEPT.fullmatch(k.lower()):
                out[k] = _printable(v)
        return out

    def spec(self, spec: StreamSpec, number: int) -> StreamSpec:
        """A stream's spec with labels of the session's vocabulary or one token, else numbered."""
        emg = spec.type == "EMG"
        numbered = [f"EMG {c}" if emg else f"ch{c}" for c in range(1, 1 + len(spec.channels))]
        labels = []
        for label, plain in zip(spec.channels, numbered, strict=True):
            ok = self.in_vocabulary(label) or _TOKEN.fullmatch(label)
            labels.append(label if ok and self.guard(label) == label else plain)
        if len(set(labels)) != len(labels):  # a kept label equal to a numbered one
            labels = numbered
        units = [u if _UNIT.fullmatch(u) else "" for u in spec.units]
        name = self.guard(self.token(spec.name))
        return dataclasses.replace(
            spec,
            name=name if name != REMOVED else f"stream{number}",
            type=self.guard(self.token(spec.type)),
            channels=tuple(labels),
            units=tuple(units),
            device=self.guard(self.token(spec.device)),
        )

    def event(self, e: Event | UnknownEvent) -> Event | UnknownEvent:
        """An event with its text de-identified; its id, time and kind unchanged."""
        if isinstance(e, UnknownEvent):
            payload = self.guard(self.unknown(e.payload))
            kind = self.token(e.kind)
            return UnknownEvent(e.id, e.t_ns, kind, self.guard(self.token(e.source)), payload)
        data = self.guard(self.walk(type(e), {"source": e.source, **e.payload()}))
        source = data.pop("source")
        try:
            return event_from_row(e.id, e.t_ns, e.kind, source, data)
        except ValidationError:  # a placeholder a field's constraint refuses: keep it untyped
            return UnknownEvent(e.id, e.t_ns, e.kind, source, data)


def _printable(value: Any) -> Any:
    """Numbers, booleans and short printable ASCII kept (lists walked); paths and anything else
    replaced (a path can hold a user's or a clinic's name)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        plain = len(value) <= 128 and value.isascii() and value.isprintable()
        return value if plain and "/" not in value and "\\" not in value else REMOVED
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return REMOVED


# -- machine ids that writers add ------------------------------------------------------------------
FIFF_ID_STRUCT = 31  # FIFFT_ID_STRUCT: version, machine id (2 x int32), secs, usecs


def clear_fif_machine_ids(path: Path) -> int:
    """Zero the machine id in every FIFF id tag of a FIF file; how many there were.

    MNE writes the writing computer's network (MAC) address, encoded, into each file and block
    id; it identifies the workstation, so a de-identified FIF has zeros there. FIF is a sequence
    of tags (kind, type, size, next: big-endian int32, then `size` bytes), written in order.
    """
    data = bytearray(path.read_bytes())
    pos, cleared = 0, 0
    while pos + 16 <= len(data):
        kind_type, size = (int.from_bytes(data[pos + i : pos + i + 4], "big", signed=True)
                           for i in (4, 8))  # fmt: skip
        if size < 0 or pos + 16 + size > len(data):
            break
        if kind_type == FIFF_ID_STRUCT and size == 20:
            data[pos + 20 : pos + 28] = bytes(8)
            cleared += 1
        pos += 16 + size
    with open(path, "r+b") as f:
        f.write(data)
    return cleared


__all__ = [
    "REMOVED",
    "DeidentifyKey",
    "Pseudonym",
    "check_key_outside",
    "check_name",
    "clear_fif_machine_ids",
    "default_key_path",
    "deidentify",
    "prepare",
]
