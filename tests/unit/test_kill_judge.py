"""benchmarks/kill.py's judge of a killed file, on a simulator log and readings typed here: a
unit's unsolicited `change` message is a reading the recorder stores, so a file that ends on one
is judged by it, not counted as ending on a reading nobody sent (which made K1 infinite)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.benchscripts import load


def entry(t_ns: int, message: str, frequency_hz: float, channel: int = 1) -> str:
    fields = {"channel": channel, "frequency_hz": frequency_hz, "pulse_width_us": 250.0,
              "intensity_ma": 12.5, "waveform": "biphasic", "mode": "continuous",
              "output_on": True}  # fmt: skip
    return json.dumps({"t_mono_ns": t_ns, "message": message, "fields": fields})


def test_a_file_ending_on_a_change_message_is_judged_by_it(tmp_path: Path) -> None:
    kill = load("kill")
    log = tmp_path / "sent.jsonl"
    log.write_text("\n".join([
        entry(1_000_000_000, "status", 2.0),
        entry(1_020_000_000, "status", 2.0),
        entry(1_030_000_000, "change", 5.0),  # the setting changed; no status for 60 ms
        entry(1_030_500_000, "change", 7.0, channel=2),  # another channel: not this stream's
        entry(1_090_000_000, "status", 5.0),
        entry(1_110_000_000, "status", 5.0),
    ]) + "\n")  # fmt: skip
    sent_ns, sent = kill.messages_sent(log, 0, 2_000_000_000)
    assert sent_ns.tolist() == [1_000_000_000, 1_020_000_000, 1_030_000_000, 1_090_000_000,
                                1_110_000_000]  # fmt: skip
    stored_ns = np.array([1_000_400_000, 1_020_400_000, 1_030_400_000], np.int64)
    stored = np.array([[2.0, 250.0, 12.5, 1.0], [2.0, 250.0, 12.5, 1.0], [5.0, 250.0, 12.5, 1.0]])
    loss = kill.judged(sent_ns, sent, stored_ns, stored, kill_ns=1_120_000_000)
    assert not loss.misfit
    assert loss.seconds == 0.09  # the kill at 1.12 s, the change sent at 1.03 s
    assert loss.messages == 2  # the two status replies after it
    assert loss.stored == 3
