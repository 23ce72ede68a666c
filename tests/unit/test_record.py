"""The session store: round trip, permissions, live reading, damaged files."""

from __future__ import annotations

import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from needlelab.clock import SessionClock, StreamClock
from needlelab.events import GapEvent, MarkerEvent, StimSettings, StimSettingsEvent
from needlelab.hub import Hub
from needlelab.record import (
    NotASessionError,
    RecordingError,
    SessionMeta,
    SessionWriter,
    UnknownEvent,
    format_info,
    format_verify,
    info_report,
    open_session,
    session_file_name,
    verify_report,
)
from needlelab.streams import Chunk, StreamKind, StreamSpec

EMG = StreamSpec(
    "emg.raw",
    "EMG",
    ("L3", "R3"),
    ("uV", "uV"),
    StreamKind.REGULAR,
    1000.0,
    dtype="int16",
    device="emg",
)
STIM = StreamSpec("stim.ch1", "Stim", ("ma",), ("mA",), StreamKind.IRREGULAR, device="stim")


def make_writer(tmp_path: Path, interval_s: float = 0.05) -> tuple[Hub, SessionWriter]:
    clock = SessionClock()
    hub = Hub(clock)
    meta = SessionMeta(
        session_id="abc",
        patient_id="P7",
        anchor_monotonic_ns=clock.anchor_monotonic_ns,
        anchor_wall_ns=clock.anchor_wall_ns,
        config_json='{"devices": []}',
        software_version="test",
    )
    writer = SessionWriter(
        tmp_path / "rec" / session_file_name("P7", clock.anchor_wall_ns),
        hub,
        meta,
        commit_interval_s=interval_s,
    )
    return hub, writer


def test_round_trip_is_exact(tmp_path: Path) -> None:
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(EMG)
    hub.add_stream(STIM)
    rng = np.random.default_rng(0)
    blocks = [rng.integers(-2000, 2000, (50, 2), dtype=np.int16) for _ in range(20)]
    for i, block in enumerate(blocks):
        hub.push(
            Chunk(
                EMG.name,
                block,
                t_host_ns=(i + 1) * 50_000_000 + 3_000_000,
                first_index=i * 50,
                device_counter=i,
            )
        )
    stim_t = np.array([10, 20, 30], dtype=np.int64)
    hub.push(Chunk(STIM.name, np.array([[1.0], [2.5], [4.0]], np.float32), 31, 0, stim_t))
    settings = StimSettings(frequency_hz=2, pulse_width_us=250, intensity_ma=4, output_on=True)
    hub.emit(StimSettingsEvent(settings=settings, source="stim", t_ns=30))
    hub.emit(MarkerEvent(text="needle in", source="clinician"))
    writer.stop()
    assert writer.error is None and writer.dropped == 0
    with open_session(writer.path) as s:
        assert s.closed_cleanly
        assert s.meta["patient_id"] == "P7" and s.config == {"devices": []}
        assert s.streams[EMG.name] == EMG
        t, v = s.stream(EMG.name)
        assert v.dtype == np.int16 and np.array_equal(v, np.concatenate(blocks))
        assert len(t) == 1000 and np.all(np.diff(t) > 0)
        # Clock model: 1 kHz, arrivals 3 ms late: sample times land on the 1 ms grid.
        assert abs(np.median(np.diff(t)) - 1_000_000) < 1000
        raw = s.blocks(EMG.name)
        assert [b.device_counter for b in raw] == list(range(20))
        assert raw[3].t_host_ns == 4 * 50_000_000 + 3_000_000  # raw arrivals kept untouched
        t, v = s.stream(STIM.name)
        assert t.tolist() == [10, 20, 30] and v[:, 0].tolist() == [1.0, 2.5, 4.0]
        events = s.events()
        assert [e.kind for e in events] == ["stim.settings", "marker"]
        assert isinstance(events[0], StimSettingsEvent) and events[0].settings == settings
        assert s.events_frame()["kind"].tolist() == ["stim.settings", "marker"]
        assert s.clock_models[EMG.name]["method"] == "lower-envelope"
    # A finished recording is one file: reading it leaves nothing beside it.
    assert sorted(p.name for p in writer.path.parent.iterdir()) == [writer.path.name]


def test_clock_model_is_fitted_from_every_block_in_the_file(tmp_path: Path) -> None:
    """The live clock keeps only the latest arrivals (memory flat over hours); the model stored
    at the close is still the fit of every block, the same one the reader makes."""
    from needlelab.record.writer import LIVE_CLOCK_POINTS

    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(EMG)
    rng = np.random.default_rng(2)
    full = StreamClock(EMG.nominal_rate_hz)
    block = np.zeros((10, 2), np.int16)
    for i in range(3 * LIVE_CLOCK_POINTS):
        # 1 kHz, a crystal 80 ppm slow, 0-20 ms of one-sided latency
        t = round((i + 1) * 10e6 * (1 + 80e-6)) + int(rng.integers(0, 20_000_000))
        hub.push(Chunk(EMG.name, block, t_host_ns=t, first_index=i * 10))
        full.add(i * 10 + 9, t)
    writer.stop()
    assert writer.error is None and writer.dropped == 0
    full.fit()
    with open_session(writer.path) as s:
        stored = s.clock_models[EMG.name]
        t_read, _ = s.stream(EMG.name)
    assert stored["drift_ppm"] == pytest.approx(full.summary()["drift_ppm"], abs=1e-9)
    assert stored["drift_ppm"] == pytest.approx(-80, abs=5)
    assert stored["offset_ns"] == full.summary()["offset_ns"]
    assert np.array_equal(t_read, full.times(np.arange(3 * LIVE_CLOCK_POINTS * 10)))


def test_files_are_owner_only_and_names_carry_no_names(tmp_path: Path) -> None:
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.emit(MarkerEvent(text="x"))
    time.sleep(0.15)
    wal = Path(str(writer.path) + "-wal")
    assert wal.exists()
    for path in (writer.path, wal):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(writer.path.parent.stat().st_mode) == 0o700
    writer.stop()
    assert writer.path.name.startswith("P7_") and writer.path.name.endswith("Z.sqlite")
    for bad in ("../etc", "a/b", "Jane Doe", "", "x" * 40):
        with pytest.raises(RecordingError):
            session_file_name(bad, 0)


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    _hub, writer = make_writer(tmp_path)
    writer.path.parent.mkdir(parents=True)
    writer.path.write_text("precious")
    with pytest.raises(RecordingError, match="never overwritten"):
        writer.start()
    assert writer.path.read_text() == "precious"


def test_readers_see_data_within_a_commit_interval_while_recording(tmp_path: Path) -> None:
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(STIM)
    try:
        lags = []
        for i in range(10):
            hub.push(
                Chunk(STIM.name, np.array([[float(i)]], np.float32), i, i, np.array([i], np.int64))
            )
            pushed = time.monotonic()
            while True:
                with open_session(writer.path) as s:
                    if STIM.name in s.streams and len(s.stream(STIM.name)[0]) == i + 1:
                        break
                assert time.monotonic() - pushed < 1.0
                time.sleep(0.005)
            lags.append(time.monotonic() - pushed)
        assert max(lags) < 0.15
    finally:
        writer.stop()


def test_unknown_event_kinds_from_newer_versions_are_kept(tmp_path: Path) -> None:
    _hub, writer = make_writer(tmp_path)
    writer.start()
    writer.stop()
    conn = sqlite3.connect(writer.path)
    conn.execute(
        """INSERT INTO events VALUES (99, 5, 'tpd.trial', 'clinician', '{"distance_mm": 40}')"""
    )
    conn.commit()
    conn.close()
    with open_session(writer.path) as s:
        (event,) = s.events()
    assert isinstance(event, UnknownEvent) and event.payload == {"distance_mm": 40}


def test_verify_and_info_describe_the_file(tmp_path: Path) -> None:
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(EMG)
    hub.push(Chunk(EMG.name, np.zeros((10, 2), np.int16), 10_000_000, 0))
    hub.push(Chunk(EMG.name, np.zeros((10, 2), np.int16), 40_000_000, 30))  # 20 samples lost
    hub.emit(GapEvent(stream=EMG.name, start_ns=10_000_000, end_ns=40_000_000, samples_lost=20))
    writer.stop()
    report = verify_report(writer.path)
    assert report["ok"] and report["closed_cleanly"]
    (emg,) = report["streams"]
    assert emg["samples"] == 20 and emg["samples_lost_known"] == 20
    assert emg["index_gaps"] == [{"after_index": 10, "missing": 20}]
    assert len(report["gaps"]) == 1
    text = format_verify(report)
    assert "OK" in text and "emg.raw" in text and "gap emg.raw" in text
    info = info_report(writer.path)
    assert info["patient_id"] == "P7" and info["streams"][0]["samples"] == 20
    assert "patient P7" in format_info(info)


@pytest.mark.parametrize("damage", ["missing", "text", "truncated", "foreign", "folder"])
def test_damaged_or_foreign_files_give_one_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "x.sqlite"
    if damage == "text":
        path.write_text("this is not a database\n" * 100)
    elif damage == "truncated":
        hub, writer = make_writer(tmp_path)
        writer.start()
        hub.add_stream(EMG)
        for i in range(200):
            hub.push(Chunk(EMG.name, np.zeros((50, 2), np.int16), i, i * 50))
        writer.stop()
        data = writer.path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif damage == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
    elif damage == "folder":
        path.mkdir()
    with pytest.raises(RecordingError) as info:
        verify_report(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if damage in ("text", "foreign"):
        assert isinstance(info.value, NotASessionError)
