"""Property-based fuzzing of the loaders: session configs, protocol templates, driver profiles
and session files with corrupted bytes. Nothing escapes but the documented error types
(`ConfigError` for configs, templates and profiles; `RecordingError` for session files).

Everyday runs take a few hundred cases per property; `pytest tests/reliability/test_fuzz.py
--hypothesis-profile=soak` takes 10,000 each.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from needlelab.clinic.protocol import parse_protocol
from needlelab.config import ConfigError, parse_config
from needlelab.profiles import CaliperProfile, EmgProfile, StimulatorProfile, load_profile
from needlelab.record import RecordingError, load, open_session, verify_report
from needlelab.session import Session

# The number of cases comes from the profile (tests/conftest.py): 300, or 10,000 with
# --hypothesis-profile=soak.
EVERYDAY = settings(suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["stim_serial", "emg_ble", "lsl_inlet", "tpd",
                                           "needling", "L3", "R", "pty", "needlelab-ref"]),
)  # fmt: skip
KEYS = st.sampled_from([
    "session", "devices", "patient_id", "kind", "name", "profile", "simulator", "faults",
    "localization", "regions", "region", "lsl", "enabled", "monitor", "protocol", "sites",
    "phases", "level", "side", "tpd", "lrj", "gatt", "frame", "service", "data", "format",
    "channels", "rate_hz", "framing", "x",
])  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=25,
)  # fmt: skip


@EVERYDAY
@given(st.dictionaries(KEYS, documents, max_size=6))
def test_a_config_of_anything_is_loaded_or_refused_with_config_error(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert exc.lines and all("\n" not in line for line in exc.lines)


@EVERYDAY
@given(st.dictionaries(KEYS, documents, max_size=6))
def test_a_protocol_of_anything_is_loaded_or_refused(data: dict[str, Any]) -> None:
    try:
        parse_protocol(data)
    except ConfigError as exc:
        assert exc.lines


@EVERYDAY
@given(st.text(max_size=400), st.sampled_from([StimulatorProfile, EmgProfile, CaliperProfile]))
def test_a_profile_file_of_anything_is_loaded_or_refused(text: str, model: type) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_profile(path, model)
        except ConfigError as exc:
            assert exc.lines


@pytest.fixture(scope="module")
def good_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = parse_config(
        {"session": {"patient_id": "FUZZ01", "out_dir": str(tmp)},
         "devices": [{"kind": "stim_manual", "name": "tens"}]}
    )  # fmt: skip
    session = Session(config, tmp)
    session.start()
    manual = session.manual_stimulator()
    for k in range(20):
        manual.set(intensity_ma=float(k))
        session.mark(f"note {k}")
    session.stop()
    return session.path


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2**31), st.binary(min_size=1, max_size=16)),
                min_size=1, max_size=8))  # fmt: skip
def test_a_corrupted_session_file_reads_or_fails_with_recording_error(
    good_session: Path, damage: list[tuple[int, bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / good_session.name
        shutil.copy(good_session, path)
        data = bytearray(path.read_bytes())
        for offset, chunk in damage:
            at = offset % len(data)
            data[at : at + len(chunk)] = chunk
        path.write_bytes(bytes(data[: max(1, len(data))]))
        try:
            verify_report(path)
            with open_session(path) as s:
                for name in s.streams:
                    s.stream(name)
                s.events()
            load(path)
        except RecordingError:
            pass
        except sqlite3.DatabaseError as exc:  # pragma: no cover - the failure this test hunts
            raise AssertionError(f"sqlite error escaped: {exc}") from exc
