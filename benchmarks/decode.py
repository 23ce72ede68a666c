"""EMG decode speed: needlelab's vectorised decoder against a per-notification struct loop.

Load: reference-profile frames (8 ch × 10 samples int16 + header), decoded in batches of 200
notifications (one second at 2 kHz), as the driver does. The peer is the obvious code: a
`struct.unpack` per notification, samples scaled in Python.

    python benchmarks/decode.py [--seconds 600]
"""

from __future__ import annotations

import argparse
import struct
import time
from pathlib import Path

import numpy as np

from _results import Row, write_json
from needlelab.devices.emg_codecs import EmgDecoder, encode_ref_frames
from needlelab.profiles import load_emg_profile


def struct_loop(payloads: list[bytes], scale: float) -> list[list[float]]:
    fmt = "<HIBB" + "h" * 80
    out: list[list[float]] = []
    for p in payloads:
        fields = struct.unpack(fmt, p)
        samples = fields[4:]
        for i in range(10):
            out.append([v * scale for v in samples[i * 8 : (i + 1) * 8]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds of 2 kHz data")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    frame = load_emg_profile("needlelab-emg-ref").frame
    n = int(args.seconds * frame.rate_hz / frame.samples_per_frame)
    rng = np.random.default_rng(0)
    payloads = encode_ref_frames(
        frame,
        np.arange(n),
        np.arange(n) * 5000,
        rng.integers(-3000, 3000, (n, 10, 8)).astype(np.int16),
    )
    batches = [payloads[i : i + 200] for i in range(0, n, 200)]
    decoder = EmgDecoder(frame)
    start = time.perf_counter()
    total = sum(decoder.decode(b).values.shape[0] for b in batches)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    peer_total = sum(len(struct_loop(b, frame.scale_uv)) for b in batches)
    peer = time.perf_counter() - start
    assert total == peer_total == n * 10
    print(f"decode: needlelab-ref frames, {n} notifications ({args.seconds:g} s at 2 kHz x 8 ch)")
    print(f"{'decoder':<36} {'samples/s':>14} {'x real time':>12}")
    for name, seconds in (
        ("needlelab EmgDecoder (numpy batch)", ours),
        ("struct.unpack per notification", peer),
    ):
        print(f"{name:<36} {total / seconds:>14,.0f} {total / seconds / 2000:>12,.0f}")
    ratio = peer / ours
    print(f"ratio: {ratio:.1f}x; goal >= 10x: {'met' if ratio >= 10 else 'NOT met'}")
    write_json(
        args.json,
        [Row("P2", "EMG decode (reference frames)", total / ours, "samples/s", ">= 10 x peer",
             ratio >= 10, "per-notification struct.unpack loop", total / peer, ratio)],
        seconds=args.seconds,
    )  # fmt: skip


if __name__ == "__main__":
    main()
