"""EMG notification decoders: a batch of notifications → sample blocks, vectorised with numpy.

Each decoder turns a list of raw notifications into per-notification headers and one values
array; malformed notifications (wrong length, inconsistent header) are counted and dropped.
There is no per-sample Python loop: a batch is joined and viewed through a numpy dtype.
"""

from __future__ import annotations

from operator import countOf
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from needlelab.profiles import EmgFrame


class DecodedBatch(NamedTuple):
    """Decoded notifications: which of the input were good, their headers and their samples.

    `good` indexes the input list; `counter`/`device_t_us` are raw (wrapping) per notification,
    -1 where the format has none; `values` is (n_good * samples_per_frame, channels) in µV.
    A named tuple: made once a batch, twice as fast to make as a frozen dataclass.
    """

    good: npt.NDArray[np.intp]
    counter: npt.NDArray[np.int64]
    device_t_us: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]
    malformed: int


def ref_frame_dtype(frame: EmgFrame) -> np.dtype[np.void]:
    """The needlelab reference frame: seq u16, device µs u32, n u8, channels u8, n × C int16."""
    return np.dtype(
        [
            ("seq", "<u2"),
            ("t_us", "<u4"),
            ("n", "u1"),
            ("c", "u1"),
            ("data", "<i2", (frame.samples_per_frame, frame.channels)),
        ]
    )


def _ref_frame_view(frame: EmgFrame) -> np.dtype[np.void]:
    """`ref_frame_dtype`'s fields at the same offsets, and one more: "nc", the bytes n and C
    read as one little-endian u16 (n | C << 8)."""
    shape = (frame.samples_per_frame, frame.channels)
    return np.dtype(
        {
            "names": ["seq", "t_us", "n", "c", "data", "nc"],
            "formats": ["<u2", "<u4", "u1", "u1", ("<i2", shape), "<u2"],
            "offsets": [0, 2, 6, 7, 8, 6],
            "itemsize": 8 + 2 * frame.samples_per_frame * frame.channels,
        }
    )


def encode_ref_frames(
    frame: EmgFrame,
    seq: npt.NDArray[np.int64],
    t_us: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int16],
) -> list[bytes]:
    """Reference frames on the wire (for simulators and tests); counts is (frames, n, C)."""
    arr = np.zeros(len(seq), dtype=ref_frame_dtype(frame))
    arr["seq"] = seq % (1 << 16)
    arr["t_us"] = t_us % (1 << 32)
    arr["n"] = frame.samples_per_frame
    arr["c"] = frame.channels
    arr["data"] = counts
    raw = arr.tobytes()
    size = arr.dtype.itemsize
    return [raw[i * size : (i + 1) * size] for i in range(len(seq))]


def encode_frames(
    frame: EmgFrame,
    n_characteristics: int,
    seq: npt.NDArray[np.int64],
    t_us: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int16],
) -> list[tuple[int, bytes]]:
    """Notifications on the wire in `frame`'s format, each with the data characteristic it goes
    out on (for simulators and tests). counts is (frames, samples per frame, C) device counts.

    - needlelab-ref: `encode_ref_frames`, all on the first characteristic.
    - myo-raw: int8 (clipped), the characteristics taking turns by sequence number.
    - ascii-value: one decimal reading per notification (samples_per_frame is 1).
    """
    if frame.format == "needlelab-ref":
        return [(0, payload) for payload in encode_ref_frames(frame, seq, t_us, counts)]
    if frame.format == "myo-raw":
        raw = np.clip(counts, -128, 127).astype(np.int8)
        turn = seq % n_characteristics
        return [(int(turn[k]), raw[k].tobytes()) for k in range(len(seq))]
    return [(0, str(int(counts[k, 0, 0])).encode("ascii")) for k in range(len(seq))]


class EmgDecoder:
    """Decodes one profile's frame format."""

    def __init__(self, frame: EmgFrame) -> None:
        self.frame = frame
        self._format = frame.format
        self._channels = frame.channels
        # float32 so the scale is applied in float32, as float32 values * a Python float are.
        self._scale = np.float32(frame.scale_uv)
        self._scaled = frame.scale_uv != 1  # a Myo's counts are its values: x * 1 is x
        if frame.format == "needlelab-ref":
            self._dtype = _ref_frame_view(frame)
            self.size = self._dtype.itemsize
            # The header bytes n and C read as one little-endian u16 (to find the bad frames),
            # and each byte on its own (to tell that none is bad, see `decode`).
            self._header = frame.samples_per_frame | frame.channels << 8
            self._n_byte, self._c_byte = bytes([frame.samples_per_frame]), bytes([frame.channels])
        elif frame.format == "myo-raw":
            self.size = 2 * frame.channels  # 2 samples × channels, int8
            self._dtype = np.dtype((np.int8, (frame.channels,)))  # a sample: one int8 a channel
        else:
            self.size = 0  # ASCII values have no fixed size

    def decode(self, payloads: list[bytes]) -> DecodedBatch:
        """Decode a batch of notifications."""
        fmt = self._format
        if fmt == "ascii-value":
            return self._decode_ascii(payloads)
        n, size = len(payloads), self.size
        # Almost every batch is all whole frames: one C-level pass over the lengths tells so,
        # and then the batch is joined as it is, with no index to build or follow.
        if n and countOf(map(len, payloads), size) == n:
            good = np.arange(n, dtype=np.intp)
            joined = b"".join(payloads)
        else:
            lengths = np.fromiter(map(len, payloads), dtype=np.intp, count=n)
            good = np.flatnonzero(lengths == size)
            joined = b"".join([p for p in payloads if len(p) == size])
        if fmt == "myo-raw":
            none = np.empty(len(good), dtype=np.int64)
            none.fill(-1)
            # astype then an in-place multiply: faster than one multiply that casts int8 as it goes.
            values = np.frombuffer(joined, dtype=self._dtype).astype(np.float32)
            if self._scaled:
                values *= self._scale
            return DecodedBatch(good, none, none, values, n - len(good))
        arr = np.frombuffer(joined, dtype=self._dtype)
        # Every frame's n byte and C byte, sliced out of the joined bytes as byte strings: that
        # none is bad is two C-level compares, 4x faster than numpy's on a 200-frame batch.
        k = len(good)
        if joined[6::size] != self._n_byte * k or joined[7::size] != self._c_byte * k:
            ok = arr["nc"] == self._header
            arr, good = arr[ok], good[ok]
        values = arr["data"].astype(np.float32)
        if self._scaled:
            values *= self._scale
        return DecodedBatch(
            good,
            arr["seq"].astype(np.int64),
            arr["t_us"].astype(np.int64),
            values.reshape(-1, self._channels),
            n - len(good),
        )

    def _decode_ascii(self, payloads: list[bytes]) -> DecodedBatch:
        # One decimal number per notification (MyoWare shield): parse the batch with numpy.
        good_idx, numbers = [], []
        for i, p in enumerate(payloads):
            try:
                numbers.append(float(p.decode("ascii")))
                good_idx.append(i)
            except (UnicodeDecodeError, ValueError):
                continue
        good = np.array(good_idx, dtype=np.intp)
        values = (np.array(numbers, dtype=np.float32) * self.frame.scale_uv).reshape(-1, 1)
        none = np.full(len(good), -1, dtype=np.int64)
        return DecodedBatch(good, none, none, values, len(payloads) - len(good))


def runs_begun(bad: npt.NDArray[np.bool_], in_run: bool) -> int:
    """How many runs of True begin in `bad` (a batch in arrival order); `in_run` says the batch
    before ended inside one, which then continues here and is not counted again."""
    if not len(bad):
        return 0
    before = np.concatenate(([in_run], bad[:-1]))
    return int(np.count_nonzero(bad & ~before))


def repeats(counter: npt.NDArray[np.int64], last: int | None) -> npt.NDArray[np.bool_]:
    """Which frames carry the same raw counter as the frame just before them (`last`: the one
    before the batch): a frame sent again, not a new one."""
    before = np.concatenate(([-1 if last is None else last], counter[:-1]))
    return np.asarray(counter == before, dtype=np.bool_)


def unwrap(raw: npt.NDArray[np.int64], bits: int, last: int | None) -> npt.NDArray[np.int64]:
    """Unwrap a wrapping counter, continuing from the previous unwrapped value `last`.

    Links deliver in order, so every step is taken as forward: 65535 → 0 is +1, not −65535.
    """
    if len(raw) == 0:
        return raw
    modulus = 1 << bits
    if last is None:
        start, steps = int(raw[0]), np.diff(raw) % modulus
    else:
        start = last + int((raw[0] - last) % modulus)
        steps = np.diff(raw) % modulus
    return start + np.concatenate(([0], np.cumsum(steps))).astype(np.int64)
