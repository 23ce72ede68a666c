"""Memory over a long session, run accelerated: does anything grow with session length?

Load: a recording session (hub, writer with fsync'd commits, live ring buffers) fed as fast as
the writer takes it with what a 2 h clinical session delivers: reference EMG at 2 kHz x 8 ch in
10-sample notifications (the BLE driver's chunks, each a clock-model point), a stimulator
settings stream changing every 2 s, a caliper reading every 1.5 s and a clinician event every
5 s, all stamped on a simulated clock (--hours of session time). The process's resident memory
(VmRSS) is sampled every simulated 5 minutes; growth is the highest reading after the first
5 minutes (warm-up: rings and caches fill) minus the reading at 5 minutes. Afterwards the file
is checked: every sample pushed is in it, and it verifies.

Goal (P6): growth <= 50 MB over 2 h.

    python benchmarks/soak.py [--hours 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _results import Row, write_json
from needlelab.config import parse_config
from needlelab.events import MarkerEvent, StimSettings, StimSettingsEvent
from needlelab.record import open_session, verify_report
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

RATE = 2000
CHANNELS = 8
PER_NOTIFICATION = 10
BACKLOG = 2000  # items the writer may be behind before the feeder waits


def rss_mb() -> float:
    """This process's resident memory, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run(hours: float, folder: Path) -> dict[str, Any]:
    config = parse_config({"session": {"patient_id": "SOAK01", "out_dir": str(folder)}})
    session = Session(config, folder)
    session.start()
    hub = session.hub
    emg = StreamSpec("emg.emg", "EMG", tuple(f"EMG {c + 1}" for c in range(CHANNELS)),
                     ("uV",) * CHANNELS, StreamKind.REGULAR, RATE, device="emg")  # fmt: skip
    caliper = StreamSpec("caliper.distance", "Caliper", ("distance_mm", "button"), ("mm", "bool"),
                         StreamKind.IRREGULAR, dtype="float32", device="caliper")  # fmt: skip
    hub.add_stream(emg)
    hub.add_stream(caliper)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((RATE, CHANNELS)).astype(np.float32) * 30
    total = int(hours * 3600 * RATE / PER_NOTIFICATION)
    period_ns = PER_NOTIFICATION * 1e9 / RATE
    readings: list[tuple[float, float]] = []
    warm = None
    start = time.perf_counter()
    caliper_n = 0
    for k in range(total):
        t = round((k + 1) * period_ns)
        offset = (k * PER_NOTIFICATION) % RATE
        hub.push(
            Chunk("emg.emg", noise[offset : offset + PER_NOTIFICATION], t, k * PER_NOTIFICATION)
        )
        if k % 400 == 0:  # every 2 s
            settings = StimSettings(frequency_hz=2, pulse_width_us=250,
                                    intensity_ma=(k // 400) % 20, output_on=True)  # fmt: skip
            hub.emit(StimSettingsEvent(t_ns=t, settings=settings, source="stim"))
        if k % 300 == 0:  # every 1.5 s
            hub.push(Chunk("caliper.distance", np.array([[40.0, 1.0]], np.float32), t, caliper_n,
                           np.array([t], np.int64)))  # fmt: skip
            caliper_n += 1
        if k % 1000 == 0:  # every 5 s
            hub.emit(MarkerEvent(t_ns=t, text=f"note {k}", source="clinician"))
        if k % 60_000 == 0:  # every 5 simulated minutes
            rss = rss_mb()
            readings.append((t / 60e9, rss))
            if warm is None and t >= 5 * 60e9 - period_ns:
                warm = rss
        while hub.backlog() > BACKLOG:
            time.sleep(0.001)
    elapsed = time.perf_counter() - start
    readings.append((total * period_ns / 60e9, rss_mb()))
    closing = time.perf_counter()
    session.stop()  # the clock models are fitted here, from every block in the file
    close_s = time.perf_counter() - closing
    with open_session(session.path) as s:
        stored = sum(b.n for b in s.blocks("emg.emg"))
    ok = verify_report(session.path)["ok"]
    warm = warm if warm is not None else readings[0][1]
    after = [mb for minute, mb in readings if minute > 5]
    growth = (max(after) - warm) if after else 0.0
    print(f"{'minute':>8} {'RSS MB':>8}")
    for minute, mb in readings:
        print(f"{minute:>8.0f} {mb:>8.1f}")
    return {
        "growth_mb": growth, "elapsed_s": elapsed, "close_s": close_s, "stored": stored,
        "pushed": total * PER_NOTIFICATION, "verified": float(ok),
        "file_mb": session.path.stat().st_size / 1e6, "path": str(session.path),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="session time to simulate")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    print(f"soak: {args.hours:g} h of session time, EMG {CHANNELS} ch x {RATE} Hz in "
          f"{PER_NOTIFICATION}-sample notifications, stimulator, caliper, events")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        r = run(args.hours, Path(tmp))
    ok = r["growth_mb"] <= 50 and r["stored"] == r["pushed"] and r["verified"]
    print(
        f"memory growth after warm-up {r['growth_mb']:.1f} MB (goal <= 50 MB); "
        f"{int(r['stored'])} of {int(r['pushed'])} samples stored; file {r['file_mb']:.0f} MB, "
        f"{'verifies' if r['verified'] else 'does NOT verify'}; {r['elapsed_s']:.0f} s for "
        f"{args.hours:g} h ({args.hours * 3600 / r['elapsed_s']:.0f} x real time), closed in "
        f"{r['close_s']:.1f} s: {'met' if ok else 'NOT met'}"
    )
    write_json(
        args.json,
        [Row("P6", f"memory growth, {args.hours:g} h session accelerated", r["growth_mb"], "MB",
             "<= 50 MB, no sample dropped", bool(ok), better="lower")],
        hours=args.hours, **{k: v for k, v in r.items() if k != "path"},
    )  # fmt: skip


if __name__ == "__main__":
    main()
