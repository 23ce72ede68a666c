"""The session file's SQLite schema, and the errors every store operation may raise."""

from __future__ import annotations

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4E4C4142  # "NLAB": marks a SQLite file as a needlelab session

SCHEMA = """
CREATE TABLE session (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    session_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    anchor_monotonic_ns INTEGER NOT NULL,
    anchor_wall_ns INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    software_version TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    closed_t_ns INTEGER
);
CREATE TABLE streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    channels TEXT NOT NULL,
    units TEXT NOT NULL,
    dtype TEXT NOT NULL,
    nominal_rate_hz REAL NOT NULL,
    latency_ns INTEGER NOT NULL,
    device TEXT NOT NULL,
    clock_model TEXT
);
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    first_index INTEGER NOT NULL,
    n INTEGER NOT NULL,
    t_host_ns INTEGER NOT NULL,
    device_counter INTEGER,
    device_t_us INTEGER,
    t_ns BLOB,
    data BLOB NOT NULL
);
CREATE INDEX blocks_by_stream ON blocks (stream_id, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    t_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_by_kind ON events (kind, t_ns);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    t_ns INTEGER NOT NULL,
    commits INTEGER NOT NULL
);
CREATE TABLE writer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    commit_interval_ns INTEGER NOT NULL,
    checkpoint_interval_ns INTEGER
);
CREATE TABLE latency_floors (
    stream_id INTEGER PRIMARY KEY REFERENCES streams(id),
    floor TEXT NOT NULL
);
"""
"""The tables of a new file. `writer` (how often it committed, and folded its write-ahead log
into the file; NULL: only at SQLite's 1000 pages) and `latency_floors` (a regular stream whose
`latency_ns` is above its arrivals' typical floor, not their least: `StreamSpec.latency_floor`;
a stream not in it: "least") were added within schema version 1: tables older readers ignore,
and that files recorded before them lack (readers treat them as optional)."""


class RecordingError(Exception):
    """A session file could not be written or read; the message says what happened and what next."""


class NotASessionError(RecordingError):
    """The file exists but is not a readable needlelab session."""
