"""Exports of a session file to the formats research tools read, and the Python loading API.

Every export is generated from the SQLite store, at any time: after a clean stop or after a
crash (a killed recorder's file opens as it is, up to its last commit). XDF, EDF+/BDF+, BIDS and
CSV read each regular stream block by block (`load_for_export`, `needlelab.record.chunked`) and
write as they go, so their memory does not grow with the session; FIF is built in memory (an
`mne.io.RawArray`).

- XDF (`to_xdf`): written from the XDF 1.0 specification (FileHeader, StreamHeader, Samples,
  ClockOffset, Boundary, StreamFooter chunks). Every stream keeps its own sample times from the
  clock model (seconds on the session clock; the file header's `datetime` says when 0 was);
  markers and clinical events are one string stream of JSON payloads; channel labels, units and
  the clock model go in each stream's `<desc>`.
- EDF+ / BDF+ (`to_edf`, written from the specifications by `needlelab.record.edf`): EDF and
  BDF hold signals at fixed rates that start with the file, so each regular stream is put on a
  uniform grid at its nominal rate from the file's start (`timeline`: session time 0, exact to
  100 ns) by band-limited resampling at its clock-model times (`needlelab.record.resample`,
  stated in each signal's prefilter field); zero where there were no samples, marked by a `gap`
  annotation. Irregular streams (stimulator settings, caliper readings) and every event are
  annotations, never resampled, each whole (a text longer than readers keep is written in
  parts). A session with no regular stream is an annotation-only EDF+. Labels are unique within
  16 characters (`edf_labels`: `EMG L3R multif 1`).
- BIDS (`needlelab.record.bids`): the EDF/BDF in an EMG-BIDS dataset with its sidecars.
- CSV (`to_csv`): one tidy table per event kind, one per signal, and `data_dictionary.csv`.
- FIF (`to_fif`, via MNE): the EDF grid as an `mne.io.Raw` with annotations (`to_mne`).

`export(path, fmt, out)` picks by name; `bids=(root, subject, session)` writes the BIDS layout;
`deidentify=KEY` exports the de-identified view of the session (`needlelab.record.deidentify`).
Formats whose optional packages are missing raise `ExportError` naming the extra to install.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import struct
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from needlelab.events import Event
from needlelab.private import private_dir, write_private
from needlelab.record import edf, resample
from needlelab.record.chunked import CHUNK_SAMPLES, StreamSource
from needlelab.record.dictionary import describe
from needlelab.record.reader import (
    SessionFile,
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
    """One stream: its spec, per-sample session times (ns), values and clock model.

    `load` gives every stream in memory (`t_ns`, `values`). Exports read a regular stream
    block by block from its `source` instead (`t_ns` and `values` are then None): `chunks`
    serves both."""

    spec: StreamSpec
    t_ns: npt.NDArray[np.int64] | None
    values: npt.NDArray[Any] | None
    clock_model: dict[str, Any] | None = None
    source: StreamSource | None = None

    def chunks(
        self, samples: int = CHUNK_SAMPLES
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[Any]]]:
        """(times ns, values) in recording order, about `samples` at a time."""
        if self.t_ns is None or self.values is None:
            assert self.source is not None
            yield from self.source.chunks(samples)
            return
        for start in range(0, len(self.t_ns), samples):
            yield self.t_ns[start : start + samples], self.values[start : start + samples]

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """The whole stream in memory (read from `source` if need be)."""
        if self.t_ns is not None and self.values is not None:
            return self.t_ns, self.values
        parts = list(self.chunks())
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, self.spec.channel_count), self.spec.dtype)
        return np.concatenate([t for t, _ in parts]), np.concatenate([v for _, v in parts])

    @property
    def count(self) -> int:
        """How many samples."""
        return len(self.t_ns) if self.t_ns is not None else self._source().count

    @property
    def span_ns(self) -> tuple[int, int] | None:
        """The earliest and latest sample time (None: no samples)."""
        if self.t_ns is not None:
            return (int(self.t_ns.min()), int(self.t_ns.max())) if len(self.t_ns) else None
        source = self._source()
        if source.min_t_ns is None or source.max_t_ns is None:
            return None
        return source.min_t_ns, source.max_t_ns

    def _source(self) -> StreamSource:
        assert self.source is not None, "a stream without arrays reads from its source"
        return self.source


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
        ends = [span[1] for s in self.streams.values() if (span := s.span_ns) is not None]
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
        # A damaged row can have lost its time (NULL): it goes last rather than break the sort.
        events = sorted(_events(s), key=lambda e: (e.t_ns is None, e.t_ns or 0, e.id or 0))
        return LoadedSession(Path(path), dict(s.meta), s.config, streams, events)


def _events(s: SessionFile) -> list[Event | UnknownEvent]:
    """The session's events for exports: without the `clock.published` records, which are
    already in the streams' times (readers apply them)."""
    return [e for e in s.events() if e.kind != "clock.published"]


def load_for_export(path: str | Path) -> LoadedSession:
    """`load`, with every regular stream left in the file, read block by block as exports
    need it (memory does not grow with the session's length)."""
    with open_session(path) as s:
        streams = {}
        for name, spec in s.streams.items():
            model = s.clock_models.get(name)
            if spec.kind is StreamKind.REGULAR:
                streams[name] = StreamData(spec, None, None, model, StreamSource(Path(path), name))
            else:
                t_ns, values = s.stream(name)
                streams[name] = StreamData(spec, t_ns, values, model)
        events = sorted(_events(s), key=lambda e: (e.t_ns, e.id))
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

    `origin_ns` is session time 0, or the first sample or event if one came before it (a
    device's own times can), moved back (less than 100 ns) so that its wall-clock time is a
    whole number of 100 ns, the resolution of EDF+ time keeping; every file time counts from it,
    so no annotation lies before the data (MNE drops those). `seconds` is whole seconds (EDF
    data records are 1 s) past the last thing recorded."""

    origin_ns: int
    seconds: int
    start_wall_ns: int


def timeline(session: LoadedSession) -> Timeline:
    """The session's `Timeline`."""
    firsts = [span[0] for s in session.streams.values() if (span := s.span_ns) is not None]
    earliest = min([0, *firsts, *(e.t_ns for e in session.events)])
    wall = int(session.meta["anchor_wall_ns"]) + earliest
    start_wall = wall - wall % 100
    origin = earliest - (wall - start_wall)
    seconds = (session.end_ns - origin) // 1_000_000_000 + 1  # the last thing inside the data
    return Timeline(origin, seconds, start_wall)


def uniform_grid(stream: StreamData, line: Timeline) -> Grid:
    """A regular stream at its nominal rate over the timeline, band-limited resampling at its
    clock-model times (`needlelab.record.resample`)."""
    rate = stream.spec.nominal_rate_hz
    n = round(line.seconds * rate)
    blocks = list(
        resample.resample(stream.chunks(), stream.spec.channel_count, rate, line.origin_ns, n)
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
        t_ns, values = stream.arrays()  # irregular: settings and readings, few
        for t, row in zip(t_ns, np.asarray(values), strict=True):
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
    # Two passes over the grid, block by block: the first finds each channel's peak (the
    # header's physical range comes before any sample) and the gaps (annotations, packed
    # before the records); the second writes. Memory stays flat; the resampling runs twice.
    grids, peaks = [], []
    for stream in regular:
        peak = np.zeros(stream.spec.channel_count)
        rate = stream.spec.nominal_rate_hz
        gaps: list[tuple[float, float]] = []
        done = 0
        for block in grid_blocks(stream, line):
            if len(block.values):
                peak = np.maximum(peak, np.abs(block.values).max(axis=0))
            for lo, hi in _empty(block.covered, rate):  # joined across block edges
                lo, hi = lo + done / rate, hi + done / rate
                if gaps and abs(gaps[-1][1] - lo) < 0.5 / rate:
                    lo = gaps.pop()[0]
                gaps.append((lo, hi))
            done += len(block.covered)
        empty = np.zeros((0, stream.spec.channel_count))
        grids.append(Grid(stream.spec, rate, line.origin_ns, empty, gaps))
        peaks.append(peak)
    labels = edf_labels([g.spec for g in grids])
    signals: list[edf.Signal] = []
    for grid, names, peak_of in zip(grids, labels, peaks, strict=True):
        for c in range(grid.spec.channel_count):
            top = float(peak_of[c])
            signals.append(
                edf.Signal(
                    label=names[c],
                    transducer=_channel_label(grid.spec, c)[:80],
                    unit=grid.spec.units[c],
                    prefilter=resample.PREFILTER,
                    samples_per_record=round(grid.rate_hz),
                    peak=top if top > 0 else 1.0,
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
            blocks=_aligned_blocks(regular, line) if signals else iter(()),
            annotations=tals,
        )
    except edf.EdfWriteError as exc:
        raise ExportError(f"cannot write {path.name}: {exc}") from None
    return line, notes


GRID_WINDOW_S = 4
"""Seconds of grid computed at a time (every stream the same, so their blocks line up)."""


def grid_blocks(stream: StreamData, line: Timeline) -> Iterator[resample.GridBlock]:
    """A regular stream on the timeline's grid, `GRID_WINDOW_S` seconds at a time."""
    rate = stream.spec.nominal_rate_hz
    window = max(1, round(GRID_WINDOW_S * rate))
    n = round(line.seconds * rate)
    return resample.resample(stream.chunks(), stream.spec.channel_count, rate, line.origin_ns,
                             n, window=window)  # fmt: skip


def _aligned_blocks(
    streams: list[StreamData], line: Timeline
) -> Iterator[list[npt.NDArray[np.float64]]]:
    """The streams' grid blocks side by side (each the same seconds long)."""
    for blocks in zip(*(grid_blocks(s, line) for s in streams), strict=True):
        yield [b.values for b in blocks]


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


XDF_SAMPLES_PER_CHUNK = 4096
BOUNDARY = uuid.UUID("6a65f4a6-6de3-4e59-a96b-a0a7fbd1a0c9").bytes  # the specification's


def _numeric_samples(sid: int, t_s: npt.NDArray[np.float64], values: npt.NDArray[Any]) -> bytes:
    """A Samples chunk of double64 values: per sample a timestamp (8 bytes follow) and the
    channels, packed with numpy."""
    record = np.dtype([("size", "u1"), ("t", "<f8"), ("v", "<f8", (values.shape[1],))])
    packed = np.empty(len(t_s), dtype=record)
    packed["size"] = 8
    packed["t"] = t_s
    packed["v"] = values
    return _chunk(3, struct.pack("<I", sid) + _varlen(len(t_s)) + packed.tobytes())


def _string_samples(sid: int, t_s: list[float], texts: list[str]) -> bytes:
    body = bytearray(struct.pack("<I", sid)) + _varlen(len(t_s))
    for t, text in zip(t_s, texts, strict=True):
        raw = text.encode()
        body += b"\x08" + struct.pack("<d", t) + _varlen(len(raw)) + raw
    return _chunk(3, bytes(body))


def to_xdf(session: LoadedSession, path: Path) -> Path:
    """Write XDF 1.0: one stream per recorded stream, plus a string stream of every event;
    written to the file chunk by chunk as the streams are read."""
    session_id = session.meta["session_id"]
    # Stamps are session seconds (0 at the session's start); the file header says when that
    # was, as LabRecorder does (`datetime`, here to the microsecond, UTC), and `created_at` is
    # on the stamps' clock too: the stream's first stamp (when it existed at the latest).
    began = session.start.isoformat(timespec="microseconds")
    streams = list(session.streams.values())
    event_times = [e.t_ns / 1e9 for e in session.events]
    write_private(path, b"")  # owner-only before anything is in it
    with open(path, "wb") as f:
        f.write(b"XDF:")
        f.write(_chunk(1, _xml("info", {"version": "1.0", "datetime": began}).encode()))
        for sid, stream in enumerate(streams, start=1):
            spec = stream.spec
            span = stream.span_ns
            desc: dict[str, Any] = {
                "channels": {"channel": [{"label": c, "unit": u, "type": spec.type}
                                         for c, u in zip(spec.channels, spec.units, strict=True)]},
                "acquisition": {"manufacturer": "needlelab", "device": spec.device},
                "clock_model": stream.clock_model or {},
            }  # fmt: skip
            info = {
                "name": spec.name, "type": spec.type, "channel_count": spec.channel_count,
                "nominal_srate": spec.nominal_rate_hz if spec.kind is StreamKind.REGULAR else 0,
                "channel_format": "double64", "source_id": f"{session_id}:{spec.name}",
                "created_at": span[0] / 1e9 if span else 0.0, "desc": desc,
            }  # fmt: skip
            f.write(_chunk(2, struct.pack("<I", sid) + _xml("info", info).encode()))
        marker_id = len(streams) + 1
        marker_info = {
            "name": "needlelab events", "type": "Markers", "channel_count": 1, "nominal_srate": 0,
            "channel_format": "string", "source_id": f"{session_id}:events",
            "created_at": min(event_times, default=0.0),
            "desc": {"payload": "JSON: kind, source, id and the event's fields"},
        }  # fmt: skip
        f.write(_chunk(2, struct.pack("<I", marker_id) + _xml("info", marker_info).encode()))
        footers: list[tuple[int, float, float, int]] = []
        for sid, stream in enumerate(streams, start=1):
            first = last = 0.0
            count = 0
            for t_ns, values in stream.chunks():
                t_s = t_ns / 1e9
                for a in range(0, len(t_s), XDF_SAMPLES_PER_CHUNK):
                    b = a + XDF_SAMPLES_PER_CHUNK
                    f.write(_numeric_samples(sid, t_s[a:b], values[a:b]))
                if len(t_s):
                    first = float(t_s[0]) if not count else first
                    last = float(t_s[-1])
                    count += len(t_s)
            f.write(_chunk(5, BOUNDARY))
            footers.append((sid, first, last, count))
        texts = [event_json(e) for e in session.events]
        for a in range(0, len(texts), XDF_SAMPLES_PER_CHUNK):
            b = a + XDF_SAMPLES_PER_CHUNK
            f.write(_string_samples(marker_id, event_times[a:b], texts[a:b]))
        f.write(_chunk(5, BOUNDARY))
        footers.append((marker_id, event_times[0] if texts else 0.0,
                        event_times[-1] if texts else 0.0, len(texts)))  # fmt: skip
        for sid, first, last, count in footers:
            # Every stamp is already on the session clock: the offset is 0 throughout.
            f.write(_chunk(4, struct.pack("<Idd", sid, first, 0.0)))
            f.write(_chunk(4, struct.pack("<Idd", sid, last, 0.0)))
            footer = {
                "first_timestamp": first, "last_timestamp": last, "sample_count": count,
                "clock_offsets": {"offset": [{"time": first, "value": 0.0},
                                             {"time": last, "value": 0.0}]},
            }  # fmt: skip
            f.write(_chunk(6, struct.pack("<I", sid) + _xml("info", footer).encode()))
    return path


# -- CSV ------------------------------------------------------------------------------------------
CSV_ROWS = 4096
"""Signal rows formatted at a time (each value becomes a Python float and its text)."""


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
            dictionary.append((name, c, *describe(kind, c)))  # record/dictionary.py
    for stream in session.streams.values():
        spec = stream.spec
        name = f"signal_{spec.name.replace('.', '_')}.csv"
        write_private(folder / name, b"")
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(["t_s", *spec.channels])
            width = spec.channel_count
            for t_ns, values in stream.chunks(CSV_ROWS):  # a chunk at a time: memory stays flat
                # Numbers need no quoting: rows are joined directly (as csv.writer would, CRLF),
                # each value the shortest text that reads back to its exact double.
                cells = list(map(repr, np.asarray(values, dtype=np.float64).ravel().tolist()))
                f.write("".join(
                    f"{t / 1e9:.9f},{','.join(cells[k * width : (k + 1) * width])}\r\n"
                    for k, t in enumerate(t_ns.tolist())
                ))  # fmt: skip
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
    session = load_for_export(path)
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
