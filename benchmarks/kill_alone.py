"""SIGKILLed recordings copied without their write-ahead log: what the .sqlite alone holds.

Load: the demo's three devices (stimulator on a pty, reference EMG and caliper over BLE), each
served by its own simulator process (`needlelab sim session --truth`), read by `needlelab record`
which is SIGKILLed at a random 3-15 s; only the .sqlite is copied. Truth: the stimulator's
simulator logs every settings change it sent with its monotonic time. Loss vs truth = kill time
minus the send time of the first change the copy lacks (0: it lacks none); also the last sample
the copy holds (any stream) and how long before the kill that was. The same judging as
tests/reliability/test_file_alone.py (imported from there).

Goal (K2): every kill loses <= 5 s. `--recorder-src DIR` records with another needlelab's
sources (PYTHONPATH for the recorder only), e.g. an export of an older commit, for a before/after.

    python benchmarks/kill_alone.py [--kills 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests' helpers

from tests.reliability.test_fault_matrix import ServedDevices
from tests.reliability.test_file_alone import GOAL_S, judge, kill_recording

from _results import Row, write_json
from needlelab.record import open_session


def last_sample_s(path: Path) -> float | None:
    """The session time of the newest sample in any stream of the file, or None if it has none."""
    with open_session(path) as s:
        last = [s.stream(n)[0] for n in s.streams]
    ends = [float(t[-1]) / 1e9 for t in last if len(t)]
    return max(ends) if ends else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-s", type=float, default=3.0)
    parser.add_argument("--max-s", type=float, default=15.0)
    parser.add_argument("--recorder-src", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    env = None
    if args.recorder_src is not None:
        env = dict(os.environ, PYTHONPATH=str(args.recorder_src.resolve()))
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        served = ServedDevices(folder)
        try:
            config = served.write_config(folder / "served.toml")
            kills = [
                kill_recording(config, folder / f"run{k}", rng.uniform(args.min_s, args.max_s), env)
                for k in range(args.kills)
            ]
        finally:
            served.stop()
        truth = served.processes["stim"].truth()["stim"]
        for kill in kills:
            judged = judge(kill, truth)
            with open_session(kill.alone) as s:
                anchor = s.meta["anchor_monotonic_ns"]
            last = last_sample_s(kill.alone)
            behind = None if last is None else (kill.kill_ns - anchor) / 1e9 - last
            rows.append((judged, last, behind, kill.alone.stat().st_size))
    print(
        f"SIGKILL x {args.kills} at {args.min_s:g}-{args.max_s:g} s, the .sqlite copied alone; "
        f"demo devices, each in its own simulator process"
        + (f"; recorder from {args.recorder_src}" if args.recorder_src else "")
    )
    print(
        f"{'run':>3} {'kill at (s)':>11} {'copy (kB)':>9} {'last sample (s)':>15} "
        f"{'behind kill (s)':>15} {'changes sent':>12} {'loss vs truth (s)':>17}"
    )
    for k, (judged, last, behind, size) in enumerate(rows):
        last_text = "-" if last is None else f"{last:.2f}"
        behind_text = "-" if behind is None else f"{behind:.2f}"
        print(
            f"{k:>3} {judged['kill_s']:>11.2f} {size / 1e3:>9.0f} {last_text:>15} "
            f"{behind_text:>15} {judged['changes_sent']:>12.0f} {judged['loss_s']:>17.2f}"
        )
    losses = [r[0]["loss_s"] for r in rows]
    empty = sum(r[1] is None for r in rows)
    worst = max(losses)
    print(
        f"loss vs truth: median {np.median(losses):.2f} s, max {worst:.2f} s; copies with no "
        f"sample: {empty} of {len(rows)}; goal every kill <= {GOAL_S:g} s: "
        + ("met" if worst <= GOAL_S else "NOT met")
    )
    write_json(
        args.json,
        [Row("K2", ".sqlite copied alone after SIGKILL: loss vs truth (max of kills)", worst, "s",
             f"<= {GOAL_S:g} s", worst <= GOAL_S, better="lower")],
        kills=args.kills, losses=losses,
    )  # fmt: skip


if __name__ == "__main__":
    main()
