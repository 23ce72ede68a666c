"""Gaps in two numbers, read back from a real session file: the time without data, and the
samples lost as counted, inferred or unknown, in `verify`, `info` and the report's scores.

The file holds what the issue saw: an EMG whose index jumps at two gaps, one counted by the
device's counter and one inferred by its driver, and a stimulator stream with a link loss whose
cost nobody knows. The expected numbers are those written into the file here, not derived from
the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from needlelab.clinic.scoring import score_session
from needlelab.clock import SessionClock
from needlelab.events import GapEvent
from needlelab.hub import Hub
from needlelab.record import (
    SessionMeta,
    SessionWriter,
    format_info,
    format_verify,
    info_report,
    session_file_name,
    verify_report,
)
from needlelab.streams import Chunk, StreamKind, StreamSpec

EMG = StreamSpec(
    "emg.emg", "EMG", ("a",), ("uV",), StreamKind.REGULAR, 1000.0, dtype="int16", device="emg"
)
STIM = StreamSpec("stim.ch1", "Stim", ("ma",), ("mA",), StreamKind.IRREGULAR, device="stim")
MS = 1_000_000


def write_file(tmp_path: Path) -> Path:
    clock = SessionClock()
    hub = Hub(clock)
    meta = SessionMeta(
        session_id="gaps",
        patient_id="GAP01",
        anchor_monotonic_ns=clock.anchor_monotonic_ns,
        anchor_wall_ns=clock.anchor_wall_ns,
        config_json='{"devices": []}',
        software_version="test",
    )
    path = tmp_path / session_file_name("GAP01", clock.anchor_wall_ns)
    writer = SessionWriter(path, hub, meta, commit_interval_s=0.05)
    writer.start()
    hub.add_stream(EMG)
    hub.add_stream(STIM)
    block = np.zeros((100, 1), np.int16)
    # 100 ms blocks from t = 1 s; a 500 ms outage counted (300 samples), one of 1 s inferred
    # (~800 samples), then data to t = 4 s: 1,500 samples recorded.
    starts = [(1000, 0), (1100, 100), (1700, 500), (1800, 600), (2900, 1500)]
    starts += [(3000 + 100 * k, 1600 + 100 * k) for k in range(11)]
    for t_ms, first in starts[:15]:
        hub.push(Chunk(EMG.name, block, t_ms * MS, first))
    hub.emit(GapEvent(stream=EMG.name, start_ns=1200 * MS, end_ns=1700 * MS, samples_lost=300))
    hub.emit(
        GapEvent(
            stream=EMG.name,
            start_ns=1900 * MS,
            end_ns=2900 * MS,
            samples_lost=800,
            inferred=True,
            confidence=0.9,
        )
    )
    for t_ms in (1000, 1500, 3500):
        hub.push(
            Chunk(STIM.name, np.zeros((1, 1), np.float32), t_ms * MS, 0, np.array([t_ms * MS]))
        )
    hub.emit(GapEvent(stream=STIM.name, start_ns=1500 * MS, end_ns=3500 * MS, reason="link lost"))
    writer.stop()
    return path


def test_verify_reports_time_without_data_and_losses_known_inferred_unknown(
    tmp_path: Path,
) -> None:
    path = write_file(tmp_path)
    report = verify_report(path)
    assert report["ok"] and report["closed_cleanly"]
    streams = {st["name"]: st for st in report["streams"]}
    emg, stim = streams["emg.emg"], streams["stim.ch1"]
    assert emg["time_without_data_s"] == 1.5 and emg["gaps"] == 2
    # Counted and inferred are never added together as "lost" (the "lost 2984").
    assert (emg["samples_lost_known"], emg["samples_lost_inferred"]) == (300, 800)
    assert emg["gaps_loss_unknown"] == 0
    assert stim["time_without_data_s"] == 2.0 and stim["gaps_loss_unknown"] == 1
    assert (stim["samples_lost_known"], stim["samples_lost_inferred"]) == (0, 0)
    # Coverage: the share of the time from the first block to the last (later than the close
    # in this hand-made file) not in a gap.
    assert abs(emg["coverage"] - (1 - 1.5 / (3.9 - 1.0))) < 1e-9
    text = format_verify(report)
    assert "300 known, ~800 inferred" in text and "0 known, 1 gap unknown" in text
    assert "1.200-1.700 s, 0.500 s without data; 300 samples lost (counted)" in text
    assert "~800 samples lost (inferred, confidence 0.90)" in text
    assert "2.000 s without data; samples lost unknown: link lost" in text


def test_info_and_the_report_use_both_numbers(tmp_path: Path) -> None:
    path = write_file(tmp_path)
    info = info_report(path)
    emg = next(st for st in info["streams"] if st["name"] == "emg.emg")
    assert (emg["samples_lost_known"], emg["samples_lost_inferred"]) == (300, 800)
    assert "2 gap(s): 1.500 s without data" in format_info(info)
    scores = score_session(path)
    quality = {q.name: q for q in scores.quality}
    q = quality["emg.emg"]
    assert (q.lost, q.lost_inferred, q.gaps, q.gaps_loss_unknown) == (300, 800, 2, 0)
    assert q.no_data_s == 1.5
    assert abs(q.lost_pct - 100 * 1100 / (1500 + 1100)) < 1e-9  # of what the device made
    assert quality["stim.ch1"].gaps_loss_unknown == 1
