"""EMG decode speed: needlelab's decoder against a plain numpy `frombuffer` decode of the same
frames, for the reference profile and for Thalmic Myo raw.

Load: each profile's notifications as its simulator sends them, decoded in batches of one second
of data (200 notifications at 2 kHz for the reference frames, 100 for the Myo's 200 Hz), as the
driver does. The peer is the strongest plain code for the same work: join the batch, one
`np.frombuffer` through a dtype typed here from the wire spec (not needlelab's), the same length
and header checks, scaled to float32 µV. needlelab also returns per-notification indices,
counters and device times.

    python benchmarks/decode.py [--seconds 600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from _results import Row, write_json
from needlelab.devices.emg_codecs import EmgDecoder, encode_frames
from needlelab.profiles import EmgFrame, load_emg_profile

GOAL = 0.9  # needlelab at least this fraction of the plain numpy decode's rate


def ref_peer(frame: EmgFrame) -> Callable[[list[bytes]], npt.NDArray[np.float32]]:
    """Reference frame per the profile's spec: seq u16, device µs u32, n u8, C u8, n × C int16."""
    n, c = frame.samples_per_frame, frame.channels
    dtype = np.dtype([("seq", "<u2"), ("t", "<u4"), ("n", "u1"), ("c", "u1"),
                      ("x", "<i2", (n, c))])  # fmt: skip
    scale = np.float32(frame.scale_uv)

    def decode(batch: list[bytes]) -> npt.NDArray[np.float32]:
        good = [p for p in batch if len(p) == dtype.itemsize]
        arr = np.frombuffer(b"".join(good), dtype=dtype)
        arr = arr[(arr["n"] == n) & (arr["c"] == c)]
        out: npt.NDArray[np.float32] = arr["x"].reshape(-1, c).astype(np.float32) * scale
        return out

    return decode


def myo_peer(frame: EmgFrame) -> Callable[[list[bytes]], npt.NDArray[np.float32]]:
    """Myo raw per myohw.h: 2 samples × 8 channels int8 a notification."""
    size, c = 2 * frame.channels, frame.channels
    scale = np.float32(frame.scale_uv)

    def decode(batch: list[bytes]) -> npt.NDArray[np.float32]:
        joined = b"".join(p for p in batch if len(p) == size)
        out: npt.NDArray[np.float32] = (
            np.frombuffer(joined, dtype=np.int8).reshape(-1, c).astype(np.float32) * scale
        )
        return out

    return decode


def best_of(repeats: int, *works: Callable[[], int]) -> list[tuple[float, int]]:
    """Each work's fastest of `repeats` runs (seconds) and the samples it decoded, the works
    taking turns so that a load change on a shared machine hits both alike."""
    best = [(float("inf"), 0)] * len(works)
    for _ in range(repeats):
        for k, work in enumerate(works):
            start = time.perf_counter()
            total = work()
            best[k] = (min(best[k][0], time.perf_counter() - start), total)
    return best


def measure(profile: str, seconds: float, repeats: int) -> tuple[EmgFrame, float, float, int]:
    """(frame, needlelab samples/s, peer samples/s, samples) for one profile."""
    frame = load_emg_profile(profile).frame
    n = int(seconds * frame.rate_hz / frame.samples_per_frame)
    rng = np.random.default_rng(0)
    counts = rng.integers(-3000, 3000, (n, frame.samples_per_frame, frame.channels))
    wire = encode_frames(frame, 4, np.arange(n), np.arange(n) * 5000, counts.astype(np.int16))
    payloads = [p for _, p in wire]
    per_batch = int(frame.rate_hz / frame.samples_per_frame)  # one second a batch
    batches = [payloads[i : i + per_batch] for i in range(0, n, per_batch)]
    decoder = EmgDecoder(frame)
    peer = (ref_peer if frame.format == "needlelab-ref" else myo_peer)(frame)
    # Same answer from both, checked once before timing.
    for b in batches[:3]:
        assert np.array_equal(decoder.decode(b).values, peer(b)), "decoders disagree"
    (ours, total), (theirs, peer_total) = best_of(
        repeats,
        lambda: sum(decoder.decode(b).values.shape[0] for b in batches),
        lambda: sum(peer(b).shape[0] for b in batches),
    )
    assert total == peer_total == n * frame.samples_per_frame
    return frame, total / ours, total / theirs, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds of data")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    print(f"decode: {args.seconds:g} s of data per profile, one-second batches, best of "
          f"{args.repeats}")  # fmt: skip
    print(f"{'profile':<20} {'needlelab samples/s':>20} {'numpy peer samples/s':>21} "
          f"{'ratio':>6}  goal >= {GOAL}x")  # fmt: skip
    rows = []
    for rid, profile, label in (
        ("P2", "needlelab-emg-ref", "reference frames, 8 ch x 2 kHz"),
        ("P2b", "thalmic-myo-raw", "Myo raw, 8 ch x 200 Hz int8"),
    ):
        _, ours, peer, _ = measure(profile, args.seconds, args.repeats)
        ratio = ours / peer
        met = ratio >= GOAL
        print(f"{profile:<20} {ours:>20,.0f} {peer:>21,.0f} {ratio:>6.2f}  "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
        rows.append(Row(
            rid, f"EMG decode, {label}", ours, "samples/s", f">= {GOAL} x peer", met,
            "numpy frombuffer of the same batches (spec dtype, same checks, float32 µV)", peer,
            ratio,
        ))  # fmt: skip
    write_json(args.json, rows, seconds=args.seconds)


if __name__ == "__main__":
    main()
