"""BLE sensor decoding: exact values, counter wraparound, malformed frames, fuzzing of the EMG and
caliper decoders and of frame numbering."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needlelab.devices.ble_sensor import decode_caliper
from needlelab.devices.emg_codecs import EmgDecoder, encode_ref_frames, unwrap
from needlelab.devices.frame_index import FrameIndexer
from needlelab.profiles import EmgFrame, load_emg_profile

REF = load_emg_profile("needlelab-emg-ref").frame
MYO = EmgFrame(format="myo-raw", channels=8, rate_hz=200, samples_per_frame=2)
ASCII = EmgFrame(format="ascii-value", channels=1, rate_hz=500)


def test_reference_frame_decodes_exactly() -> None:
    # Hand-built: seq 65535, t 4294967290 us, 10 samples x 8 channels of (sample*8 + ch) counts.
    counts = np.arange(80, dtype=np.int16).reshape(10, 8)
    payload = struct.pack("<HIBB", 65535, 4294967290, 10, 8) + counts.tobytes()
    assert len(payload) == 168
    batch = EmgDecoder(REF).decode([payload])
    assert batch.malformed == 0 and batch.good.tolist() == [0]
    assert batch.counter.tolist() == [65535] and batch.device_t_us.tolist() == [4294967290]
    assert np.array_equal(batch.values, counts.astype(np.float32) * 0.5)
    assert encode_ref_frames(REF, np.array([65535]), np.array([4294967290]), counts[None]) == [
        payload
    ]


def test_counter_and_clock_wraparound() -> None:
    assert unwrap(np.array([65534, 65535, 0, 1]), 16, None).tolist() == [65534, 65535, 65536, 65537]
    assert unwrap(np.array([2, 5]), 16, 65537).tolist() == [65538, 65541]  # 3 frames lost
    assert unwrap(np.array([10]), 32, 2**32 - 5).tolist() == [2**32 + 10]
    frames = encode_ref_frames(
        REF, np.arange(65530, 65545), np.arange(15) * 5000, np.zeros((15, 10, 8), np.int16)
    )
    batch = EmgDecoder(REF).decode(frames)
    assert unwrap(batch.counter, 16, None).tolist() == list(range(65530, 65545))


def test_malformed_frames_are_counted_and_dropped() -> None:
    good = encode_ref_frames(
        REF, np.array([1, 2]), np.array([0, 5000]), np.ones((2, 10, 8), np.int16)
    )
    wrong_header = bytearray(good[0])
    wrong_header[6] = 9  # says 9 samples in a 10-sample frame
    batch = EmgDecoder(REF).decode([good[0], b"", good[1][:-1], bytes(wrong_header), good[1]])
    assert batch.good.tolist() == [0, 4] and batch.malformed == 3
    assert batch.values.shape == (20, 8)


def test_myo_and_ascii_formats() -> None:
    raw = bytes(range(-8 & 0xFF, 256)) + bytes(range(8))  # 16 bytes
    batch = EmgDecoder(MYO).decode([raw[:16], b"short"])
    assert batch.values.shape == (2, 8) and batch.malformed == 1
    assert batch.values[0, 0] == -8.0
    batch = EmgDecoder(ASCII).decode([b"512.5", b"0.0", b"x1", b"\xff"])
    assert batch.values[:, 0].tolist() == [512.5, 0.0] and batch.malformed == 2


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_no_notification_bytes_make_a_decoder_raise(payloads: list[bytes]) -> None:
    for frame in (REF, MYO, ASCII):
        batch = EmgDecoder(frame).decode(payloads)
        assert len(batch.good) + batch.malformed == len(payloads)
        assert batch.values.shape[0] == len(batch.good) * frame.samples_per_frame


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_no_caliper_notification_bytes_make_its_decoder_raise(payloads: list[bytes]) -> None:
    for fmt in ("sylvac-simple", "needlelab-caliper"):
        good, readings, malformed = decode_caliper(fmt, 1e-4, payloads)
        assert len(good) + malformed == len(payloads) and readings.shape == (len(good), 2)
        assert np.isfinite(readings).all()


@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**9)), max_size=60),
    st.sampled_from([(1, False), (4, True), (1 << 16, False)]),
)
def test_frame_numbers_never_go_back_whatever_arrives(
    frames: list[tuple[int, int]], counter: tuple[int, bool]
) -> None:
    modulus, turns = counter
    raw = np.array([r for r, _ in frames], dtype=np.int64)
    t = np.cumsum([dt for _, dt in frames]).astype(np.int64)  # arrivals are in order
    out = FrameIndexer(10e6, modulus, turns).number(raw if modulus > 1 else None, t)
    assert len(out.frame) == len(frames) and (out.inferred_lost >= 0).all()
    assert (np.diff(out.frame) >= (1 if turns or modulus == 1 else 0)).all()


# Decode results pinned against bytes typed from the wire spec: drivers/README.md
# ("needlelab-emg-ref": seq u16, t_us u32, n u8, c u8, n x c int16 sample-major, little-endian;
# µV = count x 0.5) and myohw.h (Myo raw EMG: int8 emg[2][8] a notification). The batches of
# whole frames take the decoder's fast path; any wrong length or header takes it elsewhere.


def ref_bytes(seq: int, t_us: int, counts: list[int], n: int = 10, c: int = 8) -> bytes:
    """One reference frame, typed field by field from the spec table."""
    return struct.pack("<HIBB", seq, t_us, n, c) + struct.pack(f"<{len(counts)}h", *counts)


EXTREMES = [-32768, 32767, -1, 0, 1, -2, 1000, -1000]  # one sample's 8 channels


def ref_counts(first: int) -> list[int]:
    """10 samples x 8 channels: sample 0 the int16 extremes, then first + sample*8 + channel."""
    return EXTREMES + [first + k for k in range(8, 80)]


def test_whole_reference_batch_decodes_to_the_spec() -> None:
    # Frame 0 typed byte by byte: seq 65535, t_us 2^32 - 6, n 10, c 8, then its samples.
    frame0 = b"\xff\xff" + b"\xfa\xff\xff\xff" + b"\x0a\x08" + struct.pack("<80h", *ref_counts(0))
    assert frame0 == ref_bytes(65535, 2**32 - 6, ref_counts(0))
    batch = EmgDecoder(REF).decode(
        [frame0, ref_bytes(0, 4994, ref_counts(100)), ref_bytes(1, 9994, ref_counts(-5000))]
    )
    assert batch.malformed == 0 and batch.good.tolist() == [0, 1, 2]
    assert batch.counter.tolist() == [65535, 0, 1]
    assert batch.device_t_us.tolist() == [2**32 - 6, 4994, 9994]
    assert batch.good.dtype == np.intp
    assert batch.counter.dtype == batch.device_t_us.dtype == np.int64
    assert batch.values.dtype == np.float32 and batch.values.shape == (30, 8)
    # µV = count x 0.5, sample-major: row 10k + s is frame k's sample s.
    assert batch.values[0].tolist() == [-16384.0, 16383.5, -0.5, 0.0, 0.5, -1.0, 500.0, -500.0]
    assert batch.values[1].tolist() == [4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5]
    assert batch.values[19].tolist() == [(100 + 72 + ch) * 0.5 for ch in range(8)]
    assert batch.values[29, 7] == (-5000 + 79) * 0.5
    assert batch.values[10].tolist() == batch.values[20].tolist() == batch.values[0].tolist()


def test_reference_batch_with_wrong_lengths_and_headers_keeps_only_whole_frames() -> None:
    a = ref_bytes(7, 100, ref_counts(0))
    b = ref_bytes(8, 5100, ref_counts(200))
    payloads = [
        a,
        b"",
        a[:-1],  # one byte short
        a + b"\x00",  # one byte long
        a + a,  # two frames in one notification
        ref_bytes(9, 0, ref_counts(0), n=9),  # right length, says 9 samples
        ref_bytes(9, 0, ref_counts(0), c=7),  # right length, says 7 channels
        ref_bytes(9, 0, ref_counts(0), n=8, c=10),  # 80 samples either way, fields swapped
        ref_bytes(9, 0, ref_counts(0), n=0, c=0),
        b,
    ]
    batch = EmgDecoder(REF).decode(payloads)
    assert batch.good.tolist() == [0, 9] and batch.malformed == 8
    assert batch.counter.tolist() == [7, 8] and batch.device_t_us.tolist() == [100, 5100]
    assert batch.good.dtype == np.intp and batch.counter.dtype == np.int64
    assert batch.values.shape == (20, 8) and batch.values.dtype == np.float32
    assert batch.values[0].tolist() == [-16384.0, 16383.5, -0.5, 0.0, 0.5, -1.0, 500.0, -500.0]
    assert batch.values[19].tolist() == [(200 + 72 + ch) * 0.5 for ch in range(8)]


def test_reference_batch_of_right_lengths_with_a_wrong_header_drops_that_frame() -> None:
    frames = [ref_bytes(s, 5000 * s, ref_counts(s)) for s in range(4)]
    frames[2] = ref_bytes(2, 10000, ref_counts(2), c=9)
    batch = EmgDecoder(REF).decode(frames)
    assert batch.good.tolist() == [0, 1, 3] and batch.malformed == 1
    assert batch.counter.tolist() == [0, 1, 3] and batch.device_t_us.tolist() == [0, 5000, 15000]
    assert batch.values[10:20, 0].tolist() == [-16384.0] + [(1 + 8 * s) * 0.5 for s in range(1, 10)]
    assert batch.values[20:30, 0].tolist() == [-16384.0] + [(3 + 8 * s) * 0.5 for s in range(1, 10)]


def test_lengths_that_add_up_to_whole_frames_are_still_malformed() -> None:
    a, b = ref_bytes(1, 0, ref_counts(0)), ref_bytes(2, 5000, ref_counts(0))
    # 167 + 169 bytes: two frames' worth in all, neither one a frame.
    batch = EmgDecoder(REF).decode([a[:-1], b + b"\x00"])
    assert batch.good.tolist() == [] and batch.malformed == 2
    assert batch.values.shape == (0, 8) and batch.counter.tolist() == []
    batch = EmgDecoder(REF).decode([a, b[:-1], b + b"\x00", a])
    assert batch.good.tolist() == [0, 3] and batch.counter.tolist() == [1, 1]
    myo = EmgDecoder(MYO).decode([bytes(15), bytes(17), bytes(range(16))])
    assert myo.good.tolist() == [2] and myo.malformed == 2
    assert myo.values.tolist() == [list(range(8)), list(range(8, 16))]


def test_myo_batches_decode_to_the_spec() -> None:
    # Two samples x 8 channels int8 a notification: bytes 0x80..0xff are -128..-1.
    n0 = bytes([0x80, 0x7F, 0xFF, 0x00, 0x01, 0xFE, 0x10, 0xF0]) + bytes(range(8, 16))
    n1 = bytes(range(0xF0, 0x100))
    whole = EmgDecoder(MYO).decode([n0, n1])
    assert whole.malformed == 0 and whole.good.tolist() == [0, 1]
    assert whole.values.dtype == np.float32 and whole.values.shape == (4, 8)
    assert whole.values.tolist() == [
        [-128, 127, -1, 0, 1, -2, 16, -16],
        list(range(8, 16)),
        list(range(-16, -8)),
        list(range(-8, 0)),
    ]
    assert whole.counter.tolist() == whole.device_t_us.tolist() == [-1, -1]
    assert whole.good.dtype == np.intp and whole.counter.dtype == np.int64
    mixed = EmgDecoder(MYO).decode([b"", n0, n0 + n1, n1[:-1], n1, n1 + b"\x00"])
    assert mixed.good.tolist() == [1, 4] and mixed.malformed == 4
    assert mixed.values.tolist() == whole.values.tolist()
    assert mixed.counter.tolist() == mixed.device_t_us.tolist() == [-1, -1]
    # Scaled in float32: µV = float32(count) x float32(scale).
    scaled = EmgDecoder(MYO.model_copy(update={"scale_uv": 0.1})).decode([n0])
    assert scaled.values.dtype == np.float32
    expected = np.array([[-128, 127, -1, 0, 1, -2, 16, -16], list(range(8, 16))], np.float32)
    assert scaled.values.tobytes() == (expected * np.float32(0.1)).tobytes()


def test_an_empty_batch_decodes_to_nothing() -> None:
    for frame in (REF, MYO):
        batch = EmgDecoder(frame).decode([])
        assert batch.malformed == 0 and batch.good.tolist() == [] and batch.counter.tolist() == []
        assert batch.values.shape == (0, 8) and batch.values.dtype == np.float32


def spec_decode(
    frame: EmgFrame, payloads: list[bytes]
) -> tuple[list[int], list[int], list[int], list[list[float]], int]:
    """The wire spec read one notification at a time with struct: (good, counter, t_us, µV rows,
    malformed), µV as float32(count) x float32(scale)."""
    n, c = frame.samples_per_frame, frame.channels
    scale = np.float32(frame.scale_uv)
    good, counter, t_us, rows = [], [], [], []
    for i, p in enumerate(payloads):
        if frame.format == "needlelab-ref":
            if len(p) != 8 + 2 * n * c:
                continue
            seq, t, pn, pc = struct.unpack_from("<HIBB", p)
            if (pn, pc) != (n, c):
                continue
            counts = struct.unpack_from(f"<{n * c}h", p, 8)
        else:
            if len(p) != 2 * c:
                continue
            seq = t = -1
            counts = struct.unpack(f"{2 * c}b", p)
        good.append(i)
        counter.append(seq)
        t_us.append(t)
        rows += [
            [float(np.float32(x) * scale) for x in counts[k : k + c]]
            for k in range(0, len(counts), c)
        ]
    return good, counter, t_us, rows, len(payloads) - len(good)


SCALED_REF = EmgFrame(
    format="needlelab-ref", channels=3, rate_hz=1000, samples_per_frame=2, scale_uv=0.195,
    counter_bits=16, device_clock_bits=32,
)  # fmt: skip


def whole_notifications(frame: EmgFrame) -> st.SearchStrategy[bytes]:
    """Notifications that are whole frames of `frame`'s format, typed from the spec."""
    n, c = frame.samples_per_frame, frame.channels
    if frame.format == "myo-raw":
        return st.binary(min_size=2 * c, max_size=2 * c)
    header = st.builds(
        lambda seq, t: struct.pack("<HIBB", seq, t, n, c),
        st.integers(0, 2**16 - 1),
        st.integers(0, 2**32 - 1),
    )
    # Any 2 n c bytes are n x c int16 counts.
    return st.builds(bytes.__add__, header, st.binary(min_size=2 * n * c, max_size=2 * n * c))


def damaged_notifications(frame: EmgFrame) -> st.SearchStrategy[bytes]:
    """Notifications that are not whole frames: a byte short or long, any bytes, or (for the
    reference format) a whole frame with its n or c byte overwritten (sometimes by the same
    value: then it is whole still, and the spec reading says so)."""
    whole = whole_notifications(frame)
    size = (
        2 * frame.channels
        if frame.format == "myo-raw"
        else 8 + 2 * frame.samples_per_frame * frame.channels
    )
    damaged = [
        whole.map(lambda p: p[:-1]),
        whole.map(lambda p: p + b"\x00"),
        st.binary(max_size=2 * size),
    ]
    if frame.format == "needlelab-ref":
        damaged.append(
            st.builds(
                lambda p, i, v: p[:i] + bytes([v]) + p[i + 1 :],
                whole,
                st.sampled_from([6, 7]),
                st.integers(0, 255),
            )
        )
    return st.one_of(damaged)


@pytest.mark.parametrize("frame", [REF, SCALED_REF, MYO], ids=["ref", "ref-0.195uV", "myo"])
@settings(deadline=None)  # cases: the profile (tests/conftest.py)
@given(data=st.data())
def test_decoders_agree_with_the_spec_read_notification_by_notification(
    frame: EmgFrame, data: st.DataObject
) -> None:
    whole = whole_notifications(frame)
    # Half the batches all whole frames (the fast path), half with damaged ones among them.
    if data.draw(st.booleans()):
        payloads = data.draw(st.lists(whole, max_size=30))
    else:
        payloads = data.draw(st.lists(st.one_of(whole, damaged_notifications(frame)), max_size=30))
    good, counter, t_us, rows, malformed = spec_decode(frame, payloads)
    batch = EmgDecoder(frame).decode(payloads)
    assert batch.good.tolist() == good and batch.malformed == malformed
    assert batch.counter.tolist() == counter and batch.device_t_us.tolist() == t_us
    assert batch.values.shape == (len(rows), frame.channels) and batch.values.dtype == np.float32
    assert batch.values.tolist() == rows
