"""Back-pressure: the writer's backlog is bounded and measured, a slow disk warns, and at the
limit the recording stops like on a full disk, keeping everything it took.

The slow disk is the writer's documented fault seam (`SlowDisk`: commits sleep inside their
transaction, as behind a slow fsync): a really slow disk needs root here (FUSE, device-mapper).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from needlelab.clock import SessionClock
from needlelab.config import parse_config
from needlelab.console import run_command
from needlelab.events import Event, MarkerEvent, WarningEvent
from needlelab.hub import EVENT_RESERVE_BYTES, BacklogLimits, Hub, RecordQueue
from needlelab.record import RecordingError, SessionMeta, SessionWriter, open_session, verify_report
from needlelab.record.writer import SlowDisk
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

EMG = StreamSpec(
    "emg.raw", "EMG", ("a", "b", "c", "d"), ("uV",) * 4, StreamKind.REGULAR, 1000.0,
    dtype="int16", device="emg",
)  # fmt: skip
BLOCK = np.zeros((10, 4), np.int16)  # 80 sample bytes


def writer_on(
    tmp_path: Path, limits: BacklogLimits, slow: SlowDisk | None
) -> tuple[Hub, SessionWriter]:
    clock = SessionClock()
    hub = Hub(clock, backlog_limits=limits)
    meta = SessionMeta(
        session_id="b", patient_id="B1", anchor_monotonic_ns=clock.anchor_monotonic_ns,
        anchor_wall_ns=clock.anchor_wall_ns, config_json="{}", software_version="t",
    )  # fmt: skip
    writer = SessionWriter(tmp_path / "B1.sqlite", hub, meta, slow_disk=slow)
    return hub, writer


def stored_indices(path: Path) -> list[int]:
    with open_session(path) as s:
        return [b.first_index for b in s.blocks(EMG.name)]


def warnings_in(path: Path) -> list[WarningEvent]:
    with open_session(path) as s:
        return [e for e in s.events("warning") if isinstance(e, WarningEvent)]


def test_the_queue_counts_items_bytes_and_time_until_they_are_committed() -> None:
    q = RecordQueue(BacklogLimits(warn_s=60, warn_bytes=10**9, limit_bytes=10**9))
    for n in (100, 200, 300):
        assert q.put(MarkerEvent(text=str(n)), n)
    time.sleep(0.05)
    b = q.backlog()
    assert (b.items, b.bytes, b.state, b.refused) == (3, 600, "ok", 0)
    assert b.seconds >= 0.05  # the oldest has waited at least that long
    taken = q.get_batch(0.0, 2)
    assert [e.text for e in taken if isinstance(e, MarkerEvent)] == ["100", "200"]
    # Taken is not written: still in memory, still waiting.
    assert (q.backlog().items, q.backlog().bytes) == (3, 600)
    q.release()
    assert (q.backlog().items, q.backlog().bytes) == (1, 300)
    assert q.backlog().peak_bytes == 600


def test_hub_counts_the_sample_bytes_it_holds() -> None:
    hub = Hub(SessionClock())
    hub.add_stream(EMG)
    for i in range(50):
        hub.push(Chunk(EMG.name, BLOCK, i, i * 10))
    b = hub.backlog_status()
    assert b.items == 51  # the stream header and the blocks
    assert 50 * BLOCK.nbytes <= b.bytes <= 50 * (BLOCK.nbytes + 1024)  # samples + their objects


def test_a_slow_disk_warns_before_memory_grows_then_clears_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Commits take 0.6 s for the first 1.5 s: the writer falls behind, says so (warning event:
    hub listeners see it, the file keeps it), catches up, says so, and every block is in the
    file."""
    limits = BacklogLimits(warn_s=0.3, warn_bytes=10**8, limit_bytes=2 * 10**8)
    hub, writer = writer_on(tmp_path, limits, SlowDisk(latency_s=0.6, for_s=1.5))
    seen: list[Event] = []
    hub.subscribe(seen.append)
    writer.start()
    hub.add_stream(EMG)
    pushed = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < 4.0:  # slow until ~2.1 s, caught up by ~2.5 s
            hub.push(Chunk(EMG.name, BLOCK, hub.clock.now_ns(), pushed * 10))
            pushed += 1
            time.sleep(0.005)
        assert hub.backlog_status().peak_seconds >= 0.3
    finally:
        writer.stop()
    assert writer.error is None
    live = [e for e in seen if isinstance(e, WarningEvent)]
    assert [(e.code, e.details["cleared"]) for e in live] == [
        ("writer.backlog", False),
        ("writer.backlog", True),
    ]
    slow, cleared = live
    assert "the disk is not keeping up" in slow.message and slow.details["seconds"] >= 0.3
    assert slow.details["bytes"] < limits.limit_bytes  # told long before the limit
    assert "caught up" in cleared.message
    assert [w.message for w in warnings_in(writer.path)] == [slow.message, cleared.message]
    assert stored_indices(writer.path) == [i * 10 for i in range(pushed)]  # nothing lost
    report = verify_report(writer.path)
    assert report["ok"] and report["closed_cleanly"]
    assert [w["code"] for w in report["warnings"]] == ["writer.backlog"] * 2


def test_at_the_limit_the_recording_stops_and_keeps_everything_it_took(tmp_path: Path) -> None:
    """A disk far slower than the data: the backlog reaches its limit, later data is refused
    (counted, never queued), the writer stops the recording with the full disk's kind of error,
    and the file closes cleanly with every block taken before the limit, unbroken."""
    limits = BacklogLimits(warn_s=60, warn_bytes=100_000, limit_bytes=200_000)
    hub, writer = writer_on(tmp_path, limits, SlowDisk(bytes_per_s=40_000))
    errors: list[RecordingError] = []
    writer.on_error = errors.append
    writer.start()
    hub.add_stream(EMG)
    pushed = 2000  # 2000 blocks of ~600 bytes each: far past the limit
    for i in range(pushed):
        hub.push(Chunk(EMG.name, BLOCK, i, i * 10))
    mid = hub.backlog_status()
    assert mid.state == "full" and mid.refused > 0
    assert mid.peak_bytes <= limits.limit_bytes + EVENT_RESERVE_BYTES  # bounded
    hub.emit(MarkerEvent(text="after the limit"))  # events still fit (the stop is one)
    writer.stop()
    (error,) = errors
    assert str(error).startswith("recording stopped: the disk could not keep up")
    assert str(writer.path) in str(error) and "--out" in str(error) and "\n" not in str(error)
    assert writer.error is error
    refused = hub.backlog_status().refused
    taken = pushed - refused
    assert 0 < taken < pushed
    assert stored_indices(writer.path) == [i * 10 for i in range(taken)]  # a clean prefix
    warnings = warnings_in(writer.path)
    assert [w.details["stopped"] for w in warnings] == [False, True]  # warned, then stopped
    report = verify_report(writer.path)
    assert report["ok"] and report["closed_cleanly"]
    with open_session(writer.path) as s:
        assert [e.text for e in s.events("marker") if isinstance(e, MarkerEvent)] == [
            "after the limit"
        ]


def test_a_session_stops_at_the_limit_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through a whole session (simulated stimulator, the env seam): `wait` returns at
    the limit and `error` is the one line `needlelab record` prints."""
    monkeypatch.setenv("NEEDLELAB_FAULT_SLOW_DISK", "3")  # every commit takes 3 s
    config = parse_config({
        "session": {"patient_id": "BL01", "out_dir": str(tmp_path)},
        "devices": [{"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
                     "poll_interval_ms": 20, "simulator": {"transport": "pty"}}],
    })  # fmt: skip
    session = Session(config)
    session.hub.record_queue.limits = BacklogLimits(warn_s=60, warn_bytes=5000, limit_bytes=8000)
    session.start()
    try:
        session.wait(20.0)
    finally:
        session.stop()
    assert session.error is not None and "the disk could not keep up" in session.error
    report = verify_report(session.path)
    assert report["ok"] and report["closed_cleanly"]
    stopped = [w for w in warnings_in(session.path) if w.details["stopped"]]
    assert len(stopped) == 1


def test_the_console_says_how_far_the_file_is_behind(tmp_path: Path) -> None:
    config = parse_config({"session": {"patient_id": "BL02", "out_dir": str(tmp_path)}})
    session = Session(config)
    reply, stop = run_command(session, "backlog")
    assert not stop and reply.startswith("writer keeping up: 0 items, 0 kB, the oldest 0.00 s old")


def test_a_bad_slow_disk_fault_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEEDLELAB_FAULT_SLOW_DISK", "fast")
    with pytest.raises(RecordingError, match="NEEDLELAB_FAULT_SLOW_DISK='fast'"):
        SlowDisk.from_env()
