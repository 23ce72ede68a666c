"""Privacy and safety checks: owner-only files and folders, no patient names, no path tricks in
ids, LSL never on without the loopback config."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

import needlelab.clinic.protocol as protocol_module
import needlelab.config as config_module
import needlelab.events as events_module
import needlelab.profiles as profiles_module
from needlelab.clinic.report import write_report
from needlelab.config import ConfigError, parse_config
from needlelab.record import ExportError, export
from needlelab.record.writer import session_file_name
from needlelab.session import Session

# (`address` alone is a BLE device's address, not a person's.)
NAME_LIKE = re.compile(
    r"(first|last|given|family|sur|full|patient|maiden)_?name|birth|dob|street|postal|home_?addr"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_recordings_exports_and_reports_are_owner_only_folders_included(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "new" / "folder"
    session = Session(parse_config({"session": {"patient_id": "SEC01", "out_dir": str(out)}}))
    session.start()
    session.mark("a note")
    session.stop()
    assert mode(session.path) == 0o600
    for folder in (out, out.parent, out.parent.parent):  # every folder it had to make
        assert mode(folder) == 0o700, folder
    exports = tmp_path / "x" / "y"
    for fmt in ("xdf", "csv"):
        written = export(session.path, fmt, exports / f"s.{fmt}")
        files = [written] if written.is_file() else list(written.iterdir())
        assert files and all(mode(f) == 0o600 for f in files), fmt
    assert mode(exports) == 0o700 and mode(exports.parent) == 0o700
    with pytest.raises(ExportError, match="no regular streams"):  # and nothing was written
        export(session.path, "fif", tmp_path / "z.fif")
    assert not (tmp_path / "z.fif").exists()
    assert mode(write_report(session.path, tmp_path / "r" / "s")) == 0o600
    assert mode(tmp_path / "r") == 0o700


def test_no_field_anywhere_holds_a_patient_name() -> None:
    fields: dict[str, str] = {}
    for module in (config_module, events_module, protocol_module, profiles_module):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                for name in obj.model_fields:
                    fields[f"{obj.__name__}.{name}"] = name
    assert len(fields) > 100  # the scan saw the models
    assert [f for f, name in fields.items() if NAME_LIKE.search(name)] == []
    from needlelab.record.writer import SessionMeta

    assert not [n for n in SessionMeta.model_fields if NAME_LIKE.search(n)]


@pytest.mark.parametrize(
    "patient_id", ["../evil", "a/b", "..", "x\\y", "name with spaces", "", "A" * 40, "é"]
)
def test_ids_that_could_escape_a_folder_are_refused(patient_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"session": {"patient_id": patient_id}})
    assert "session.patient_id" in info.value.lines[0]


def test_file_names_come_from_checked_ids_only(tmp_path: Path) -> None:
    name = session_file_name("P-01_x", 0)
    assert "/" not in name and name.startswith("P-01_x_") and name.endswith(".sqlite")
    session = Session(parse_config({"session": {"patient_id": "SEC02", "out_dir": str(tmp_path)}}))
    session.start()
    session.stop()
    for subject in ("../up", "a/b", "x y"):
        with pytest.raises(ExportError, match="letters and digits"):
            export(session.path, "edf", None, (tmp_path / "bids", subject, "1"))


def test_lsl_is_not_even_loaded_unless_enabled(tmp_path: Path) -> None:
    code = f"""
import sys
from needlelab.config import parse_config
from needlelab.session import Session
s = Session(parse_config({{"session": {{"patient_id": "SEC03", "out_dir": {str(tmp_path)!r}}}}}))
s.start(); s.mark("x"); s.stop()
print("pylsl" in sys.modules, s.lsl_enabled)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
