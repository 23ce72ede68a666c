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
        assert s.clock_models[EMG.name]["method"] == "slope-of-all-offset-on-floor"
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


# -- a file that stands alone ------------------------------------------------------------------

KILLED_WRITER = r"""
import os, signal, sys, time
from pathlib import Path
import numpy as np
from needlelab.clock import SessionClock
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter
from needlelab.streams import Chunk, StreamKind, StreamSpec

path, seconds, every = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
clock = SessionClock()
hub = Hub(clock)
meta = SessionMeta(session_id="k", patient_id="K1", anchor_monotonic_ns=clock.anchor_monotonic_ns,
                   anchor_wall_ns=clock.anchor_wall_ns, config_json="{}", software_version="t")
writer = SessionWriter(path, hub, meta, checkpoint_interval_s=every)
writer.start()
spec = StreamSpec("emg.raw", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, 1000.0,
                  dtype="int16", device="emg")
hub.add_stream(spec)
start, i = time.monotonic(), 0
while time.monotonic() - start < seconds:
    hub.push(Chunk(spec.name, np.full((10, 2), i, np.int16), clock.now_ns(), i * 10))
    i += 1
    time.sleep(0.01)
print(i, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_recording(folder: Path, seconds: float = 1.5, every_s: float = 0.3) -> tuple[Path, int]:
    """A recording whose writer process was SIGKILLed after `seconds`; (file, chunks pushed)."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "K1_killed.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(seconds), str(every_s)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr
    return path, int(done.stdout)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read_everything(path: Path) -> int:
    """verify, info and a full read, as a user would run them; the samples read."""
    verify_report(path)
    info_report(path)
    with open_session(path) as s:
        return sum(len(s.stream(name)[0]) for name in s.streams)


@pytest.mark.parametrize("case", ["clean", "killed in place", "killed, copied with its log",
                                  "killed, copied alone"])  # fmt: skip
def test_reading_leaves_nothing_beside_the_file(tmp_path: Path, case: str) -> None:
    """verify, info and reads open read-only and create no -wal or -shm (SQLite makes both for
    a read-only open of a file in WAL mode, unless told otherwise)."""
    import shutil

    if case == "clean":
        hub, writer = make_writer(tmp_path)
        writer.start()
        hub.add_stream(EMG)
        hub.push(Chunk(EMG.name, np.zeros((10, 2), np.int16), 10_000_000, 0))
        writer.stop()
        path = writer.path
    else:
        path, _ = killed_recording(tmp_path / "rec")
        assert listing(path.parent) == [path.name, f"{path.name}-shm", f"{path.name}-wal"]
        in_place = read_everything(path)
        if case != "killed in place":
            copy = tmp_path / "copy"
            copy.mkdir()
            shutil.copyfile(path, copy / path.name)
            if case == "killed, copied with its log":
                shutil.copyfile(f"{path}-wal", copy / f"{path.name}-wal")
            path = copy / path.name
    before = listing(path.parent)
    samples = read_everything(path)
    assert listing(path.parent) == before
    assert samples > 0
    if case == "killed, copied with its log":
        assert samples == in_place  # the log beside it was read, not ignored


def test_verify_says_what_a_killed_file_copied_alone_lacks(tmp_path: Path) -> None:
    """Killed, and copied without its -wal: the file says it was not closed, its header is
    still in WAL mode and no log is beside it. verify names the missing log and bounds what it
    held by the recorder's checkpoint cadence, instead of "at most one commit interval"."""
    import shutil

    from needlelab.record import seal

    path, pushed = killed_recording(tmp_path / "rec", seconds=1.5, every_s=0.3)
    alone = tmp_path / "alone" / path.name
    alone.parent.mkdir()
    shutil.copyfile(path, alone)
    report = verify_report(alone)
    assert report["ok"] and not report["closed_cleanly"] and report["wal_missing"]
    assert report["checkpoint_interval_s"] == pytest.approx(0.3)
    text = format_verify(report)
    assert f"{path.name}-wal, its write-ahead log, is not beside it" in text
    assert "at most about 0.3 s of data" in text and "one commit interval" not in text
    assert 0 < report["streams"][0]["samples"] <= pushed * 10
    # In place, with its log: nothing is missing but the last commit interval.
    beside = verify_report(path)
    assert not beside["wal_missing"] and beside["wal_bytes"] > 0
    assert "one commit interval" in format_verify(beside)
    assert beside["streams"][0]["samples"] >= report["streams"][0]["samples"]
    # Sealed, the file alone holds every commit and leaves WAL mode: nothing is missing.
    assert seal(path)
    shutil.copyfile(path, alone)
    sealed = verify_report(alone)
    assert not sealed["wal_missing"] and not sealed["closed_cleanly"]
    assert sealed["streams"][0]["samples"] == beside["streams"][0]["samples"]
    assert "is not beside it" not in format_verify(sealed)


def test_a_copy_alone_from_an_older_recorder_says_how_much_is_unknown(tmp_path: Path) -> None:
    """Files recorded before the `writer` table: the cadence is not known, and verify says so."""
    import shutil

    path, _ = killed_recording(tmp_path / "rec")
    alone = tmp_path / "alone" / path.name
    alone.parent.mkdir()
    shutil.copyfile(path, alone)
    conn = sqlite3.connect(alone)  # as an older needlelab wrote it: no writer table
    conn.execute("DROP TABLE writer")
    conn.close()
    assert listing(alone.parent) == [path.name]  # still in WAL mode, alone
    report = verify_report(alone)
    assert report["wal_missing"] and report["checkpoint_interval_s"] is None
    assert "how much is unknown" in format_verify(report)


def test_verify_reports_damaged_blocks_and_fails(tmp_path: Path) -> None:
    """Block bytes damaged inside an intact SQLite file (integrity_check passes): the reader
    skips and counts them, and verify reports them as a problem, per stream (a non-zero exit)."""
    from needlelab.cli import main

    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(EMG)
    hub.add_stream(STIM)
    for i in range(10):
        hub.push(Chunk(EMG.name, np.zeros((10, 2), np.int16), (i + 1) * 10_000_000, i * 10))
        t = np.array([i], np.int64)
        hub.push(Chunk(STIM.name, np.array([[1.0]], np.float32), i, i, t))
    writer.stop()
    assert verify_report(writer.path)["ok"] and main(["verify", str(writer.path)]) == 0
    conn = sqlite3.connect(writer.path)
    emg_id, stim_id = (conn.execute("SELECT id FROM streams WHERE name = ?", (name,)).fetchone()[0]
                       for name in (EMG.name, STIM.name))  # fmt: skip
    # Two EMG blocks lose a byte of their samples; one stimulator block's times are cut short.
    conn.execute(
        "UPDATE blocks SET data = substr(data, 1, length(data) - 1) WHERE id IN "
        "(SELECT id FROM blocks WHERE stream_id = ? ORDER BY id LIMIT 2 OFFSET 3)",
        (emg_id,),
    )
    conn.execute(
        "UPDATE blocks SET t_ns = zeroblob(3) WHERE id = "
        "(SELECT max(id) FROM blocks WHERE stream_id = ?)",
        (stim_id,),
    )
    conn.commit()
    conn.close()
    report = verify_report(writer.path)
    assert report["integrity"] == "ok" and not report["ok"]
    assert report["damaged_blocks"] == 3
    by_name = {st["name"]: st["damaged_blocks"] for st in report["streams"]}
    assert by_name == {EMG.name: 2, STIM.name: 1}
    text = format_verify(report)
    assert "PROBLEMS" in text and "3 damaged block(s)" in text
    assert main(["verify", str(writer.path)]) != 0  # the damaged-file code (3 with the CLI's)


def test_new_files_have_pages_sized_to_the_data(tmp_path: Path) -> None:
    from needlelab.record.writer import PAGE_SIZE

    _hub, writer = make_writer(tmp_path)
    writer.start()
    writer.stop()
    conn = sqlite3.connect(f"{writer.path.resolve().as_uri()}?mode=ro", uri=True)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 4096
    conn.close()


def test_a_streams_latency_floor_is_kept_and_every_reader_uses_it(tmp_path: Path) -> None:
    """A stream declared to sit on its arrivals' typical floor (a simulated radio's link) is
    read back so, by the whole-stream reader and the block-by-block one alike: its times are
    the true ones plus the typical floor (the 10th percentile of 100 ms stretches' least
    latency), not plus a lucky block's latency."""
    from needlelab.record.chunked import StreamSource

    spec = StreamSpec(
        "emg.emg", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, 1000.0,
        dtype="int16", device="emg", latency_floor="typical",
    )  # fmt: skip
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(spec)
    rng = np.random.default_rng(5)
    n_blocks, per = 1000, 10  # 10 s at 1 kHz, 100 blocks a second
    true_last = 1e9 + (np.arange(n_blocks) * per + per - 1) * 1e6
    latency = 3e6 + rng.exponential(3e6, n_blocks)
    latency[[100, 700]] = 0.5e6  # two lucky blocks, 2.5 ms faster than any other
    arrival = np.maximum.accumulate(true_last + latency).astype(np.int64)
    for i in range(n_blocks):
        hub.push(Chunk(spec.name, np.zeros((per, 2), np.int16), int(arrival[i]), i * per))
    writer.stop()
    assert writer.error is None
    stretch = ((arrival - arrival[0]) // 100_000_000).astype(int)
    floors = [(arrival - true_last)[stretch == k].min() for k in np.unique(stretch)]
    typical = np.quantile(floors, 0.1)  # the 10th percentile of 100 ms stretches' least
    true_t = 1e9 + np.arange(n_blocks * per) * 1e6
    with open_session(writer.path) as s:
        assert s.streams[spec.name].latency_floor == "typical"
        t, _ = s.stream(spec.name)
    source = StreamSource(writer.path, spec.name)
    t_blocks = np.concatenate([t for t, _ in source.chunks(1000)])
    assert np.array_equal(t, t_blocks)
    assert np.percentile(np.abs(t - true_t - typical), 95) < 0.3e6


def test_every_block_is_stored_exactly_and_in_order_however_many_come_at_once(
    tmp_path: Path,
) -> None:
    """Blocks queued before the writer starts reach it in one batch (203 here: written in
    statements of several sizes), then more one by one: each is stored once, in the order
    pushed, with its values in the stream's dtype whatever their layout (another dtype, column
    order, no samples)."""
    hub, writer = make_writer(tmp_path)
    hub.add_stream(EMG)
    rng = np.random.default_rng(4)
    pushed: list[np.ndarray] = []

    def push(i: int) -> None:
        n = 0 if i % 50 == 7 else 10
        values = rng.integers(-2000, 2000, (n, 2)).astype(np.int16)
        if i % 3 == 1:
            values = np.asfortranarray(values)
        sent = values.astype(np.float64) if i % 5 == 2 else values  # stored as int16
        hub.push(Chunk(EMG.name, sent, t_host_ns=(i + 1) * 10_000_000, first_index=i * 10))
        pushed.append(values)

    for i in range(203):
        push(i)
    writer.start()
    for i in range(203, 260):
        push(i)
        if i % 20 == 0:
            time.sleep(0.06)  # past a commit
    writer.stop()
    assert writer.error is None and writer.dropped == 0
    with open_session(writer.path) as s:
        blocks = s.blocks(EMG.name)
        assert [b.first_index for b in blocks] == [i * 10 for i in range(260)]
        assert [b.t_host_ns for b in blocks] == [(i + 1) * 10_000_000 for i in range(260)]
        for block, values in zip(blocks, pushed, strict=True):
            assert block.values.dtype == np.int16 and np.array_equal(block.values, values)
        _, v = s.stream(EMG.name)
        assert np.array_equal(v, np.concatenate(pushed))
    conn = sqlite3.connect(writer.path)
    ids = [row[0] for row in conn.execute("SELECT id FROM blocks ORDER BY first_index, id")]
    conn.close()
    assert ids == sorted(ids) and len(set(ids)) == 260


@pytest.mark.parametrize("floor", ["least", "typical"])
def test_the_clock_model_of_a_short_session_is_the_fit_of_every_block(
    tmp_path: Path, floor: str
) -> None:
    """A session with fewer blocks than the live clock keeps (its model is fitted from them at
    the close): the stored model is the one fitted from every block's arrival, gaps and blocks
    without samples included, with the stream's latency floor."""
    spec = StreamSpec(
        "emg.floor", "EMG", ("a",), ("uV",), StreamKind.REGULAR, 1000.0,
        dtype="int16", device="emg", latency_ns=1_000_000, latency_floor=floor,
    )  # fmt: skip
    hub, writer = make_writer(tmp_path)
    writer.start()
    hub.add_stream(spec)
    rng = np.random.default_rng(6)
    full = StreamClock(spec.nominal_rate_hz, min_latency_ns=spec.latency_ns, floor=floor)
    x = 0
    for i in range(3000):
        n = 0 if i % 500 == 9 else 10
        # 1 kHz, a crystal 40 ppm fast, 1-9 ms of latency, a 2 s pause two thirds in
        t = round((x + 10) * 1e6 * (1 - 40e-6)) + int(rng.integers(1_000_000, 9_000_000))
        t += 2_000_000_000 if i >= 2000 else 0
        hub.push(Chunk(spec.name, np.zeros((n, 1), np.int16), t_host_ns=t, first_index=x))
        if n:
            full.add(x + n - 1, t)
        x += n
    writer.stop()
    assert writer.error is None and writer.dropped == 0
    full.fit()
    assert len(full.segments) == 2
    with open_session(writer.path) as s:
        stored = s.clock_models[spec.name]
    assert stored == {"method": "slope-of-all-offset-on-floor", **full.summary()}


FULL_DISK_WRITER = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from needlelab.clock import SessionClock
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter
from needlelab.record.writer import ignore_sigxfsz
from needlelab.streams import Chunk, StreamKind, StreamSpec

ignore_sigxfsz()
path = Path(sys.argv[1])
clock = SessionClock()
hub = Hub(clock)
meta = SessionMeta(session_id="f", patient_id="F1", anchor_monotonic_ns=clock.anchor_monotonic_ns,
                   anchor_wall_ns=clock.anchor_wall_ns, config_json="{}", software_version="t")
writer = SessionWriter(path, hub, meta, checkpoint_interval_s=None)
writer.start()
spec = StreamSpec("emg.raw", "EMG", ("a", "b"), ("uV", "uV"), StreamKind.REGULAR, 1000.0,
                  dtype="int16", device="emg")
hub.add_stream(spec)
for i in range(50):
    hub.push(Chunk(spec.name, np.full((100, 2), i, np.int16), (i + 1) * 10**8, i * 100))
while hub.backlog() or writer.commits < 2:
    time.sleep(0.01)
# The disk is full from now on: no file grows by more than a few pages.
limit = max(p.stat().st_size for p in path.parent.iterdir()) + 8192
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
for i in range(50, 2000):
    hub.push(Chunk(spec.name, np.full((100, 2), i, np.int16), (i + 1) * 10**8, i * 100))
    if i % 100 == 0:
        time.sleep(0.02)
writer.stop()
print(json.dumps({"dropped": writer.dropped, "failed": writer.error is not None}))
"""


def test_after_a_write_error_every_chunk_is_either_in_the_file_or_counted_dropped(
    tmp_path: Path,
) -> None:
    """The disk fills (a file-size limit, in a child) while chunks are written into an open
    transaction: the recording stops with an error, what was committed stays readable, and each
    of the 2,000 chunks pushed is either stored or counted in `dropped`, never both, never
    neither."""
    import json
    import subprocess
    import sys

    path = tmp_path / "F1_full.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["failed"] and out["dropped"] > 0
    with open_session(path) as s:
        blocks = s.blocks("emg.raw")
    stored = [b.first_index // 100 for b in blocks]
    assert stored == list(range(len(stored))) and len(stored) >= 50  # an unbroken stretch
    assert len(stored) + out["dropped"] == 2000
