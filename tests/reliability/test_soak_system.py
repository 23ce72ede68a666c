"""The whole-system soak's accounting (benchmarks/soak_system.py) on a 6 s run: simulators in
their own process, the recorder with the monitor offscreen and LSL on in another. Every sample
the simulators' own logs say they sent while the recorder listened is in the file, and a block
taken out of a copy of the file is found missing."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.benchscripts import load


@pytest.mark.timeout(180)
def test_every_sample_sent_is_in_the_file_and_a_missing_block_is_found(tmp_path: Path) -> None:
    pytest.importorskip("pyqtgraph")
    soak = load("soak_system")
    r = soak.run(0.1, 1.0, tmp_path, warmup_min_s=1.0)
    assert r["error"] is None and r["verified"]
    accounts = r["accounts"]
    assert set(accounts) == {"emg.emg", "caliper.distance", "stim.ch1", "stim.ch2"}
    for stream, a in accounts.items():
        assert a["declared_lost"] == 0, (stream, a)
        assert a["missing"] == 0 and a["misfit"] == 0, (stream, a)
    # 6 s at 2 kHz (less the connect): thousands of EMG samples; the stimulator is polled every
    # 100 ms per channel; the caliper sends 3 readings a press every 1.5 s.
    assert accounts["emg.emg"]["sent"] >= 6000
    assert accounts["stim.ch1"]["sent"] >= 20 and accounts["stim.ch2"]["sent"] >= 20
    assert accounts["caliper.distance"]["sent"] >= 3
    assert r["lsl_samples"] > 0 and r["lsl_error"] is None  # the outlet was read over loopback

    # The same logs against a copy of the file with one block of each stream taken out.
    copy = tmp_path / "copy.sqlite"
    shutil.copy(r["file"], copy)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        for stream in accounts:
            ids = [row[0] for row in conn.execute(
                "SELECT b.id FROM blocks b JOIN streams s ON s.id = b.stream_id "
                "WHERE s.name = ? ORDER BY b.id", (stream,))]  # fmt: skip
            conn.execute("DELETE FROM blocks WHERE id = ?", (ids[len(ids) // 2],))
        # And a gap the recorder declared, written as the writer writes an event.
        gap = {"stream": "emg.emg", "start_ns": 2_000_000_000, "end_ns": 2_500_000_000,
               "samples_lost": 10, "inferred": False, "reason": "link lost"}  # fmt: skip
        conn.execute(
            "INSERT INTO events (t_ns, kind, source, payload) VALUES (?, 'gap', 'test', ?)",
            (2_500_000_000, json.dumps(gap)),
        )
        conn.commit()
    truth = np.load(tmp_path / "truth.npz")
    damaged = soak.account(copy, truth, r["stop_ns"])
    assert damaged["emg.emg"]["missing"] == 10  # one notification of 10 samples
    assert damaged["emg.emg"]["declared_lost"] == 10
    assert damaged["emg.emg"]["gaps"] == ["2 s +0.5 s 10 lost link lost"]  # where and why
    for stream in accounts:
        assert damaged[stream]["unaccounted"] > 0, (stream, damaged[stream])
