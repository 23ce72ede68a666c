"""An EDF+ / BDF+ writer from the specifications, that streams data records to the file.

EDF+ (Kemp & Olivan 2003, edfplus.info) is a 256-byte header, 256 bytes per signal, then data
records of fixed length: every ordinary signal's samples for one record duration (16-bit
little-endian two's complement; BDF: 24-bit), and an `EDF Annotations` signal of Time-stamped
Annotation Lists (TALs: `+onset` [`\\x15duration`] `\\x14text\\x14` ... `\\x00`). What this
writer does beyond the minimum, and why:

- **Exact start**: the header's start time holds whole seconds; the first TAL of every record
  (its time keeping) holds the record's start after that second to 100 ns, so the first
  record's says the sub-second start (`+0.6612345`). Annotation onsets are written relative
  to the header's whole second, as the specification says, so readers subtract the fraction.
- **Whole annotations**: EDFlib (pyedflib) keeps 512 bytes of an annotation's text and drops
  the rest without a word, so a longer text is written as parts, each its own TAL at the same
  onset: `[part 1/3 of 17] ...`, `[part 2/3 of 17] ...` (17: the event id, or a running number);
  the parts joined in order, without their prefixes, are the text. Every text is in one TAL of
  its own (MNE merges equal texts of one TAL). The annotation signal is as long as the fullest
  record needs; a record that is full passes its TALs on to the next (readers take annotations
  from every record, by their onsets), so one busy second does not make every record large.
- **Annotation-only files**: with no ordinary signal the record duration is 0, as the
  specification asks, and the annotations are spread over as many records as they need.
- **No cut values**: physical ranges are written rounded outwards to the 8 characters the
  header has, and samples are scaled with the numbers as written, so the quantisation error
  is at most half a digital step and nothing clips.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

LABEL_CHARS = 16
ANNOTATION_TEXT_BYTES = 512
"""The most of an annotation's text EDFlib keeps (EDFLIB_MAX_ANNOTATION_LEN)."""
TIME_UNITS = 10_000_000
"""TAL times are written to 100 ns (EDFlib's time unit)."""
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class EdfWriteError(ValueError):
    """Something EDF+ cannot hold (a date outside 1985-2084, a field that does not fit)."""


@dataclass(frozen=True)
class Signal:
    """One ordinary signal: header fields and its physical range (symmetric, `-peak..peak`)."""

    label: str
    transducer: str
    unit: str
    prefilter: str
    samples_per_record: int
    peak: float


@dataclass(frozen=True)
class Annotation:
    """An annotation: onset in 100 ns units after the file's start (may be negative), text."""

    onset: int
    text: str
    key: str = ""  # names the parts of a long text ("" : a running number)


def ascii_field(text: str, width: int) -> bytes:
    """A header field: printable ASCII (anything else becomes '_'), left-aligned, space-padded,
    refused if longer than `width` (the caller shortens on purpose, never the writer)."""
    clean = "".join(c if " " <= c <= "~" else "_" for c in text)
    if len(clean) > width:
        raise EdfWriteError(f"EDF header field {text!r} is longer than {width} characters")
    return clean.ljust(width).encode("ascii")


def number_field(value: float, up: bool) -> str:
    """`value` as at most 8 characters, rounded up (`up`) or down so it bounds the true one."""
    for decimals in range(7, -1, -1):
        scale = 10**decimals
        rounded = (math.ceil if up else math.floor)(value * scale) / scale
        text = f"{rounded:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
        if len(text) <= 8:
            return text
    raise EdfWriteError(f"{value} does not fit the 8 characters of an EDF number field")


def onset_text(units: int) -> str:
    """A TAL time: sign, seconds, and up to 7 decimals (100 ns units), no trailing zeros."""
    sign = "-" if units < 0 else "+"
    whole, frac = divmod(abs(units), TIME_UNITS)
    return f"{sign}{whole}" + (f".{frac:07d}".rstrip("0") if frac else "")


def _clean_text(text: str) -> str:
    """A TAL text holds no NUL, 0x14 or 0x15 (its separators), and readers match texts with a
    regex whose '.' stops at a line break: control characters are written as `\\uXXXX`."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", text)


def text_parts(text: str, key: str) -> list[str]:
    """`text` as one TAL text, or as `[part k/n of key] ...` parts, each within
    `ANNOTATION_TEXT_BYTES` of UTF-8 (never splitting a character)."""
    text = _clean_text(text)
    if len(text.encode()) <= ANNOTATION_TEXT_BYTES:
        return [text]
    n = 2
    while True:
        prefix_bytes = len(f"[part {n}/{n} of {key}] ".encode())
        room = ANNOTATION_TEXT_BYTES - prefix_bytes
        pieces: list[str] = []
        current: list[str] = []
        size = 0
        for char in text:
            b = len(char.encode())
            if size + b > room:
                pieces.append("".join(current))
                current, size = [], 0
            current.append(char)
            size += b
        pieces.append("".join(current))
        if len(pieces) <= n:
            return [f"[part {k}/{len(pieces)} of {key}] {p}" for k, p in enumerate(pieces, 1)]
        n = len(pieces)


def tal(onset: int, text: str) -> bytes:
    """One TAL with one annotation."""
    return onset_text(onset).encode() + b"\x14" + text.encode() + b"\x14\x00"


def _timekeeping(onset: int) -> bytes:
    return onset_text(onset).encode() + b"\x14\x14\x00"


def pack_annotations(
    annotations: Sequence[Annotation],
    record_starts: Sequence[int],
    record_units: int,
) -> list[bytes]:
    """The annotation bytes of each record: its time-keeping TAL, then the TALs whose onsets
    fall in it (earlier ones too, in the first), up to a capacity chosen as the least that
    holds them all with what overflows passed on to the following records. Every record has
    the same length (padded with NULs; the last byte is always NUL)."""
    n = len(record_starts)
    keeping = [_timekeeping(s) for s in record_starts]
    items: list[tuple[int, bytes]] = []
    for k, a in enumerate(sorted(annotations, key=lambda a: a.onset)):
        for part in text_parts(a.text, a.key or str(k + 1)):
            items.append((a.onset, tal(a.onset, part)))
    if n == 0:
        return []
    # Which record each TAL belongs to by its onset (the last for those after the end).
    if record_units > 0:
        first = record_starts[0]
        home = [min(n - 1, max(0, (onset - first) // record_units)) for onset, _ in items]
    else:
        home = [0] * len(items)
    longest = max((len(t) for _, t in items), default=0)
    least = max(len(k) for k in keeping) + longest + 1
    total = sum(len(t) for _, t in items) + sum(len(k) for k in keeping)
    capacity = max(least, math.ceil(total / n) + 1)
    while True:
        out = _fill(keeping, items, home, capacity)
        if out is not None:
            return out
        capacity = math.ceil(capacity * 1.25)


def _fill(
    keeping: list[bytes], items: list[tuple[int, bytes]], home: list[int], capacity: int
) -> list[bytes] | None:
    """Records filled in order, TALs taken as soon as their home record is reached and while
    they fit (one NUL left at the end); None if some do not fit by the last record."""
    out: list[bytes] = []
    i = 0
    for r, head in enumerate(keeping):
        record = bytearray(head)
        while i < len(items) and home[i] <= r and len(record) + len(items[i][1]) < capacity:
            record += items[i][1]
            i += 1
        out.append(bytes(record))
    if i < len(items):
        return None
    return [r.ljust(capacity, b"\x00") for r in out]


def _header_date(start: dt.datetime) -> tuple[str, str, str]:
    if not 1985 <= start.year <= 2084:
        raise EdfWriteError(
            f"EDF+ holds start dates from 1985 to 2084; this recording starts {start.date()}"
        )
    return (
        start.strftime("%d.%m.%y"),
        start.strftime("%H.%M.%S"),
        f"{start.day:02d}-{MONTHS[start.month - 1]}-{start.year}",
    )


def write(
    path: Path,
    *,
    bdf: bool,
    start_wall_ns: int,
    patient_code: str,
    equipment: str,
    signals: Sequence[Signal],
    groups: Sequence[int],
    n_records: int,
    record_seconds: int,
    blocks: Iterable[list[npt.NDArray[np.float64]]],
    annotations: Sequence[Annotation],
) -> None:
    """Write an EDF+ (or BDF+) file: `signals` in `groups` (consecutive signals sharing one
    sample array: group g is `blocks`' element g, shape (samples, channels)); `blocks` yields,
    for some whole records at a time, each group's physical values in order. `start_wall_ns`
    is the wall time (ns since the epoch) of the first sample, a multiple of 100 ns; annotation
    onsets count from it. With no signals, `record_seconds` must be 0 (annotations only)."""
    if start_wall_ns % 100:
        raise ValueError("the start must be a multiple of 100 ns (EDF+ time keeping)")
    whole_ns = start_wall_ns - start_wall_ns % 1_000_000_000
    sub = (start_wall_ns - whole_ns) // 100  # 100 ns units after the header's second
    start = dt.datetime.fromtimestamp(whole_ns // 1_000_000_000, tz=dt.UTC)
    date, time_of_day, long_date = _header_date(start)
    record_units = record_seconds * TIME_UNITS
    if not signals:
        if record_seconds:
            raise ValueError("an annotation-only EDF+ has a record duration of 0")
        texts = sum(len(text_parts(a.text, "0")) for a in annotations)
        n_records = max(1, math.ceil(texts / 64))  # about 64 texts a record
    starts = [sub + k * record_units for k in range(n_records)]
    shifted = [Annotation(a.onset + sub, a.text, a.key) for a in annotations]
    notes = pack_annotations(shifted, starts, record_units)
    sample_bytes = 3 if bdf else 2
    digital = (-8_388_608, 8_388_607) if bdf else (-32768, 32767)
    fmt = "BDF" if bdf else "EDF"
    note_samples = len(notes[0]) // sample_bytes + (len(notes[0]) % sample_bytes > 0)
    note_bytes = note_samples * sample_bytes
    notes = [n.ljust(note_bytes, b"\x00") for n in notes]
    ns = len(signals) + 1
    ranges = [(number_field(-s.peak, up=False), number_field(s.peak, up=True)) for s in signals]
    head = bytearray()
    head += b"\xffBIOSEMI" if bdf else ascii_field("0", 8)
    head += ascii_field(f"{_subfield(patient_code)} X X X", 80)
    head += ascii_field(f"Startdate {long_date} X X {_subfield(equipment)}", 80)
    head += ascii_field(date, 8) + ascii_field(time_of_day, 8)
    head += ascii_field(str(256 * (ns + 1)), 8)
    head += ascii_field(f"{fmt}+C", 44)
    head += ascii_field(str(n_records), 8)
    head += ascii_field(str(record_seconds), 8)
    head += ascii_field(str(ns), 4)
    columns: list[tuple[list[str], int]] = [
        ([s.label for s in signals] + [f"{fmt} Annotations"], LABEL_CHARS),
        ([s.transducer for s in signals] + [""], 80),
        ([s.unit for s in signals] + [""], 8),
        ([lo for lo, _ in ranges] + ["-1"], 8),
        ([hi for _, hi in ranges] + ["1"], 8),
        ([str(digital[0])] * ns, 8),
        ([str(digital[1])] * ns, 8),
        ([s.prefilter for s in signals] + [""], 80),
        ([str(s.samples_per_record) for s in signals] + [str(note_samples)], 8),
        ([""] * ns, 32),
    ]
    for values, width in columns:
        for v in values:
            head += ascii_field(v, width)
    assert len(head) == 256 * (ns + 1)
    lows = np.array([float(lo) for lo, _ in ranges])
    highs = np.array([float(hi) for _, hi in ranges])
    gains = (digital[1] - digital[0]) / (highs - lows)
    with open(path, "wb") as f:
        f.write(head)
        if signals:
            _write_records(f, bdf, signals, groups, n_records, blocks, notes, lows, gains, digital)
        else:
            for record in notes:
                f.write(record)


def _subfield(text: str) -> str:
    """An EDF+ header subfield: no spaces (they separate subfields), 'X' when unknown."""
    clean = text.strip().replace(" ", "_")
    return clean or "X"


def _write_records(
    f: BinaryIO,
    bdf: bool,
    signals: Sequence[Signal],
    groups: Sequence[int],
    n_records: int,
    blocks: Iterable[list[npt.NDArray[np.float64]]],
    notes: list[bytes],
    lows: npt.NDArray[np.float64],
    gains: npt.NDArray[np.float64],
    digital: tuple[int, int],
) -> None:
    sample_bytes = 3 if bdf else 2
    spans: list[tuple[int, int]] = []  # each group's first signal and channel count
    first = 0
    for count in groups:
        spans.append((first, count))
        first += count
    record_bytes = sum(s.samples_per_record for s in signals) * sample_bytes + len(notes[0])
    written = 0
    for block in _whole_records(blocks, [signals[a].samples_per_record for a, _ in spans]):
        m = len(block[0]) // signals[spans[0][0]].samples_per_record
        out = np.zeros((m, record_bytes), dtype=np.uint8)
        at = 0
        for (a, count), values in zip(spans, block, strict=True):
            spr = signals[a].samples_per_record
            scaled = (values - lows[a : a + count]) * gains[a : a + count] + digital[0]
            codes = np.clip(np.rint(scaled), digital[0], digital[1]).astype("<i4")
            # (m records, spr samples, channels) -> per record, channel after channel
            codes = codes.reshape(m, spr, count).transpose(0, 2, 1)
            raw = codes.reshape(m, count * spr).view(np.uint8).reshape(m, count * spr, 4)
            width = count * spr * sample_bytes
            out[:, at : at + width] = raw[:, :, :sample_bytes].reshape(m, width)
            at += width
        out[:, at:] = np.frombuffer(b"".join(notes[written : written + m]), np.uint8).reshape(m, -1)
        f.write(out.tobytes())
        written += m
    if written != n_records:
        raise RuntimeError(f"EDF writer got {written} records, expected {n_records}")


def _whole_records(
    blocks: Iterable[list[npt.NDArray[np.float64]]], per_record: list[int]
) -> Iterator[list[npt.NDArray[np.float64]]]:
    """Blocks regrouped to whole records (a block may end inside a record)."""
    pending: list[list[npt.NDArray[np.float64]]] = [[] for _ in per_record]
    have = [0] * len(per_record)
    for block in blocks:
        for g, values in enumerate(block):
            pending[g].append(values)
            have[g] += len(values)
        m = min(h // spr for h, spr in zip(have, per_record, strict=True))
        if m == 0:
            continue
        out = []
        for g, spr in enumerate(per_record):
            joined = np.concatenate(pending[g]) if len(pending[g]) > 1 else pending[g][0]
            out.append(joined[: m * spr])
            pending[g] = [joined[m * spr :]]
            have[g] -= m * spr
        yield out
