"""The session store: one crash-safe SQLite file per session, its writer, reader and checks."""

from needlelab.record.export import ExportError, LoadedSession, export, load
from needlelab.record.reader import Block, SessionFile, UnknownEvent, open_session, sample_times
from needlelab.record.schema import NotASessionError, RecordingError
from needlelab.record.verify import format_info, format_verify, info_report, verify_report
from needlelab.record.writer import (
    SessionMeta,
    SessionWriter,
    ignore_sigxfsz,
    seal,
    session_file_name,
)

__all__ = [
    "Block",
    "ExportError",
    "LoadedSession",
    "NotASessionError",
    "RecordingError",
    "SessionFile",
    "SessionMeta",
    "SessionWriter",
    "UnknownEvent",
    "export",
    "format_info",
    "format_verify",
    "ignore_sigxfsz",
    "info_report",
    "load",
    "open_session",
    "sample_times",
    "seal",
    "session_file_name",
    "verify_report",
]
