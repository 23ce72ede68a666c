"""`needlelab verify` and `needlelab info`: what a session file holds, and what a crash cost."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from needlelab.events import DataQualityEvent, DeviceInfoEvent, GapEvent, WarningEvent
from needlelab.record.chunked import StreamSource
from needlelab.record.reader import SessionFile, UnknownEvent, header_says_wal
from needlelab.record.schema import SCHEMA_VERSION, NotASessionError, RecordingError


def _iso(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _stream_summary(s: SessionFile, name: str) -> dict[str, Any]:
    spec = s.streams[name]
    row = s.execute(
        "SELECT count(*), coalesce(sum(n), 0), min(first_index), "
        "max(first_index + n) FROM blocks WHERE stream_id = (SELECT id FROM streams "
        "WHERE name = ?)",
        (name,),
    )[0]
    blocks, samples = row[0], row[1]
    index_gaps = []
    if blocks:
        # Blocks whose first index skips past the previous block's end: samples known lost.
        for prev_end, first in s.execute(
            "SELECT lag(first_index + n) OVER (ORDER BY id), first_index FROM blocks "
            "WHERE stream_id = (SELECT id FROM streams WHERE name = ?)",
            (name,),
        ):
            if prev_end is not None and first > prev_end:
                index_gaps.append({"after_index": prev_end, "missing": first - prev_end})
    # Block by block: the times alone, never the values (a 2 h EMG stream is gigabytes).
    source = StreamSource(s.path, name, opened=s)
    return {
        "name": name,
        "type": spec.type,
        "kind": spec.kind.value,
        "channels": list(spec.channels),
        "nominal_rate_hz": spec.nominal_rate_hz,
        "blocks": blocks,
        "samples": samples,
        "first_t_s": source.min_t_ns / 1e9 if source.min_t_ns is not None else None,
        "last_t_s": source.max_t_ns / 1e9 if source.max_t_ns is not None else None,
        "index_gaps": index_gaps,
        "samples_lost_known": sum(g["missing"] for g in index_gaps),
        "damaged_blocks": source.damaged,  # bytes that cannot be decoded
        "clock_model": s.clock_models.get(name),
    }


def quality_counts(s: SessionFile) -> list[dict[str, Any]]:
    """Each device's data-quality counts (malformed, duplicates, resyncs): its last
    `device.quality` event, cumulative; `as_of_t_s` is when that was (a device records one at
    its start and stop, and at most once a second when they change)."""
    last: dict[str, DataQualityEvent] = {}
    for e in s.events("device.quality"):
        if isinstance(e, DataQualityEvent):
            last[e.source] = e
    return [
        {"device": name, "malformed": e.malformed, "duplicates": e.duplicates,
         "resyncs": e.resyncs, "as_of_t_s": e.t_ns / 1e9}
        for name, e in last.items()
    ]  # fmt: skip


def gap_figures(
    s: SessionFile, name: str, gaps: list[GapEvent], end_ns: int | None
) -> dict[str, Any]:
    """A stream's gaps in two numbers: the time without data (their union, s) and the samples
    lost, counted by a device counter (`known`), inferred by its driver (`inferred`), or unknown
    (`gaps_loss_unknown`: gaps that cannot say, e.g. a stream without a counter across an
    outage); and `coverage`, the share of the time from its first block to the end of the
    recording (or its last block, if later) during which it was not in a gap (None before any
    block)."""
    first, last = s.execute(
        "SELECT min(t_host_ns), max(t_host_ns) FROM blocks WHERE stream_id = (SELECT id FROM "
        "streams WHERE name = ?)",
        (name,),
    )[0]
    mine = sorted((g for g in gaps if g.stream == name), key=lambda g: g.start_ns)
    without, reach = 0, first
    for g in mine:  # a union, so that overlapping gaps never count twice
        start = g.start_ns if reach is None else max(g.start_ns, reach)
        without += max(0, g.end_ns - start)
        reach = g.end_ns if reach is None else max(reach, g.end_ns)
    counted = [g for g in mine if g.samples_lost is not None]
    span = None if first is None else max(end_ns or last, last) - first
    return {
        "gaps": len(mine),
        "time_without_data_s": without / 1e9,
        "samples_lost_known": sum(g.samples_lost or 0 for g in counted if not g.inferred),
        "samples_lost_inferred": sum(g.samples_lost or 0 for g in counted if g.inferred),
        "gaps_loss_unknown": len(mine) - len(counted),
        "coverage": max(0.0, 1 - without / span) if span and span > 0 else None,
    }


def format_lost(st: dict[str, Any]) -> str:
    """'120 known, ~40 inferred, 1 gap unknown': a stream's samples lost, as far as known."""
    text = f"{st['samples_lost_known']} known"
    if st["samples_lost_inferred"]:
        text += f", ~{st['samples_lost_inferred']} inferred"
    if st["gaps_loss_unknown"]:
        n = st["gaps_loss_unknown"]
        text += f", {n} gap{'s' if n > 1 else ''} unknown"
    return text


def format_quality(quality: list[dict[str, Any]]) -> list[str]:
    """The data-quality lines of `verify` and `info`."""
    if not quality:
        return ["  data quality: no device recorded counts in this file"]
    lines = [
        "  data quality per device (cumulative):",
        f"  {'device':<16} {'malformed':>11} {'duplicates':>11} {'resyncs':>9} {'as of t (s)':>12}",
    ]
    lines += [
        f"  {q['device']:<16} {q['malformed']:>11} {q['duplicates']:>11} {q['resyncs']:>9} "
        f"{q['as_of_t_s']:>12.3f}"
        for q in quality
    ]
    return lines


def verify_report(path: str | Path) -> dict[str, Any]:
    """Integrity check and content summary of a session file (raises RecordingError if unreadable).

    `ok` is true when SQLite's integrity check passes and the schema is one this version reads. A
    file whose writer was killed is still ok: `closed_cleanly` is false and `last_commit_t_s` /
    `last_sample_t_s` say how far the data reach.
    """
    try:
        return _verify_report(Path(path))
    except (TypeError, ValueError, KeyError) as exc:
        # Header values damaged into the wrong types (a NULL time, text for a number).
        raise NotASessionError(f"{path}: damaged session file ({exc})") from None


def _verify_report(path: Path) -> dict[str, Any]:
    wal = Path(f"{path}-wal")
    wal_bytes = wal.stat().st_size if wal.is_file() else 0  # as found, before this open
    # Still in WAL mode with no log beside it: a killed recording copied (or left) alone.
    log_missing = header_says_wal(path) and not wal.exists()
    with SessionFile(path) as s:
        try:
            integrity = "; ".join(r[0] for r in s.execute("PRAGMA integrity_check"))
            streams = [_stream_summary(s, name) for name in s.streams]
            gaps = [e for e in s.events("gap") if isinstance(e, GapEvent)]
            heartbeat = s.execute("SELECT t_ns, commits FROM heartbeat")
            n_events = s.execute("SELECT count(*) FROM events")[0][0]
            quality = quality_counts(s)
            warnings = [e for e in s.events("warning") if isinstance(e, WarningEvent)]
        except sqlite3.DatabaseError as exc:
            raise NotASessionError(f"{path}: damaged session file ({exc})") from None
        problems = []
        if integrity != "ok":
            problems.append(f"integrity check: {integrity}")
        damaged = sum(st["damaged_blocks"] for st in streams)
        if damaged:
            where = ", ".join(
                f"{st['name']} {st['damaged_blocks']}" for st in streams if st["damaged_blocks"]
            )
            problems.append(
                f"{damaged} damaged block(s) whose bytes cannot be decoded ({where}): their "
                "samples are unreadable, every other block reads as usual"
            )
        checkpoint_ns = (s.writer_settings or {}).get("checkpoint_interval_ns")
        if s.meta["schema_version"] != SCHEMA_VERSION:
            problems.append(
                f"schema version {s.meta['schema_version']}; this needlelab reads {SCHEMA_VERSION}"
            )
        last_samples = [st["last_t_s"] for st in streams if st["last_t_s"] is not None]
        end_ns = s.meta["closed_t_ns"] if s.closed_cleanly else None
        if end_ns is None and heartbeat:
            end_ns = heartbeat[0][0]
        for st in streams:  # the index jumps stay in index_gaps; the losses are the gaps' word
            st.update(gap_figures(s, st["name"], gaps, end_ns))
        return {
            "file": str(path),
            "ok": not problems,
            "problems": problems,
            "integrity": integrity,
            "schema_version": s.meta["schema_version"],
            "session_id": s.meta["session_id"],
            "patient_id": s.meta["patient_id"],
            "started_utc": _iso(s.meta["anchor_wall_ns"]),
            "anchor_monotonic_ns": s.meta["anchor_monotonic_ns"],
            "closed_cleanly": s.closed_cleanly,
            "wal_bytes": wal_bytes,  # commits not yet folded into the file (needlelab seal)
            "wal_missing": log_missing and not s.closed_cleanly,  # and its latest commits with it
            "checkpoint_interval_s": checkpoint_ns / 1e9 if checkpoint_ns else None,
            "damaged_blocks": damaged,
            "closed_t_s": (s.meta["closed_t_ns"] / 1e9 if s.closed_cleanly else None),
            "commits": heartbeat[0][1] if heartbeat else 0,
            "last_commit_t_s": heartbeat[0][0] / 1e9 if heartbeat else None,
            "last_sample_t_s": max(last_samples) if last_samples else None,
            "events": n_events,
            "streams": streams,
            "quality": quality,
            "warnings": [
                {"t_s": w.t_ns / 1e9, "code": w.code, "message": w.message} for w in warnings
            ],
            "gaps": [
                {
                    "stream": g.stream,
                    "start_t_s": g.start_ns / 1e9,
                    "end_t_s": g.end_ns / 1e9,
                    "samples_lost": g.samples_lost,
                    "inferred": g.inferred,
                    "confidence": g.confidence,
                    "reason": g.reason,
                }
                for g in gaps
            ],
        }


def format_verify(r: dict[str, Any]) -> str:
    """Human text of a verify report."""
    lines = [f"{r['file']}: {'OK' if r['ok'] else 'PROBLEMS'} (integrity: {r['integrity']})"]
    lines += [f"  problem: {p}" for p in r["problems"]]
    if r["closed_cleanly"]:
        lines.append(f"  closed cleanly at t={r['closed_t_s']:.3f} s after {r['commits']} commits")
    else:
        last_sample = r["last_sample_t_s"]
        reach = f"t={r['last_commit_t_s']:.3f} s" + (
            f", the last sample at t={last_sample:.3f} s" if last_sample is not None else ""
        )
        if r.get("wal_missing"):
            name, every = Path(r["file"]).name, r.get("checkpoint_interval_s")
            bound = (
                f"at most about {every:g} s of data: its recorder folded the log into the file "
                f"every {every:g} s"
                if every
                else "how much is unknown: its recorder folded the log in only when it reached "
                "1000 pages, up to minutes of data"
            )
            lines.append(
                f"  NOT closed cleanly, and {name}-wal, its write-ahead log, is not beside it: "
                f"this file alone holds the commits folded into it (the last at {reach}); those "
                f"after were in {name}-wal and are missing here ({bound}). If you have "
                f"{name}-wal, put it beside this file and verify again"
            )
        else:
            lines.append(
                "  NOT closed cleanly (killed, crashed or stopped by a write error): the last "
                f"commit was at {reach}; anything after the last commit was lost (one commit "
                "interval, more if the disk was falling behind: see the warnings)"
            )
    if r.get("wal_bytes"):
        name = Path(r["file"]).name
        lines.append(
            f"  its latest commits are in {name}-wal ({r['wal_bytes'] / 1e3:.0f} kB) beside it: "
            f"copy both files together, or fold them in with `needlelab seal {r['file']}`"
        )
    lines.append(
        f"  {'stream':<24} {'kind':<9} {'samples':>9} {'first t (s)':>12} "
        f"{'last t (s)':>12} {'no data (s)':>11} {'coverage':>8}  samples lost"
    )
    for st in r["streams"]:
        first = f"{st['first_t_s']:.3f}" if st["first_t_s"] is not None else "-"
        last = f"{st['last_t_s']:.3f}" if st["last_t_s"] is not None else "-"
        cover = f"{100 * st['coverage']:.1f} %" if st["coverage"] is not None else "-"
        lines.append(
            f"  {st['name']:<24} {st['kind']:<9} {st['samples']:>9} {first:>12} "
            f"{last:>12} {st['time_without_data_s']:>11.3f} {cover:>8}  {format_lost(st)}"
        )
    lines += format_quality(r["quality"])
    lines += [
        f"  warning at t={w['t_s']:.3f} s ({w['code']}): {w['message']}" for w in r["warnings"]
    ]
    lines.append(f"  events: {r['events']}; gaps recorded: {len(r['gaps'])}")
    for g in r["gaps"]:
        lines.append(
            f"    gap {g['stream']}: {g['start_t_s']:.3f}-{g['end_t_s']:.3f} s, "
            f"{g['end_t_s'] - g['start_t_s']:.3f} s without data; {format_gap_loss(g)}"
            + (f": {g['reason']}" if g["reason"] else "")
        )
    return "\n".join(lines)


def format_gap_loss(g: dict[str, Any]) -> str:
    """One gap's samples lost: counted, inferred (with its confidence) or unknown."""
    if g["samples_lost"] is None:
        return "samples lost unknown"
    if not g.get("inferred"):
        return f"{g['samples_lost']} samples lost (counted)"
    sure = f", confidence {g['confidence']:.2f}" if g.get("confidence") is not None else ""
    return f"~{g['samples_lost']} samples lost (inferred{sure})"


def device_facts(events: list[Any]) -> dict[str, dict[str, Any]]:
    """Each device's facts from its `device.info` events: the last connect's (address,
    firmware, info...), how many connects, and its battery levels over time (percent)."""
    facts: dict[str, dict[str, Any]] = {}
    for e in events:
        if not isinstance(e, DeviceInfoEvent):
            continue
        entry = facts.setdefault(e.source, {"connects": 0, "battery_pct": []})
        if "profile" in e.info:  # a connect's full row; the others carry one changed fact
            entry["connects"] += 1
            entry.update({k: v for k, v in e.info.items() if k != "battery_pct"})
        if e.info.get("battery_pct") is not None:
            entry["battery_pct"].append(e.info["battery_pct"])
    return facts


def format_facts(facts: dict[str, Any]) -> str:
    """One line of a device's facts: address, firmware, serial, battery first → last."""
    parts = []
    if facts.get("address"):
        parts.append(f"address {facts['address']}")
    elif facts.get("port"):
        parts.append(f"port {facts['port']}")
    firmware = facts.get("firmware")
    if isinstance(firmware, dict) and firmware:
        values = list(firmware.values())
        extra = {k: v for k, v in firmware.items() if k not in ("major", "minor", "patch")}
        parts.append(
            "firmware "
            + ".".join(str(firmware.get(k, "?")) for k in ("major", "minor", "patch"))
            + "".join(f" {k} {v}" for k, v in extra.items())
            if "major" in firmware
            else "firmware " + " ".join(map(str, values))
        )
    info = facts.get("info")
    if isinstance(info, dict) and info.get("serial_number"):
        parts.append(f"serial {info['serial_number']}")
    battery = facts.get("battery_pct") or []
    if battery:
        span = f"{battery[0]:g}" + (f" → {battery[-1]:g}" if len(battery) > 1 else "")
        parts.append(f"battery {span} %")
    if facts.get("connects", 0) > 1:
        parts.append(f"{facts['connects']} connects")
    return ", ".join(parts) or "no facts"


def info_report(path: str | Path) -> dict[str, Any]:
    """A human-oriented summary: who, when, how long, which devices and events."""
    path = Path(path)
    with SessionFile(path) as s:
        try:
            kinds = Counter(e.kind for e in s.events())
            facts = device_facts(s.events("device.info"))
            changes = [e for e in s.events("stim.settings") if not isinstance(e, UnknownEvent)]
            counts = {
                name: s.execute(
                    "SELECT coalesce(sum(n), 0) FROM blocks WHERE stream_id = "
                    "(SELECT id FROM streams WHERE name = ?)",
                    (name,),
                )[0][0]
                for name in s.streams
            }
            heartbeat = s.execute("SELECT t_ns FROM heartbeat")
            quality = quality_counts(s)
            gaps = [e for e in s.events("gap") if isinstance(e, GapEvent)]
            end_t_ns = s.meta["closed_t_ns"] or (heartbeat[0][0] if heartbeat else None)
            gap_info = {name: gap_figures(s, name, gaps, end_t_ns) for name in s.streams}
        except sqlite3.DatabaseError as exc:
            raise NotASessionError(f"{path}: damaged session file ({exc})") from None
        end_ns = s.meta["closed_t_ns"] or (heartbeat[0][0] if heartbeat else 0)
        devices = [
            {
                "name": d.get("name"),
                "kind": d.get("kind"),
                "simulated": bool(d.get("simulator")),
                "profile": d.get("profile"),
            }
            for d in s.config.get("devices", [])
        ]
        return {
            "file": str(path),
            "size_bytes": path.stat().st_size,
            "session_id": s.meta["session_id"],
            "patient_id": s.meta["patient_id"],
            "started_utc": _iso(s.meta["anchor_wall_ns"]),
            "duration_s": end_ns / 1e9,
            "closed_cleanly": s.closed_cleanly,
            "software_version": s.meta["software_version"],
            "devices": devices,
            "streams": [
                {
                    "name": n,
                    "type": sp.type,
                    "kind": sp.kind.value,
                    "channels": len(sp.channels),
                    "nominal_rate_hz": sp.nominal_rate_hz,
                    "samples": counts[n],
                    **gap_info[n],
                }
                for n, sp in s.streams.items()
            ],
            "events_by_kind": dict(sorted(kinds.items())),
            "stim_changes": len(changes),
            "quality": quality,
            "device_facts": facts,
        }


def format_info(r: dict[str, Any]) -> str:
    """Human text of an info report."""
    lines = [
        f"{r['file']} ({r['size_bytes'] / 1e6:.2f} MB)",
        f"  session {r['session_id']}, patient {r['patient_id']}",
        f"  started {r['started_utc']}, {r['duration_s']:.1f} s, "
        + ("closed cleanly" if r["closed_cleanly"] else "NOT closed cleanly")
        + f", needlelab {r['software_version']}",
        "  devices: "
        + (
            ", ".join(
                f"{d['name']} ({d['kind']}{', ' + d['profile'] if d['profile'] else ''}"
                f"{', simulated' if d['simulated'] else ''})"
                for d in r["devices"]
            )
            or "none"
        ),
    ]
    for st in r["streams"]:
        rate = f"{st['nominal_rate_hz']:g} Hz" if st["nominal_rate_hz"] else "irregular"
        lines.append(
            f"  stream {st['name']}: {st['type']}, {st['channels']} ch, {rate}, "
            f"{st['samples']} samples"
        )
        if st["gaps"]:
            cover = f", coverage {100 * st['coverage']:.1f} %" if st["coverage"] is not None else ""
            lines.append(
                f"    {st['gaps']} gap(s): {st['time_without_data_s']:.3f} s without data"
                f"{cover}; samples lost: {format_lost(st)}"
            )
    lines.append(
        "  events: " + (", ".join(f"{k} {v}" for k, v in r["events_by_kind"].items()) or "none")
    )
    lines.append(f"  stimulator setting changes: {r['stim_changes']}")
    for name, facts in r.get("device_facts", {}).items():
        lines.append(f"  device {name}: {format_facts(facts)}")
    lines += format_quality(r["quality"])
    return "\n".join(lines)


__all__ = [
    "RecordingError",
    "device_facts",
    "format_facts",
    "format_info",
    "format_verify",
    "info_report",
    "verify_report",
]
