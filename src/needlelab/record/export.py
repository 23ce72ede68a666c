"""Exports of a session file to the formats research tools read, and the Python loading API.

Every export is generated from the SQLite store, at any time: after a clean stop or after a
crash (a killed recorder's file opens as it is, up to its last commit).

- XDF (`to_xdf`): written from the XDF 1.0 specification (FileHeader, StreamHeader, Samples,
  ClockOffset, Boundary, StreamFooter chunks). Every stream keeps its own sample times from the
  clock model (seconds on the session clock); markers and clinical events are one string stream
  of JSON payloads; channel labels, units and the clock model go in each stream's `<desc>`.
- EDF+ / BDF+ (`to_edf`, written from the specifications by `needlelab.record.edf`): EDF and
  BDF hold signals at fixed rates that start with the file, so each regular stream is put on a
  uniform grid at its nominal rate from the file's start (`timeline`: session time 0, exact to
  100 ns; zero where there were no samples, marked by a `gap` annotation). Irregular streams
  (stimulator settings, caliper readings) and every event are annotations, never resampled,
  each whole (a text longer than readers keep is written in parts). A session with no regular
  stream is an annotation-only EDF+. EMG channels are labelled `EMG <site> <n>`.
- CSV (`to_csv`): one tidy table per event kind, one per signal, and `data_dictionary.csv`.
- FIF (`to_fif`, via MNE): the EDF grid as an `mne.io.Raw` with annotations (`to_mne`).

`export(path, fmt, out)` picks by name; `--bids` puts an EDF/BDF export in a BIDS-like folder;
`deidentify=KEY` exports the de-identified view of the session (`needlelab.record.deidentify`).
Formats whose optional packages are missing raise `ExportError` naming the extra to install.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import struct
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from needlelab.events import Event
from needlelab.private import private_dir, write_private
from needlelab.record import edf, resample
from needlelab.record.reader import (
    UnknownEvent,
    event_json,
    event_row,
    events_frame,
    open_session,
)
from needlelab.streams import StreamKind, StreamSpec

FORMATS = ("xdf", "edf", "bdf", "csv", "fif")


class ExportError(Exception):
    """An export that cannot be made, with what to do about it (one line)."""


@dataclass
class StreamData:
    """One stream, loaded: its spec, per-sample session times (ns), values and clock model."""

    spec: StreamSpec
    t_ns: npt.NDArray[np.int64]
    values: npt.NDArray[Any]
    clock_model: dict[str, Any] | None = None


@dataclass
class LoadedSession:
    """A whole session in memory: `needlelab.record.load(path)`."""

    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    streams: dict[str, StreamData]
    events: list[Event | UnknownEvent] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        """The pseudonymous patient id."""
        return str(self.meta["patient_id"])

    @property
    def start(self) -> dt.datetime:
        """Wall-clock time (UTC) of session time 0."""
        return dt.datetime.fromtimestamp(self.meta["anchor_wall_ns"] / 1e9, tz=dt.UTC)

    @property
    def end_ns(self) -> int:
        """The last session time anything was recorded at."""
        ends = [int(s.t_ns[-1]) for s in self.streams.values() if len(s.t_ns)]
        ends += [e.t_ns for e in self.events]
        if self.meta.get("closed_t_ns") is not None:
            ends.append(int(self.meta["closed_t_ns"]))
        return max(ends, default=0)

    def events_frame(self) -> Any:
        """Events as a pandas DataFrame (id, t_ns, t_s, kind, source, then payload fields)."""
        try:
            return events_frame(self.events)
        except ImportError:
            raise ExportError(
                "events_frame() needs pandas: pip install 'needlelab[export]'"
            ) from None

    def to_mne(self) -> Any:
        """The regular streams on a uniform grid as an `mne.io.Raw`, events as annotations."""
        return _to_mne(self)


def load(path: str | Path) -> LoadedSession:
    """Load a session file: streams (numpy, clock-model times), events in time order (ties in
    the order they were recorded), clock models, config."""
    with open_session(path) as s:
        streams = {}
        for name, spec in s.streams.items():
            t_ns, values = s.stream(name)
            streams[name] = StreamData(spec, t_ns, values, s.clock_models.get(name))
        # Ids are the order events reached the hub; an event can carry an earlier time (a key
        # press stamped when it happened, another program's marker), and every export reads
        # events as a time series.
        events = sorted(s.events(), key=lambda e: (e.t_ns, e.id))
        return LoadedSession(Path(path), dict(s.meta), s.config, streams, events)


# -- uniform grids (EDF, BDF, FIF) ----------------------------------------------------------------
@dataclass
class Grid:
    """A regular stream on a uniform grid: values (n, channels) at `origin_ns + k / rate_hz`
    (session time), and the stretches where there were no samples (start s, end s, on the
    grid's own time: seconds after its first sample)."""

    spec: StreamSpec
    rate_hz: float
    origin_ns: int
    values: npt.NDArray[np.float64]
    empty: list[tuple[float, float]]


@dataclass(frozen=True)
class Timeline:
    """Where the signal files (EDF, BDF, FIF) start and how long they run.

    `origin_ns` is session time 0, or the first sample of a regular stream if one came before
    it, moved back (less than 100 ns) so that its wall-clock time is a whole number of 100 ns,
    the resolution of EDF+ time keeping; every file time counts from it. `seconds` is whole
    seconds (EDF data records are 1 s) up to the last thing recorded."""

    origin_ns: int
    seconds: int
    start_wall_ns: int


def timeline(session: LoadedSession) -> Timeline:
    """The session's `Timeline`."""
    firsts = [int(s.t_ns.min()) for s in regular_streams(session) if len(s.t_ns)]
    earliest = min([0, *firsts])
    wall = int(session.meta["anchor_wall_ns"]) + earliest
    start_wall = wall - wall % 100
    origin = earliest - (wall - start_wall)
    seconds = max(1, math.ceil((session.end_ns - origin) / 1e9))
    return Timeline(origin, seconds, start_wall)


def uniform_grid(stream: StreamData, line: Timeline) -> Grid:
    """A regular stream at its nominal rate over the timeline, band-limited resampling at its
    clock-model times (`needlelab.record.resample`)."""
    rate = stream.spec.nominal_rate_hz
    n = round(line.seconds * rate)
    blocks = list(
        resample.resample(iter([(stream.t_ns, stream.values)]), stream.spec.channel_count,
                          rate, line.origin_ns, n)
    )  # fmt: skip
    values = np.concatenate([b.values for b in blocks]) if blocks else np.zeros((0, 1))
    covered = np.concatenate([b.covered for b in blocks]) if blocks else np.zeros(0, bool)
    return Grid(stream.spec, rate, line.origin_ns, values, _empty(covered, rate))


def _empty(covered: npt.NDArray[np.bool_], rate: float) -> list[tuple[float, float]]:
    """The stretches (start s, end s on the grid's time) where `covered` is False."""
    edges = np.flatnonzero(np.diff(np.r_[True, covered, True].astype(np.int8)))
    return [
        (lo / rate, hi / rate) for lo, hi in zip(edges[::2], edges[1::2], strict=False) if hi > lo
    ]


def regular_streams(session: LoadedSession) -> list[StreamData]:
    return [s for s in session.streams.values() if s.spec.kind is StreamKind.REGULAR]


def _number(value: float) -> str:
    """A stored value as the shortest text that reads back to it in its own precision."""
    return str(np.format_float_positional(value, unique=True, trim="-"))


@dataclass(frozen=True)
class Note:
    """An annotation of the signal files: session time (ns), text, and what names its parts."""

    t_ns: int
    text: str
    key: str = ""
    kind: str = ""  # the event's kind, the stream's name, or "gap" (BIDS trial_type)


def _annotations(session: LoadedSession, grids: list[Grid]) -> list[Note]:
    """Every event (its whole JSON), every irregular-stream sample and every empty stretch of a
    grid, in time order."""
    notes = [Note(e.t_ns, event_json(e), f"event {e.id}", e.kind) for e in session.events]
    for stream in session.streams.values():
        if stream.spec.kind is StreamKind.REGULAR:
            continue
        spec = stream.spec
        for t, row in zip(stream.t_ns, np.asarray(stream.values), strict=True):
            cells = ", ".join(
                f"{ch}={_number(v)}{'' if u in ('', 'bool') else ' ' + u}"
                for ch, v, u in zip(spec.channels, row, spec.units, strict=True)
            )
            notes.append(Note(int(t), f"{spec.name}: {cells}", kind=spec.name))
    for grid in grids:
        for lo, hi in grid.empty:
            notes.append(
                Note(grid.origin_ns + round(lo * 1e9),
                     f"gap: {grid.spec.name} has no samples until {hi:.3f} s", kind="gap")
            )  # fmt: skip
    return sorted(notes, key=lambda n: n.t_ns)


def _channel_label(spec: StreamSpec, channel: int) -> str:
    """A channel's label in EDF, FIF and BIDS: `EMG <site> <n>` for EMG (so MNE infers the
    channel type from it), the channel's own name otherwise."""
    label = spec.channels[channel]
    if spec.type != "EMG" or label.upper().startswith("EMG"):
        return label
    return f"EMG {label}"


EDF_LABEL_CHARS = edf.LABEL_CHARS
_LEVEL = re.compile(r"[CTLS]\d{1,2}", re.IGNORECASE)
_SIDES = {"l": "L", "left": "L", "r": "R", "right": "R", "b": "B", "bilateral": "B",
          "both": "B", "m": "M", "midline": "M"}  # fmt: skip


def _short_label(spec: StreamSpec, channel: int) -> str:
    """A channel's EDF label (16 characters) before uniqueness is checked: for EMG,
    `EMG <site><side> <muscle> <n>` (`EMG L3R multif 1`: site and side first, as left and right
    sensors on one level differ only there; the muscle cut to what is left); the channel's own
    name, cut, otherwise."""
    name = spec.channels[channel]
    if spec.type != "EMG":
        return name[:EDF_LABEL_CHARS].rstrip()
    words = name.split()
    if words and words[0].upper() == "EMG":
        words = words[1:]
    number = words.pop() if words and words[-1].isdigit() else str(channel + 1)
    site = "".join(w.upper() for w in words if _LEVEL.fullmatch(w))
    side = "".join(_SIDES[w.lower()] for w in words if w.lower() in _SIDES)
    muscle = " ".join(w for w in words if not _LEVEL.fullmatch(w) and w.lower() not in _SIDES)
    head = " ".join(p for p in ("EMG", site + side) if p)
    room = EDF_LABEL_CHARS - len(head) - len(number) - 2
    middle = muscle[: max(0, room)].rstrip()
    return " ".join(p for p in (head, middle, number) if p)[:EDF_LABEL_CHARS]


def edf_labels(specs: list[StreamSpec]) -> list[list[str]]:
    """Each regular stream's channel labels for EDF/BDF and BIDS (`channels.tsv` holds the
    same): at most 16 characters, unique over the file. Where `_short_label` gives two EMG
    channels one label, they are named by their device instead (`EMG emg2 1`), and any left
    equal are numbered (`~2`)."""
    labels = [[_short_label(spec, c) for c in range(spec.channel_count)] for spec in specs]
    counts = Counter(label for stream in labels for label in stream)
    for spec, stream in zip(specs, labels, strict=True):
        for c, label in enumerate(stream):
            if counts[label] > 1 and spec.type == "EMG":
                number = label.rsplit(" ", 1)[-1]
                device = (spec.device or spec.name.split(".")[0]).replace(" ", "_")
                room = EDF_LABEL_CHARS - len("EMG ") - len(number) - 1
                stream[c] = f"EMG {device[:room]} {number}"
    seen: set[str] = set()
    for stream in labels:
        for c, label in enumerate(stream):
            k, unique = 1, label
            while unique in seen:
                k += 1
                unique = label[: EDF_LABEL_CHARS - len(f"~{k}")] + f"~{k}"
            seen.add(unique)
            stream[c] = unique
    return labels


# -- EDF+ / BDF+ ----------------------------------------------------------------------------------
def to_edf(session: LoadedSession, path: Path, bdf: bool = False) -> Path:
    """Write EDF+ (16 bit) or BDF+ (24 bit) with `needlelab.record.edf`."""
    write_edf(session, path, bdf)
    return path


def grid_statement(rates: list[float]) -> dict[str, dict[str, Any]]:
    """BIDS `SoftwareFilters`: what putting the streams on the grid did to them."""
    return {
        "Resampling to a uniform grid": {
            "Description": resample.DESCRIPTION,
            "Method": "windowed sinc (Kaiser window)",
            "Taps": 2 * resample.HALF_TAPS,
            "KaiserBeta": resample.BETA,
            "CutoffFrequency": "Nyquist (0.5 x the rate)",
            "Passband": "flat within 0.25 % of the power up to 0.45 x the rate",
            "SampleTimes": "each stream's clock model (host arrivals fitted per device)",
            "Rates (Hz)": sorted(set(rates)),
        }
    }


def write_edf(session: LoadedSession, path: Path, bdf: bool = False) -> tuple[Timeline, list[Note]]:
    """`to_edf`; the file's timeline and the annotations it holds (for the BIDS events)."""
    regular = regular_streams(session)
    odd = [s.spec.name for s in regular if s.spec.nominal_rate_hz != round(s.spec.nominal_rate_hz)]
    if odd:
        raise ExportError(f"EDF/BDF need whole-number sampling rates; {', '.join(odd)} have not: "
                          "export XDF or CSV")  # fmt: skip
    line = timeline(session)
    grids = [uniform_grid(s, line) for s in regular]
    labels = edf_labels([g.spec for g in grids])
    signals: list[edf.Signal] = []
    for grid, names in zip(grids, labels, strict=True):
        for c in range(grid.spec.channel_count):
            values = grid.values[:, c]
            peak = float(np.max(np.abs(values))) if len(values) else 0.0
            signals.append(
                edf.Signal(
                    label=names[c],
                    transducer=_channel_label(grid.spec, c)[:80],
                    unit=grid.spec.units[c],
                    prefilter=resample.PREFILTER,
                    samples_per_record=round(grid.rate_hz),
                    peak=peak if peak > 0 else 1.0,
                )
            )
    notes = _annotations(session, grids)
    tals = [edf.Annotation(_units(n.t_ns - line.origin_ns), n.text, n.key) for n in notes]
    write_private(path, b"")  # created owner-only before it is filled: never readable by others
    try:
        edf.write(
            path,
            bdf=bdf,
            start_wall_ns=line.start_wall_ns,
            patient_code=session.patient_id,
            equipment="needlelab",
            signals=signals,
            groups=[g.spec.channel_count for g in grids],
            n_records=line.seconds if signals else 0,
            record_seconds=1 if signals else 0,
            blocks=[[g.values for g in grids]] if signals else [],
            annotations=tals,
        )
    except edf.EdfWriteError as exc:
        raise ExportError(f"cannot write {path.name}: {exc}") from None
    return line, notes


def _units(ns: int) -> int:
    """Nanoseconds to EDF+'s 100 ns units, rounded to the nearest."""
    return (ns + 50) // 100


# -- XDF ------------------------------------------------------------------------------------------
def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1, n])
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


def _xml(tag: str, fields: dict[str, Any]) -> str:
    def render(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return f"<{key}>" + "".join(render(k, v) for k, v in value.items()) + f"</{key}>"
        if isinstance(value, list):
            return "".join(render(key, v) for v in value)
        text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<{key}>{text}</{key}>"

    return '<?xml version="1.0"?>' + render(tag, fields)


def _first_stamp(t_ns: npt.NDArray[np.int64]) -> float:
    return float(t_ns.min()) / 1e9 if len(t_ns) else 0.0


def to_xdf(session: LoadedSession, path: Path) -> Path:
    """Write XDF 1.0: one stream per recorded stream, plus a string stream of every event."""
    out = bytearray(b"XDF:")
    # Stamps are session seconds (0 at the session's start); the file header says when that
    # was, as LabRecorder does (`datetime`, here to the microsecond, UTC), and `created_at` is
    # on the stamps' clock too: the stream's first stamp (when it existed at the latest).
    began = session.start.isoformat(timespec="microseconds")
    out += _chunk(1, _xml("info", {"version": "1.0", "datetime": began}).encode())
    streams: list[tuple[int, dict[str, Any], npt.NDArray[np.float64], list[Any], str]] = []
    for k, stream in enumerate(session.streams.values(), start=1):
        spec = stream.spec
        desc: dict[str, Any] = {
            "channels": {"channel": [{"label": c, "unit": u, "type": spec.type}
                                     for c, u in zip(spec.channels, spec.units, strict=True)]},
            "acquisition": {"manufacturer": "needlelab", "device": spec.device},
            "clock_model": stream.clock_model or {},
        }  # fmt: skip
        info = {
            "name": spec.name, "type": spec.type, "channel_count": spec.channel_count,
            "nominal_srate": spec.nominal_rate_hz if spec.kind is StreamKind.REGULAR else 0,
            "channel_format": "double64", "source_id": f"{session.meta['session_id']}:{spec.name}",
            "created_at": _first_stamp(stream.t_ns), "desc": desc,
        }  # fmt: skip
        streams.append((k, info, stream.t_ns / 1e9, list(np.asarray(stream.values)), "double64"))
    marker_id = len(streams) + 1
    marker_info = {
        "name": "needlelab events", "type": "Markers", "channel_count": 1, "nominal_srate": 0,
        "channel_format": "string", "source_id": f"{session.meta['session_id']}:events",
        "created_at": _first_stamp(np.array([e.t_ns for e in session.events], np.int64)),
        "desc": {"payload": "JSON: kind, source, id and the event's fields"},
    }  # fmt: skip
    streams.append(
        (marker_id, marker_info, np.array([e.t_ns / 1e9 for e in session.events]),
         [event_json(e) for e in session.events], "string")
    )  # fmt: skip
    for sid, info, _t, _v, _fmt in streams:
        out += _chunk(2, struct.pack("<I", sid) + _xml("info", info).encode())
    for sid, _info, times, values, fmt in streams:
        out += _chunk(4, struct.pack("<Idd", sid, times[0] if len(times) else 0.0, 0.0))
        for start in range(0, len(times), 4096):
            body = bytearray(struct.pack("<I", sid)) + _varlen(len(times[start : start + 4096]))
            for t, v in zip(times[start : start + 4096], values[start : start + 4096], strict=True):
                body += b"\x08" + struct.pack("<d", t)
                if fmt == "string":
                    raw = str(v).encode()
                    body += _varlen(len(raw)) + raw
                else:
                    body += np.asarray(v, dtype="<f8").tobytes()
            out += _chunk(3, bytes(body))
        out += _chunk(5, uuid.UUID("6a65f4a6-6de3-4e59-a96b-a0a7fbd1a0c9").bytes)
    for sid, _info, times, _values, _fmt in streams:
        footer = {
            "first_timestamp": float(times[0]) if len(times) else 0.0,
            "last_timestamp": float(times[-1]) if len(times) else 0.0,
            "sample_count": len(times),
            "clock_offsets": {"offset": [{"time": float(times[-1]) if len(times) else 0.0,
                                          "value": 0.0}]},
        }  # fmt: skip
        out += _chunk(4, struct.pack("<Idd", sid, footer["last_timestamp"], 0.0))
        out += _chunk(6, struct.pack("<I", sid) + _xml("info", footer).encode())
    write_private(path, bytes(out))
    return path


# -- CSV ------------------------------------------------------------------------------------------
def to_csv(session: LoadedSession, folder: Path) -> Path:
    """One CSV per event kind and per stream, and `data_dictionary.csv` describing every column."""
    private_dir(folder)
    dictionary: list[tuple[str, str, str, str]] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in session.events:
        by_kind.setdefault(e.kind, []).append(event_row(e))
    for kind, rows in sorted(by_kind.items()):
        name = f"events_{kind.replace('.', '_')}.csv"
        columns = list(dict.fromkeys(k for row in rows for k in row))
        _write_csv(folder / name, columns, [[_cell(row.get(c)) for c in columns] for row in rows])
        for c in columns:
            dictionary.append(
                (name, c, _describe(c, kind), "ns" if c == "t_ns" else ("s" if c == "t_s" else ""))
            )
    for stream in session.streams.values():
        spec = stream.spec
        name = f"signal_{spec.name.replace('.', '_')}.csv"
        columns = ["t_s", *spec.channels]
        signal_rows = ([f"{int(t) / 1e9:.9f}", *(repr(float(v)) for v in row)]
                for t, row in zip(stream.t_ns, np.asarray(stream.values), strict=True))  # fmt: skip
        _write_csv(folder / name, columns, signal_rows)
        dictionary.append((name, "t_s", "sample time on the session clock (clock model for "
                           "regular streams)", "s"))  # fmt: skip
        for ch, unit in zip(spec.channels, spec.units, strict=True):
            dictionary.append((name, ch, f"{spec.type} channel of stream {spec.name}", unit))
    _write_csv(
        folder / "data_dictionary.csv", ["file", "column", "description", "unit"], dictionary
    )
    return folder


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def _describe(column: str, kind: str) -> str:
    common = {
        "id": "event id, increasing within the session",
        "t_ns": "session time of the event",
        "t_s": "session time of the event",
        "kind": "event kind",
        "source": "who recorded it (device name, clinician, session, patient)",
    }
    return common.get(
        column, f"field {column} of {kind} events (ARCHITECTURE.md, event vocabulary)"
    )


def _write_csv(path: Path, columns: list[str], rows: Iterable[Iterable[str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    write_private(path, buffer.getvalue())


# -- MNE / FIF ------------------------------------------------------------------------------------
def _to_mne(session: LoadedSession) -> Any:
    try:
        import mne
    except ImportError:
        raise ExportError("MNE export needs mne: pip install 'needlelab[export]'") from None
    line = timeline(session)
    grids = [uniform_grid(s, line) for s in regular_streams(session)]
    if not grids:
        raise ExportError("the session has no regular streams to put in an mne.io.Raw")
    rates = {g.rate_hz for g in grids}
    if len(rates) > 1:
        raise ExportError(f"regular streams at different rates {sorted(rates)}: export EDF instead")
    rate = rates.pop()
    n = min(len(g.values) for g in grids)
    names, types, data = [], [], []
    for grid in grids:
        for c in range(grid.spec.channel_count):
            emg = grid.spec.type == "EMG"
            names.append(_channel_label(grid.spec, c))
            types.append("emg" if emg else "misc")
            scale = (
                1e-6
                if grid.spec.units[c] == "uV"
                else (1e-3 if grid.spec.units[c] == "mV" else 1.0)
            )
            data.append(grid.values[:n, c] * scale)  # MNE keeps volts
    info = mne.create_info(names, rate, types, verbose=False)
    raw = mne.io.RawArray(np.array(data), info, verbose=False)
    start = dt.datetime.fromtimestamp(line.start_wall_ns // 1000 / 1e6, tz=dt.UTC)
    raw.set_meas_date(start)
    notes = _annotations(session, grids)
    raw.set_annotations(
        mne.Annotations([(n.t_ns - line.origin_ns) / 1e9 for n in notes], [0.0] * len(notes),
                        [n.text for n in notes], orig_time=start)
    )  # fmt: skip
    return raw


def to_fif(session: LoadedSession, path: Path) -> Path:
    """Write MNE's FIF."""
    raw = _to_mne(session)
    write_private(path, b"")  # as for EDF: owner-only before MNE writes into it
    raw.save(path, overwrite=True, verbose=False)
    return path


# -- dispatch -------------------------------------------------------------------------------------
def export(
    path: str | Path,
    fmt: str,
    out: str | Path | None = None,
    bids: tuple[Path, str, str] | None = None,
    deidentify: str | Path | None = None,
) -> Path:
    """Export a session file to `fmt` (xdf, edf, bdf, csv, fif); the written path.

    `out` is the output file (or folder, for csv); default: beside the session file. `bids`
    (root, subject, session) writes EDF/BDF into `root/sub-<s>/ses-<n>/emg/` with its sidecars.
    `deidentify` is a key file: the export is then of the de-identified session (see
    `needlelab.record.deidentify`), named by its pseudonym; an empty BIDS subject is the
    pseudonym.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}")
    session = load(path)
    if deidentify is not None:
        from needlelab.record.deidentify import prepare

        session, bids = prepare(session, fmt, out, bids, Path(deidentify))
    source = session.path
    if bids is not None:
        written = _to_bids(session, fmt, *bids)
    else:
        suffix = {"csv": "", "fif": "_raw.fif"}.get(fmt, f".{fmt}")
        target = (
            Path(out)
            if out is not None
            else source.with_name(source.stem + suffix if suffix else source.stem + "_csv")
        )
        if fmt == "xdf":
            written = to_xdf(session, target)
        elif fmt in ("edf", "bdf"):
            written = to_edf(session, target, bdf=fmt == "bdf")
        elif fmt == "csv":
            written = to_csv(session, target)
        else:
            written = to_fif(session, target)
    if deidentify is not None and fmt == "fif":
        from needlelab.record.deidentify import clear_fif_machine_ids

        clear_fif_machine_ids(written)
    return written


def _to_bids(session: LoadedSession, fmt: str, root: Path, subject: str, number: str) -> Path:
    from needlelab.record.bids import to_bids

    return to_bids(session, fmt, root, subject, number)


__all__ = [
    "FORMATS", "ExportError", "LoadedSession", "StreamData", "export", "load", "to_csv",
    "to_edf", "to_fif", "to_xdf", "uniform_grid",
]  # fmt: skip
